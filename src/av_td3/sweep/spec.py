"""Sweep files: which trials a sweep runs, validated before anything starts.

A sweep file names a base config, seeds and a grid; every grid combination x every seed is one trial::

    base: td3.yaml                 # relative to this file
    seeds: [0, 1, 2, 3, 4]
    grid:                          # every combination x every seed = one trial
      algorithm.n_step: [1, 3]
    set: {training.max_timesteps: 20000}   # every trial (optional)
    resources: {cpu: 1, gpu: 0}    # per trial; gpu may be fractional (optional)
    max_failures: 1                # retries of a failed trial (optional, default 0)
    max_concurrent: 2              # trials at once (optional; --max-concurrent wins)
    carla_servers: [2000, 2003]    # CARLA only: one server per concurrent trial (optional)

Every trial's config is built and validated here (``load_config``), so a bad key or value in the sweep
is one clear error before Ray starts, never a failed trial later.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from av_td3.config import Config, ConfigError, load_config

#: Keys the sweep sets itself on every trial; a sweep file may not set them.
SWEEP_OWNED_KEYS = ("training.seed", "logging.log_dir", "logging.run_name")


class SweepError(ConfigError):
    """A problem with a sweep file or its command line, worded for the user (exit 2)."""


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(1.0, gt=0, description="CPU cores per trial (also its torch/OpenMP thread count).")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; fractions share one GPU (e.g. 0.25 = four trials).")


class SweepFile(BaseModel):
    """The YAML schema of a sweep file (strict: unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
    base: str = Field(description="Base config, relative to the sweep file.")
    seeds: list[int] = Field(min_length=1, description="training.seed of each trial of every setting.")
    grid: dict[str, list[Any]] = Field(description="config key -> values; the product of all is the settings.")
    set: dict[str, Any] = Field(default_factory=dict, description="config overrides for every trial")
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(0, ge=0, le=100, description="Times a failed trial is retried.")
    max_concurrent: int | None = Field(None, ge=1, description="Trials at once (default: as many as fit).")
    carla_servers: int | list[int | str] | None = Field(
        None, description="CARLA pool: a count (carla.port + i * carla.port_step) or a list of ports / host:port.")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
        return seeds

    @field_validator("grid")
    @classmethod
    def _grid_not_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("the grid is empty; give at least one key with values, e.g. algorithm.n_step: [1, 3]")
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values; give a non-empty list")
        return grid


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: a setting (grid point) with one seed."""

    name: str                      # run directory name, e.g. "n_step1_seed0"
    setting: str                   # e.g. "n_step1"
    seed: int
    params: dict[str, Any]         # the grid point, e.g. {"algorithm.n_step": 1}
    overrides: list[str]           # every "key=value" the trial applies on top of the base config

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "setting": self.setting, "seed": self.seed, "params": self.params,
                "overrides": self.overrides}


@dataclass
class Sweep:
    """A validated sweep: its file, base config, trials and per-trial resources."""

    path: Path
    name: str
    base: Path
    spec: SweepFile
    trials: list[Trial]
    settings: dict[str, dict[str, Any]]  # setting name -> grid point
    uses_carla: bool
    extra_sets: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        """What identifies the sweep's trials (compared on ``--resume``)."""
        return {"name": self.name, "base": str(self.base), "seeds": self.spec.seeds,
                "grid": self.spec.grid, "trials": [t.to_dict() for t in self.trials]}


# --------------------------------------------------------------------------------------------------
def load_sweep(path: str | Path, extra_sets: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read, validate and expand a sweep file; ``extra_sets`` (``--set k=v``) apply to every trial."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path} (pass an existing YAML file, e.g. configs/sweep_nstep.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path} must be a mapping with base:, seeds: and grid:, got {type(raw).__name__}")
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise SweepError(f"invalid sweep file {path}:\n  " + "\n  ".join(_describe(e) for e in exc.errors())) from None

    base = (path.parent / spec.base).resolve()
    if not base.is_file():
        raise SweepError(f"{path}: base config {spec.base!r} not found at {base} (base: is relative to the sweep file)")
    for key in [*spec.grid, *spec.set, *(s.partition("=")[0] for s in extra_sets)]:
        _check_key(key.strip(), path)
    for item in extra_sets:
        if "=" not in item:
            raise SweepError(f"--set {item!r} must look like key.sub=value, e.g. training.max_timesteps=2000")

    common = [f"{k}={_yaml_value(v)}" for k, v in spec.set.items()] + list(extra_sets)
    leaves = _short_names(list(spec.grid))
    trials, settings = [], {}
    for combo in itertools.product(*spec.grid.values()):
        params = dict(zip(spec.grid, combo))
        setting = "_".join(f"{leaves[k]}{_slug(v)}" for k, v in params.items())
        if setting in settings:
            raise SweepError(f"{path}: two grid points give the same setting name {setting!r}; make the values distinct")
        settings[setting] = params
        for seed in spec.seeds:
            overrides = [*common, *(f"{k}={_yaml_value(v)}" for k, v in params.items()), f"training.seed={seed}"]
            trials.append(Trial(f"{setting}_seed{seed}", setting, seed, params, overrides))

    uses_carla = False
    for trial in trials:  # every trial's full config is valid before anything runs
        try:
            cfg = load_config(base, trial.overrides)
        except ConfigError as exc:
            raise SweepError(f"{path}: trial {trial.name} has an invalid config: {exc}") from None
        uses_carla |= cfg.env.name == "carla"
    if spec.carla_servers is not None and not uses_carla:
        raise SweepError(f"{path}: carla_servers is set but no trial uses env.name: carla; remove it or set env.name")
    name = path.stem
    return Sweep(path.resolve(), name, base, spec, trials, settings, uses_carla, list(extra_sets))


def _check_key(key: str, path: Path) -> None:
    """A dotted key must name a config field (nested sections are walked), and not one the sweep owns."""
    if key in SWEEP_OWNED_KEYS:
        raise SweepError(f"{path}: {key} is set by the sweep itself (seeds: / the sweep directory); remove it")
    model: type[BaseModel] = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "top level"
            raise SweepError(f"{path}: unknown config key {key!r} (valid keys in {where}: {', '.join(fields)})")
        ann = fields[part].annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                raise SweepError(f"{path}: {'.'.join(parts[: i + 1])} is a value, not a section; {key!r} is not a config key")
            model = ann
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            raise SweepError(f"{path}: {key!r} is a whole section; sweep one of its keys ({', '.join(ann.model_fields)})")


def _short_names(keys: list[str]) -> dict[str, str]:
    """Last key part as the setting label (``n_step``), the full key where two grid keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (leaf if last.count(leaf) == 1 else k.replace(".", "-")) for k, leaf in zip(keys, last)}


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def _yaml_value(value: Any) -> str:
    """A value as override text that ``load_config`` parses back to the same value (JSON is YAML)."""
    return json.dumps(value)


def _describe(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r} (valid keys: {', '.join(SweepFile.model_fields)})"
    if err["type"] == "missing":
        return f"missing key {loc!r} ({SweepFile.model_fields[str(err['loc'][0])].description})"
    return f"{loc}: {err['msg']}"
