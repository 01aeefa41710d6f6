"""The package layers of docs/architecture.md hold: import-linter's contracts in pyproject.toml.

`make lint` runs the same check (lint-imports); this test keeps it in the fast lane too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
importlinter_cli = pytest.importorskip("importlinter.cli")


def test_the_layer_contracts_are_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = importlinter_cli.lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), cache_dir=str(tmp_path / "cache"), no_logo=True
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tierflight layers KEPT" in out


def test_every_package_is_in_a_layer() -> None:
    """Exhaustive: a new top-level package or module fails lint until it is placed."""
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    assert contract["exhaustive"] is True
    listed = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    package = ROOT / "server" / "tierflight"
    present = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert present == listed
    assert contract["layers"][-1] == "core"
