"""``hashgnn --version`` and ``hashgnn.__version__`` come from one place, the package's metadata agrees."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

import hashgnn
from hashgnn.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    out, err = capsys.readouterr()
    assert int(exc.value.code or 0) == 0 and err == ""
    assert out.strip() == f"hashgnn {hashgnn.__version__}"


def test_installed_metadata_and_source_agree() -> None:
    # pyproject.toml reads the version from hashgnn/__init__.py instead of writing it a second time.
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", hashgnn.__version__)
    assert version("hashgnn") == hashgnn.__version__
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and meta["project"]["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hashgnn.__version__"}
