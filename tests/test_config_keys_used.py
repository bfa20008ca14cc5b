"""Every config key is read somewhere in the code (no dead keys, docs/design.md §5).

A key counts as read when ``.<key>`` appears in a source file other than the config modules
themselves. Crude, but it fails the moment a key is added and never used, or its reader is deleted.
"""

import re
from pathlib import Path

from pydantic import BaseModel

from av_td3.config import Config

SRC = Path(__file__).resolve().parents[1] / "src" / "av_td3"
CONFIG_FILES = {"config.py"}


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _leaf_keys(ann, f"{prefix}{name}.")
        else:
            keys.append((f"{prefix}{name}", name))
    return keys


def test_every_config_key_is_read():
    code = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p.name not in CONFIG_FILES)
    unread = [dotted for dotted, name in _leaf_keys(Config) if not re.search(rf"\.{name}\b", code)]
    assert not unread, f"config keys no code reads: {unread}"
