"""Shared by the service's tests: tiny trained runs and a real ``hashgnn serve`` process on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tiny import tiny

from hashgnn.config import RunConfig
from hashgnn.train.run import train_run

TINY: dict[str, Any] = tiny("lightgcn")
SAGE = {"id_dim": 16, "input_dim": 16, "hidden_dim": 16, "user_fanouts": [4, 3], "item_fanouts": [4]}


def tiny_run(folder: Path, encoder: str = "lightgcn", method: str = "hashgnn", seed: int = 3) -> Path:
    """Train a 2-epoch run on music_toy into ``folder``."""
    cfg = json.loads(json.dumps(TINY))
    cfg["model"].update({"encoder": encoder, "method": method})
    cfg["train"]["seed"] = seed
    if encoder == "sage":
        cfg["model"].update(SAGE)
    if encoder == "sage" or method == "mf":
        cfg["train"]["batch_size"] = 256
    train_run(RunConfig.from_dict(cfg), folder, progress=False)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``hashgnn serve`` in a subprocess on a free loopback port; stopped with SIGTERM."""

    def __init__(self, run: Path, *args: str, timeout: float = 120) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "hashgnn", "serve", "--run", str(run), "--port", str(self.port), *args]
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"hashgnn-serve-{self.port}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hashgnn serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hashgnn serve not ready after {timeout} s:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return int(self.proc.returncode)


def tiny_spectral_run(folder: Path, power_iters: int = 30, query_weight: float = 0.0) -> Path:
    """Train a small ``spectral_distill`` run on music_toy into ``folder`` (an SVD accurate to ~1e-6);
    ``query_weight`` > 0 trains query vectors against the item codes (the weighted mode's runs)."""
    cfg = RunConfig.from_dict(
        {
            "data": {"dataset": "music_toy", "valid_fraction": 0.0},
            "model": {"method": "spectral_distill", "bits": 16},
            "spectral": {
                "dim": 12,
                "gamma": 0.5,
                "power": 1.0,
                "power_iters": power_iters,
                "code_dim": 12,
                "popularity_bits": 4,
            },
            "distill": {
                "top_r": 20,
                "batch_users": 512,
                "temperature": 2.0,
                "refine_rounds": 1,
                "positive_weight": 1.0,  # as the shipped codes configs
                "query_weight": query_weight,
            },
            "train": {"epochs": 2, "seed": 3, "device": "cpu", "threads": 1},
            "eval": {"ks": [20], "candidates": 50},
        }
    )
    train_run(cfg, folder, progress=False)
    return folder
