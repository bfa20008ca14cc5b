"""One validated configuration for the whole product, with the seed's key names.

Every section is a strict pydantic model (``config_base.StrictModel``): an unknown or misspelled key
is an error that names the nearest valid key, an out-of-range value is an error that names the
allowed range. ``None`` or a partial nested dict means "defaults for the rest". The sections live
beside the code that reads them and this module composes them (the arrows point from here down to
the parts, never back up):

=============================  ==========================================================
``env``, ``reward``            ``av_td3.envs.config`` (every driving backend)
``carla``                      ``av_td3.envs.carla.config``
``networks``, ``algorithm``,   ``av_td3.agents.config`` (``training`` is also read by the
``training``                   agent: replay size, seed, buffer device, CUDA graphs)
``exploration``,               ``av_td3.training.config``
``evaluation``, ``logging``
``classical``                  ``av_td3.baselines.config``
=============================  ==========================================================

A part takes only its sections through its own view (``DrivingSections``, ``CarlaSections``,
``AgentConfig``, ``ClassicalSections``), given this ``Config``, a nested dict or None.

Typical use::

    cfg = load_config("configs/td3.yaml", overrides=["algorithm.batch_size=128"])
    cfg.algorithm.batch_size      # 128
    cfg.to_dict()                 # plain nested dict, e.g. to save in the run directory
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import Field, model_validator

from av_td3.agents.config import (
    AlgorithmConfig,
    CNNConfig,
    MLPConfig,
    NetworksConfig,
    TrainingConfig,
    check_batch_fits,
)
from av_td3.baselines.config import ClassicalConfig
from av_td3.config_base import ConfigError, Sections, StrictModel, validate_model
from av_td3.envs.carla.config import CarlaConfig
from av_td3.envs.config import EnvConfig, RewardConfig
from av_td3.training.config import EvaluationConfig, ExplorationConfig, LoggingConfig

__all__ = [
    "AlgorithmConfig", "CNNConfig", "CarlaConfig", "ClassicalConfig", "Config", "ConfigError", "EnvConfig",
    "EvaluationConfig", "ExplorationConfig", "LoggingConfig", "MLPConfig", "NetworksConfig", "RewardConfig",
    "StrictModel", "TrainingConfig", "load_config", "set_by_path", "validate_config",
]


class Config(Sections):
    """Every section of a config file (``config_base.SECTION_NAMES``, in file order)."""

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
        check_batch_fits(self.algorithm, self.training)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Loading, overrides and error wording
# --------------------------------------------------------------------------------------------------
def validate_config(raw: Mapping[str, Any]) -> Config:
    """Validate a nested dict; raise ``ConfigError`` with one line per problem."""
    return validate_model(Config, raw)


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
