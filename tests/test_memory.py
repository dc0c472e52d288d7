"""hashgnn.memory: freed large blocks are reused (fewer page faults), in a process of their own.

The probe allocates with torch, as training does (numpy asks for transparent huge pages, which
fault in 2 MiB at a time and would hide the difference)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
import torch
from hashgnn.memory import keep_freed_memory
import hashgnn
took = None
if sys.argv[1] == "on":
    took = keep_freed_memory()
elif sys.argv[1] == "command":  # what `hashgnn --version` does before it prints
    from hashgnn.cli import main
    try:
        main(["--version"])
    except SystemExit:
        pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    a = torch.ones(10_000_000)  # 40 MB, above glibc's largest default mmap threshold
    a += 1.0
    del a
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(setting: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # `--version` prints first


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again() -> None:
    off, on = _probe("off"), _probe("on")
    assert on["took"] is True
    # each 40 MB block is ~9,800 pages: mapped afresh every time without the setting, reused with it
    assert off["faults"] > 40 * 9_000
    assert on["faults"] < off["faults"] / 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_command_applies_it_and_importing_the_library_does_not() -> None:
    off, on = _probe("import"), _probe("command")
    assert off["faults"] > 40 * 9_000
    assert on["faults"] < off["faults"] / 4
