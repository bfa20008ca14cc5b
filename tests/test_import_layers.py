"""The lower layers never import the higher ones (docs/design.md §6): ``envs`` and ``buffers`` import
nothing from ``agents``, ``training``, ``report``, ``sweep`` or ``cli``. Read from the source with ``ast``,
so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "av_td3"
HIGHER = ("agents", "training", "report", "sweep", "cli")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("layer", ["envs", "buffers"])
def test_lower_layers_do_not_import_higher_ones(layer):
    bad = [f"{path.relative_to(SRC)}:{line} imports {module}"
           for path in sorted((SRC / layer).rglob("*.py"))
           for line, module in _imports(path)
           if module.startswith("av_td3.") and module.split(".")[1] in HIGHER]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from av_td3.training.trainer import Trainer\n")
    assert (2, "av_td3.training.trainer") in _imports(bad)
