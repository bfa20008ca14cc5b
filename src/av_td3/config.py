"""One validated configuration for the whole product, with the seed's key names.

Every section is a strict pydantic model: an unknown or misspelled key is an error that names the
nearest valid key, an out-of-range value is an error that names the allowed range. ``None`` or a
partial nested dict means "defaults for the rest". The sections live beside the code that reads them
(``envs/config.py`` for env and reward, ``envs/carla/config.py`` for CARLA); this module assembles them
and owns the learning and application sections.

Typical use::

    cfg = load_config("configs/td3.yaml", overrides=["algorithm.batch_size=128"])
    cfg.algorithm.batch_size      # 128
    cfg.to_dict()                 # plain nested dict, e.g. to save in the run directory
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from av_td3.baselines.config import ClassicalConfig
from av_td3.envs.carla.config import CarlaConfig
from av_td3.envs.config import EnvConfig, RewardConfig


class ConfigError(ValueError):
    """A configuration problem, worded for the user (what is wrong and how to fix it)."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------------
# Learning core (seed keys)
# --------------------------------------------------------------------------------------------------
class CNNConfig(StrictModel):
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Adam learning rate of the CNN encoder.")
    feature_dim: int = Field(512, ge=1, le=8192, description="NatureCNN output size.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="CNN compute precision (weights, optimizer and MLPs stay float32): bfloat16 autocast is "
        "~1.4x faster per update on CPUs with native bf16 (avx512_bf16/AMX) and on bf16 GPUs; auto = bfloat16 "
        "where native, else float32.",
    )


class MLPConfig(StrictModel):
    hidden_layers: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    learning_rate: float = Field(3e-4, gt=0, le=1)

    @model_validator(mode="after")
    def _positive_widths(self) -> "MLPConfig":
        if any(w < 1 for w in self.hidden_layers):
            raise ValueError(f"hidden_layers must be positive widths, got {self.hidden_layers}")
        return self


class NetworksConfig(StrictModel):
    cnn: CNNConfig = Field(default_factory=CNNConfig)
    actor: MLPConfig = Field(default_factory=MLPConfig)
    critic: MLPConfig = Field(default_factory=MLPConfig)


class AlgorithmConfig(StrictModel):
    name: Literal["td3", "ddpg"] = Field("td3", description="Which agent trains (`--algo`); configs/ddpg.yaml sets ddpg.")
    discount: float = Field(0.99, ge=0, le=1, description="gamma")
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the target networks.")
    policy_noise: float = Field(0.2, ge=0, description="Target policy smoothing noise std.")
    noise_clip: float = Field(0.5, ge=0)
    policy_freq: int = Field(2, ge=1, description="Critic updates per actor update.")
    batch_size: int = Field(256, ge=1)
    start_timesteps: int = Field(10_000, ge=0, description="Random-exploration steps before the policy acts.")
    expl_noise: float = Field(0.1, ge=0, description="Gaussian exploration noise std (fraction of max_action).")
    use_end_to_end_cnn: bool = Field(True, description="False: frozen CNN, flat states, plain buffer (rollback).")
    encoder_mode: Literal["critic", "separate"] = "critic"
    image_pad: int = Field(4, ge=0, le=32, description="Random-shift augmentation pad in pixels; 0 = off.")
    n_step: int = Field(3, ge=1, le=20, description="n-step TD returns.")
    max_grad_norm: float | None = Field(None, gt=0, description="Clip each network's grad norm; None = off.")
    action_smoothness: float = Field(
        0.0, ge=0, le=100, description="CAPS-style temporal smoothness: the actor loss becomes -mean Q / mean|Q| + this "
        "* mean ||pi(s) - pi(s')||^2 (s' = the buffer's next observation); 0 = plain TD3 actor loss.")


class TrainingConfig(StrictModel):
    buffer_size: int = Field(100_000, ge=1)
    max_timesteps: int = Field(30_000, ge=1)
    updates_per_step: float = Field(1.0, gt=0, le=16, description="Gradient updates per env step after start_timesteps.")
    eval_freq: int = Field(5_000, ge=0, description="Env steps between evaluations; 0 = only at the end.")
    checkpoint_freq: int = Field(10_000, ge=0, description="Env steps between checkpoints; 0 = only at the end.")
    seed: int = Field(0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    save_buffer: bool = Field(False, description="Also checkpoint the replay buffer (large) for exact resume.")
    num_envs: int = Field(1, ge=1, le=256, description="Parallel envs collecting experience (gymnasium vector API); "
                          "1 = one env in the training process.")
    vectorization: Literal["async", "sync"] = Field(
        "async", description="With num_envs > 1: async = one process per env (shared-memory images), sync = in turn.")
    buffer_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where replay storage lives: cuda keeps it in GPU memory and samples there (CUDA "
        "device only); auto = cuda when the device is CUDA and the buffer fits in free GPU memory, else cpu.")
    cuda_graph: bool = Field(True, description="On CUDA, capture the whole update (sampling, critic, actor, "
                             "targets) in CUDA graphs after warm-up; False = eager updates. No effect on CPU.")


class ExplorationConfig(StrictModel):
    """How actions are drawn before ``start_timesteps`` and how the Gaussian noise decays after it."""

    random_steer_std: float = Field(0.3, ge=0, le=1, description="Std of the random steer (clipped to +-1).")
    random_throttle_mean: float = Field(0.5, ge=-1, le=1, description="Mean of the random throttle_brake.")
    random_throttle_std: float = Field(0.3, ge=0, le=1)
    action_repeat: int = Field(4, ge=1, le=50, description="Hold each random action this many steps.")
    expl_noise_final: float | None = Field(None, ge=0, description="Linear decay target; None = constant.")
    expl_noise_decay_steps: int = Field(100_000, ge=1)


class EvaluationConfig(StrictModel):
    """Seeded evaluation episodes: during training on VALIDATION seeds (they choose ``checkpoints/best.pt``),
    afterwards (``av-td3 evaluate`` / ``compare`` / ``baseline``) on TEST seeds, so a policy picked on some
    episodes is judged on others."""

    num_episodes: int = Field(5, ge=1, description="Episodes of each evaluation during training.")
    seed: int = Field(10_000, ge=0, description="Test episodes (evaluate, compare, baseline) use seeds seed, seed+1, ...")
    validation_seed: int = Field(
        20_000, ge=0, description="Evaluations during training (which pick checkpoints/best.pt) use seeds "
        "validation_seed, validation_seed+1, ...; keep them clear of the test seeds.")
    video: bool = Field(False, description="Write a video of the final evaluation.")
    video_format: Literal["mp4", "gif"] = "mp4"

    @model_validator(mode="after")
    def _validation_clear_of_test(self) -> "EvaluationConfig":
        if self.seed <= self.validation_seed < self.seed + 1000 or self.validation_seed <= self.seed < self.validation_seed + self.num_episodes:
            raise ValueError(
                f"evaluation.validation_seed={self.validation_seed} overlaps the test episodes from evaluation.seed="
                f"{self.seed}: checkpoints chosen on them would be judged on the same episodes; keep the two at "
                "least 1000 apart (e.g. validation_seed: 20000, seed: 10000)")
        return self


class LoggingConfig(StrictModel):
    log_dir: str = "runs"
    run_name: str | None = None
    tensorboard: bool = True
    log_interval: int = Field(250, ge=1, description="Updates between logged training scalars.")
    debug_gradient_interval: int = Field(500, ge=1, description="With --debug: updates between CNN gradient tables.")
    progress_bar: bool = True


class Config(StrictModel):
    env: EnvConfig = Field(default_factory=EnvConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    carla: CarlaConfig = Field(default_factory=CarlaConfig)
    networks: NetworksConfig = Field(default_factory=NetworksConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    classical: ClassicalConfig = Field(default_factory=ClassicalConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if self.env.name == "carla" and self.env.traffic_mix is not None:
            raise ValueError("env.traffic_mix is supported by the town only; with env.name carla set env.scenario "
                             "(one density per run) and remove env.traffic_mix")
        if self.algorithm.batch_size > self.training.buffer_size:
            raise ValueError(
                f"algorithm.batch_size ({self.algorithm.batch_size}) is larger than training.buffer_size "
                f"({self.training.buffer_size}); allowed: batch_size <= buffer_size"
            )
        return self

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_any(cls, config: "Config | Mapping[str, Any] | None") -> "Config":
        """Accept a ``Config``, a (partial) nested dict, or None (all defaults)."""
        if isinstance(config, Config):
            return config
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(f"config must be a nested dict of sections (e.g. {{'algorithm': {{'batch_size': 128}}}}), "
                              f"a Config or None, got {type(config).__name__}")
        return validate_config(dict(config or {}))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Loading, overrides and error wording
# --------------------------------------------------------------------------------------------------
def validate_config(raw: Mapping[str, Any]) -> Config:
    """Validate a nested dict; raise ``ConfigError`` with one line per problem."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Load YAML (optional), apply ``key.sub=value`` overrides, validate.

    Override values are parsed as YAML, so ``algorithm.n_step=1``, ``env.route=random`` and
    ``networks.actor.hidden_layers=[64,64]`` all work.
    """
    raw: dict[str, Any] = _deep_copy(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (pass an existing YAML file, e.g. configs/td3.yaml)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as "
                              "UTF-8 YAML, e.g. configs/td3.yaml") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must contain a mapping of sections (env:, algorithm:, ...), got {type(loaded).__name__}")
        raw = _deep_merge(raw, loaded)
    for item in overrides:
        set_by_path(raw, item)
    return validate_config(raw)


def set_by_path(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key.sub=value, e.g. algorithm.batch_size=128")
    key, _, text = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _deep_merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the field path ``loc`` (for nearest-key suggestions)."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return model
    return model


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            valid = list(owner.model_fields) if owner is not None else []
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"did you mean '{'.'.join(str(p) for p in loc[:-1] + (near[0],))}'?" if near else ""
            section = ".".join(str(p) for p in loc[:-1]) or "top level"
            lines.append(f"unknown config key '{dotted}' {hint} (valid keys in {section}: {', '.join(valid)})".replace("  ", " "))
        else:
            msg = err["msg"]
            if "ctx" in err:
                bounds = _field_bounds(loc) or _bounds_text(err["ctx"])
                if bounds:
                    msg += f" (allowed: {bounds})"
            got = err.get("input")
            got_s = "" if isinstance(got, dict) else f", got {got!r}"
            lines.append(f"invalid value for '{dotted}': {msg}{got_s}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


_OPS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _bounds_text(limits: Mapping[str, Any]) -> str:
    return " and ".join(f"{op} {limits[k]}" for k, op in _OPS if limits.get(k) is not None)


def _field_bounds(loc: tuple) -> str:
    """Both bounds of a numeric field (``0 <= x <= 2``), not only the one the value broke."""
    owner = _model_at(loc[:-1]) if loc else None
    field = owner.model_fields.get(str(loc[-1])) if owner is not None else None
    if field is None:
        return ""
    limits = {k: getattr(m, k) for m in field.metadata for k, _ in _OPS if getattr(m, k, None) is not None}
    return _bounds_text(limits)
