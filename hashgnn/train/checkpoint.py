"""Atomic, pickle-free training checkpoints.

A checkpoint is a folder ``ckpt-EEEE`` holding ``model.safetensors`` (weights),
``optim.safetensors`` + ``optim.json`` (Adam's tensors and its scalar state), ``rng.safetensors``
(the training generator's state; in a data-parallel run also ``generator.rank<R>`` for every other
rank, and ``world_size`` in the state) and ``state.json`` (epoch, best validation score, history). It is
written under a temporary name and renamed to a name of its own (``ckpt-EEEE-<random>``, never
replacing a folder that exists); ``checkpoint.json`` then names the newest one (itself replaced
atomically), and only then are older ones removed, so a process killed at any moment leaves a usable
checkpoint named by the pointer. The pointer is trusted only when it names a checkpoint folder of this
run (``ckpt-`` names, no path).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from hashgnn.errors import HashgnnError
from hashgnn.io import WriteError, atomic_write
from hashgnn.run import Run

POINTER = "checkpoint.json"
_NAME = re.compile(r"^ckpt-\d{4,}(-[0-9a-f]{8})?$")


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state_dict into tensors (for safetensors) and JSON-able scalars."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, sc in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run_dir: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
    keep: int = 1,
    generator_states: list[torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``epoch`` atomically and drop older ones beyond ``keep``.

    ``generator_states``: every rank's generator state in rank order (a data-parallel run); rank 0's
    is saved as ``generator``, like ``generator``'s own state when None.
    When the system refuses a write (full disk, file-size limit, read-only folder) the half-written
    folder is removed, the pointer still names the previous checkpoint, and
    :class:`~hashgnn.io.WriteError` names the file.
    """
    token = secrets.token_hex(4)
    final = run_dir / f"ckpt-{epoch:04d}-{token}"
    tmp = run_dir / f".ckpt-{epoch:04d}-{token}.tmp"
    current = tmp
    try:
        tmp.mkdir(parents=True)
        current = tmp / Run.WEIGHTS
        _save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, current)
        otensors, ometa = _optimizer_to_flat(optimizer)
        current = tmp / "optim.safetensors"
        _save_tensors(otensors, current)
        current = tmp / "optim.json"
        current.write_text(json.dumps(ometa))
        current = tmp / "rng.safetensors"
        states = generator_states if generator_states is not None else [generator.get_state()]
        _save_tensors({_rng_key(r): st.contiguous() for r, st in enumerate(states)}, current)
        current = tmp / "state.json"
        current.write_text(json.dumps({"epoch": epoch, **state}, indent=2))
        _fsync_folder_files(tmp)
        current = final
        os.replace(tmp, final)
        current = run_dir / POINTER
        atomic_write(current, json.dumps({"latest": final.name, "epoch": epoch}, indent=2))
    except (OSError, WriteError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if current != tmp and final.exists() and not _points_to(run_dir, final.name):
            shutil.rmtree(final, ignore_errors=True)
        if isinstance(e, WriteError):
            raise
        raise WriteError(current, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = sorted(
        (p for p in run_dir.glob("ckpt-*") if p.is_dir() and p != final and _NAME.match(p.name)),
        key=lambda p: (_epoch_of(p.name), p.stat().st_mtime),
    )
    for p in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(".ckpt-*.tmp"):  # a killed process's half-written checkpoint
        shutil.rmtree(p, ignore_errors=True)
    return final


def _rng_key(rank: int) -> str:
    return "generator" if rank == 0 else f"generator.rank{rank}"


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    # Serialised in memory and written by Python, so a refused write is an OSError (safetensors'
    # own file writer reports it as an opaque SafetensorError).
    data = save(tensors)
    with open(path, "wb") as f:
        f.write(data)


def _fsync_folder_files(folder: Path) -> None:
    """Flush the checkpoint's files to disk before the rename makes them the checkpoint."""
    for p in folder.iterdir():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _points_to(run_dir: Path, name: str) -> bool:
    try:
        return json.loads((run_dir / POINTER).read_text()).get("latest") == name
    except (OSError, ValueError, AttributeError):
        return False


def _epoch_of(name: str) -> int:
    return int(name.split("-")[1])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder named by ``checkpoint.json``, or None when the run has none yet."""
    ptr = run_dir / POINTER
    if not ptr.exists():
        return None
    try:
        latest = json.loads(ptr.read_text())["latest"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise HashgnnError(
            f'{ptr}: not a checkpoint pointer ({{"latest": "ckpt-..."}}); delete it '
            "to restart the run from scratch, or restore the run folder"
        ) from None
    if not isinstance(latest, str) or not _NAME.match(latest):
        raise HashgnnError(
            f"{ptr}: names {latest!r}, which is not a checkpoint of this run (ckpt-EEEE); "
            "delete it to restart the run from scratch, or restore the run folder"
        )
    ckpt = run_dir / latest
    if not ckpt.is_dir():
        raise HashgnnError(
            f"{ptr}: names {latest}, which is missing from {run_dir}; delete {ptr} to "
            "restart the run from scratch, or restore the run folder"
        )
    return ckpt


def load_checkpoint(
    ckpt: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Any]:
    """Restore model, optimiser and generator in place; return the saved ``state.json``.

    ``rank`` / ``world``: this process's place in a data-parallel run; a checkpoint resumes only
    with the number of processes that wrote it (each rank continues its own random stream).
    """
    st = json.loads((ckpt / "state.json").read_text())
    saved_world = int(st.get("world_size", 1))
    if saved_world != world:
        raise HashgnnError(
            f"{ckpt}: written by a run on {saved_world} training process(es), resumed on {world}; "
            f"resume with {'--nproc ' + str(saved_world) if saved_world > 1 else 'one process (no --nproc)'} "
            "so that every process continues its own random stream"
        )
    device = next(model.parameters()).device
    model.load_state_dict(load_file(ckpt / Run.WEIGHTS, device=str(device)))
    meta = json.loads((ckpt / "optim.json").read_text())
    # Loaded on CPU: Optimizer.load_state_dict moves each tensor next to its parameter (and keeps
    # Adam's step counter on CPU, where it must stay).
    _optimizer_from_flat(optimizer, load_file(ckpt / "optim.safetensors", device="cpu"), meta)
    generator.set_state(load_file(ckpt / "rng.safetensors")[_rng_key(rank)])
    return st
