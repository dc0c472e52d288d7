"""Portable code artifacts of a run: packed codes, continuous vectors and a JSON header.

Layout inside a run folder (all loadable without running code; ``np.load(..., allow_pickle=False)``)::

    codes.json        {"bits": K, "n_users": U, "n_items": I, "bit_order": "numpy.packbits big-endian",
                       "bit_meaning": "1 = +1, 0 = -1", "format_version": 1}
    user_codes.npy    uint8 (U, ceil(K/8))  packed sign(z_user)
    item_codes.npy    uint8 (I, ceil(K/8))  packed sign(z_item)
    user_z.npy        float32 (U, D)        continuous vectors (D = K for hashing methods)
    item_z.npy        float32 (I, D)
    user_ids.npy      original user id of each index (int64 or unicode; absent if ids are 0..U-1)
    item_ids.npy      likewise for items
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashgnn.errors import HashgnnError

FORMAT_VERSION = 1


@dataclass
class RunCodes:
    """Codes and continuous vectors of every user and item of a run."""

    bits: int
    user_codes: np.ndarray
    item_codes: np.ndarray
    user_z: np.ndarray
    item_z: np.ndarray
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return int(self.user_codes.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0])


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)


def save_codes(run_dir: str | Path, codes: RunCodes) -> None:
    """Write ``codes`` into ``run_dir`` atomically file by file (temp file + rename)."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    _save_npy(d / "user_codes.npy", np.ascontiguousarray(codes.user_codes, dtype=np.uint8))
    _save_npy(d / "item_codes.npy", np.ascontiguousarray(codes.item_codes, dtype=np.uint8))
    _save_npy(d / "user_z.npy", np.ascontiguousarray(codes.user_z, dtype=np.float32))
    _save_npy(d / "item_z.npy", np.ascontiguousarray(codes.item_z, dtype=np.float32))
    for name, ids in (("user_ids", codes.user_ids), ("item_ids", codes.item_ids)):
        if ids is not None:
            ids = np.asarray(ids)
            if ids.dtype == object:
                ids = ids.astype(str)
            _save_npy(d / f"{name}.npy", ids)
    header = {
        "format_version": FORMAT_VERSION,
        "bits": int(codes.bits),
        "n_users": codes.n_users,
        "n_items": codes.n_items,
        "bytes_per_code": int(codes.user_codes.shape[1]),
        "bit_order": "numpy.packbits big-endian",
        "bit_meaning": "1 = +1, 0 = -1",
        "has_ids": codes.user_ids is not None,
    }
    tmp = d / "codes.json.tmp"
    tmp.write_text(json.dumps(header, indent=2))
    os.replace(tmp, d / "codes.json")


def load_codes(run_dir: str | Path) -> RunCodes:
    """Read the artifacts written by :func:`save_codes`; never unpickles."""
    d = Path(run_dir)
    head_path = d / "codes.json"
    if not head_path.exists():
        raise HashgnnError(f"{d}: no codes.json; is this a finished hashgnn run folder?")
    header = json.loads(head_path.read_text())
    if header.get("format_version") != FORMAT_VERSION:
        raise HashgnnError(f"{head_path}: unsupported format_version {header.get('format_version')}")

    def load(name: str, required: bool = True) -> np.ndarray | None:
        p = d / f"{name}.npy"
        if not p.exists():
            if required:
                raise HashgnnError(f"{p}: missing; the run folder is incomplete")
            return None
        return np.load(p, allow_pickle=False)

    codes = RunCodes(
        bits=int(header["bits"]),
        user_codes=load("user_codes"),  # type: ignore[arg-type]
        item_codes=load("item_codes"),  # type: ignore[arg-type]
        user_z=load("user_z"),  # type: ignore[arg-type]
        item_z=load("item_z"),  # type: ignore[arg-type]
        user_ids=load("user_ids", required=False),
        item_ids=load("item_ids", required=False),
    )
    if codes.n_users != header["n_users"] or codes.n_items != header["n_items"]:
        raise HashgnnError(f"{head_path}: counts do not match the .npy files; the run folder is corrupt")
    return codes
