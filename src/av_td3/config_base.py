"""The base every config section builds on: one strict pydantic model, the user-facing error wording,
and one resolver that gives a part the sections it reads.

Config flows one way: each part (``envs``, ``agents``, ``baselines``, ``training``) defines the
sections it reads next to its code, on ``StrictModel``; the root ``av_td3.config.Config`` composes
them. A part never imports the root: it takes its sections through its own ``Sections`` subclass,
e.g. ``TownEnv`` through ``DrivingSections`` (``env`` + ``reward``)::

    sections = DrivingSections.from_any(config)   # config: the root Config, a nested dict, or None
    sections.env.scenario

Errors read the same wherever a config is validated: an unknown or misspelled key names the nearest
valid key, an out-of-range value names the allowed range (``ConfigError``, one line per problem).
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Self

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ConfigError", "StrictModel", "Sections", "SECTION_NAMES", "validate_model", "format_errors"]

#: The top-level sections of a config file, in file order. The root ``Config`` composes exactly these
#: (tests/test_config.py checks it); a part that reads some of them accepts the others untouched.
SECTION_NAMES = ("env", "reward", "carla", "networks", "algorithm", "training", "exploration", "evaluation",
                 "logging", "classical")


class ConfigError(ValueError):
    """A configuration problem, worded for the user (what is wrong and how to fix it)."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, assignment is validated, no inf/nan."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Sections(StrictModel):
    """A view of the config made of whole top-level sections (each field is named after its section).

    Subclasses list the sections one part reads; the root ``Config`` is the view of all of them.
    """

    @classmethod
    def from_any(cls, config: Any) -> Self:
        """This view of ``config``: an instance of it (returned as is), an object holding these sections
        as attributes (the root ``Config`` or a wider view: its section objects are shared), a (partial)
        nested dict of sections (sections other parts read are left to them), or None (all defaults).

        Raises:
            ConfigError: an unknown section or key, a value out of range, or a ``config`` of another type.
        """
        if isinstance(config, cls):
            return config
        if config is None:
            return validate_model(cls, {})
        if isinstance(config, Mapping):
            return validate_model(cls, _own_sections(cls, config))
        names = list(cls.model_fields)
        if isinstance(config, BaseModel) and all(hasattr(config, name) for name in names):
            return validate_model(cls, {name: getattr(config, name) for name in names})
        raise ConfigError(f"config must be a nested dict of sections (e.g. {{'algorithm': {{'batch_size': 128}}}}), "
                          f"a Config or None, got {type(config).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def _own_sections(cls: type[Sections], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``raw`` that ``cls`` reads; any key that is no config section at all is an error."""
    unknown = [str(k) for k in raw if k not in cls.model_fields and k not in SECTION_NAMES]
    if unknown:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(
            _unknown_key_line((k,), list(SECTION_NAMES)) for k in unknown))
    return {k: v for k, v in raw.items() if k in cls.model_fields}


def validate_model(model: type[BaseModel], raw: Mapping[str, Any]) -> Any:
    """``model.model_validate(raw)``; raise ``ConfigError`` with one line per problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, model)) from None


# --------------------------------------------------------------------------------------------------
# Error wording
# --------------------------------------------------------------------------------------------------
def format_errors(exc: ValidationError, root: type[BaseModel]) -> str:
    """The problems of ``exc`` (raised validating ``root``), one line each, keys as dotted paths."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            owner = _model_at(root, loc[:-1])
            lines.append(_unknown_key_line(loc, list(owner.model_fields) if owner is not None else []))
        else:
            msg = err["msg"]
            if "ctx" in err:
                bounds = _field_bounds(root, loc) or _bounds_text(err["ctx"])
                if bounds:
                    msg += f" (allowed: {bounds})"
            got = err.get("input")
            got_s = "" if isinstance(got, dict) else f", got {got!r}"
            lines.append(f"invalid value for '{dotted}': {msg}{got_s}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _unknown_key_line(loc: tuple, valid: list[str]) -> str:
    dotted = ".".join(str(p) for p in loc)
    near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
    hint = f"did you mean '{'.'.join(str(p) for p in loc[:-1] + (near[0],))}'?" if near else ""
    section = ".".join(str(p) for p in loc[:-1]) or "top level"
    return f"unknown config key '{dotted}' {hint} (valid keys in {section}: {', '.join(valid)})".replace("  ", " ")


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the field path ``loc`` below ``root`` (for nearest-key suggestions)."""
    model = root
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


_OPS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _bounds_text(limits: Mapping[str, Any]) -> str:
    return " and ".join(f"{op} {limits[k]}" for k, op in _OPS if limits.get(k) is not None)


def _field_bounds(root: type[BaseModel], loc: tuple) -> str:
    """Both bounds of a numeric field (``0 <= x <= 2``), not only the one the value broke."""
    owner = _model_at(root, loc[:-1]) if loc else None
    field = owner.model_fields.get(str(loc[-1])) if owner is not None else None
    if field is None:
        return ""
    limits = {k: getattr(m, k) for m in field.metadata for k, _ in _OPS if getattr(m, k, None) is not None}
    return _bounds_text(limits)
