"""Atomic writers and validating readers of the project's safe formats: JSON, YAML, text, ``.npy``.

Every writer goes through :func:`atomic_write`: the bytes go to a temporary file created next to the
target (a unique name per process and call, ``tempfile.mkstemp``), are flushed to disk, and the
file is renamed over the target, so a reader sees the old file or the new one, never a part.

Readers raise :class:`ArtifactError` naming the file, what is wrong and what to do. :func:`read_npy`
checks the ``.npy`` header against the file size before it allocates anything (a 100-byte file that
claims a huge shape is refused, not allocated) and never unpickles.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
import tokenize
from pathlib import Path
from typing import Any

import numpy as np

from hashgnn import interrupt
from hashgnn.errors import HashgnnError


class ArtifactError(HashgnnError):
    """A file of a run folder (or another saved artifact) is missing, truncated or malformed."""

    def __init__(self, path: str | Path, problem: str, remedy: str = "") -> None:
        msg = f"{path}: {problem}"
        if remedy:
            msg += f"; {remedy}"
        super().__init__(msg)
        self.path = Path(path)


class WriteError(HashgnnError):
    """A file could not be written (disk full, file-size limit, read-only or missing folder).

    The message names the file and the system's reason; the file it would have replaced is intact.
    """

    def __init__(self, path: str | Path, error: OSError) -> None:
        reason = error.strerror or str(error)
        hint = {
            errno.ENOSPC: "free some space",
            errno.EDQUOT: "free some space (disk quota)",
            errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "the folder is not writable by this user",
            errno.EPERM: "the folder is not writable by this user",
            errno.ENOENT: "its folder does not exist",
            errno.ENOTDIR: "part of its path is a file, not a folder",
        }.get(error.errno or 0, "")
        super().__init__(f"cannot write {path} ({reason}{'; ' + hint if hint else ''})")
        self.path = Path(path)
        self.errno = error.errno


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a unique temporary file in the same folder and a rename.

    Raises :class:`WriteError` (a :class:`HashgnnError`) when the system refuses; the temporary file
    is removed and a file already at ``path`` is left as it was. A Ctrl-C or SIGTERM that arrives
    during the write is delivered when it is done (:func:`hashgnn.interrupt.deferred`).
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    # A stop request (Ctrl-C, SIGTERM) is delivered after the rename: one that landed between
    # mkstemp and the cleanup below would leave the temporary file behind.
    with interrupt.deferred():
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as e:
            raise WriteError(path, e) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise WriteError(path, e) from None
            raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, text)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write(path, json.dumps(obj, indent=2))


def write_yaml(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as YAML (``yaml.safe_dump``, key order kept)."""
    import yaml

    return atomic_write(path, yaml.safe_dump(obj, sort_keys=False))


def write_npy(path: str | Path, arr: np.ndarray) -> Path:
    """Atomically write ``arr`` as ``.npy`` (no pickle; object arrays are refused by numpy)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return atomic_write(path, buf.getvalue())


def write_safetensors(path: str | Path, tensors: dict[str, Any]) -> Path:
    """Atomically write torch tensors as safetensors (loading them never runs code)."""
    from safetensors.torch import save

    return atomic_write(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def read_json(path: str | Path, what: str = "JSON file", remedy: str = "") -> Any:
    """Parse a JSON file; a missing or malformed one is an :class:`ArtifactError` naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ArtifactError(path, f"missing ({what})", remedy) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(path, f"unreadable {what} ({e})", remedy) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(
            path, f"not valid JSON ({what}: {e.msg} at line {e.lineno} column {e.colno})", remedy
        ) from None


def npy_header(path: str | Path, remedy: str = "") -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data_offset)`` of a ``.npy`` file, checked against its size.

    Reads only the header; the file must be exactly header + shape x itemsize bytes long.
    """
    path = Path(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
            # numpy parses the header dict with tokenize and ast, whose errors name neither the file
            # nor the format; a damaged header can raise any of these.
            except (ValueError, SyntaxError, EOFError, OSError, tokenize.TokenError) as e:
                raise ArtifactError(path, f"not a valid .npy file ({e})", remedy) from None
            offset = f.tell()
    except FileNotFoundError:
        raise ArtifactError(path, "missing", remedy) from None
    if dtype.hasobject:
        raise ArtifactError(path, f"holds Python objects (dtype {dtype}), which are never loaded", remedy)
    expected = offset + math.prod(shape) * dtype.itemsize
    if size != expected:
        raise ArtifactError(
            path,
            f"truncated or padded: its header says {dtype} {shape} ({expected} bytes in all) "
            f"but the file has {size} bytes",
            remedy,
        )
    return tuple(shape), dtype, bool(fortran), offset


def read_npy(path: str | Path, kinds: str = "", ndim: int | None = None, remedy: str = "") -> np.ndarray:
    """Load a ``.npy`` after :func:`npy_header`; ``kinds`` lists the allowed ``dtype.kind`` letters
    (e.g. ``"u"``, ``"f"``, ``"iuU"``) and ``ndim`` the number of dimensions."""
    shape, dtype, fortran, offset = npy_header(path, remedy)
    if kinds and dtype.kind not in kinds:
        raise ArtifactError(path, f"has dtype {dtype}, expected kind {' or '.join(kinds)}", remedy)
    if ndim is not None and len(shape) != ndim:
        raise ArtifactError(path, f"has shape {shape}, expected {ndim} dimension(s)", remedy)
    with open(path, "rb") as f:
        f.seek(offset)
        arr = np.fromfile(f, dtype=dtype, count=math.prod(shape))
    return arr.reshape(shape, order="F" if fortran else "C")


__all__ = [
    "ArtifactError",
    "WriteError",
    "atomic_write",
    "npy_header",
    "read_json",
    "read_npy",
    "write_json",
    "write_npy",
    "write_safetensors",
    "write_text",
    "write_yaml",
]
