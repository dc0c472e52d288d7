"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_one_python_example() -> None:
    blocks = python_blocks()
    assert len(blocks) == 1 and "import hashgnn as hg" in blocks[0]


def test_readme_python_example_runs(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the example writes runs/lastfm-py relative to the working folder
    (code,) = python_blocks()
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    run, items = namespace["run"], namespace["items"]
    assert (tmp_path / "runs" / "lastfm-py" / "final_metrics.json").exists()
    assert items.shape == (3, 10) and (items >= 0).all()
    assert namespace["same"].metrics == run.metrics
    out = capsys.readouterr().out
    assert "recall@20" in out and "item" in out
