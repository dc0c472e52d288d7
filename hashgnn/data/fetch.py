"""Fetch a registered data set into the cache: verified, atomic, from a mirror or the public address.

Resolution, file by file:

1. the cache (``cache_dir``, else ``$HASHGNN_CACHE``, else the per-user cache folder), under
   ``datasets/<name>/<file>``: used when its SHA-256 matches;
2. a mirror (``mirror``, else ``$HASHGNN_DATA_MIRROR``): a folder, a ``file://`` URL or an
   ``http(s)://`` base URL laid out as ``<name>/<file>``;
3. the public address of the registry, when no mirror is set or the mirror lacks the file.

Every copy is streamed into a temporary file in the cache folder, hashed on the way, and only renamed
into place (``os.replace``, atomic) when it matches the registry's pin (size and SHA-256, or Git blob
id; see :class:`~hashgnn.data.registry.Pin`); a bad copy is deleted and raises
:class:`~hashgnn.errors.ChecksumError`. A download is also refused when it delivers fewer bytes than
its ``Content-Length`` (a dropped connection), more than the pinned size, takes longer than
:data:`DEADLINE_S`, or is redirected from https to plain http. Temporary files that a killed process
left behind are removed on the next fetch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import platformdirs

from hashgnn.data.registry import DatasetSpec, Pin, get_spec
from hashgnn.errors import ChecksumError, HashgnnError
from hashgnn.progress import progress_bar

_CHUNK = 1 << 20
_TIMEOUT_S = 60  # per network operation
DEADLINE_S = 30 * 60  # per file, whole download
STALE_PART_S = 60 * 60  # a .part file untouched this long belongs to a dead process
_USER_AGENT = "hashgnn-data-fetch"
_FILE_MODE = 0o644  # mkstemp creates 0600; cached data is not secret and may be shared


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$HASHGNN_CACHE``, else the per-user cache folder."""
    if cache_dir is None:
        cache_dir = os.environ.get("HASHGNN_CACHE") or platformdirs.user_cache_dir("hashgnn")
    return Path(cache_dir).expanduser()


def dataset_cache_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where data set ``name`` lives in the cache: ``<cache>/datasets/<name>``."""
    return cache_root(cache_dir) / "datasets" / name


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """The Git blob id of a file: hex SHA-1 of ``b"blob <size>\\0"`` followed by its bytes."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pin_mismatch(path: Path, pin: Pin) -> str | None:
    """What is wrong with ``path`` against ``pin`` (size, SHA-256, Git blob), or None when it matches."""
    size = path.stat().st_size
    if pin.size is not None and size != pin.size:
        return f"expected {pin.size} bytes, got {size}"
    if pin.sha256 is not None:
        got = sha256_file(path)
        return None if got == pin.sha256 else f"expected SHA-256 {pin.sha256}, got {got}"
    got = git_blob_id(path)
    return None if got == pin.git_blob else f"expected Git blob {pin.git_blob}, got {got}"


def remove_stale_parts(folder: Path, older_than_s: float = STALE_PART_S) -> int:
    """Delete the ``.*.part`` temporary files in ``folder`` not written to for ``older_than_s``."""
    removed = 0
    now = time.time()
    for part in folder.glob(".*.part"):
        try:
            if now - part.stat().st_mtime > older_than_s:
                part.unlink()
                removed += 1
        except FileNotFoundError:  # another process finished or removed it meanwhile
            pass
    return removed


def fetch_dataset(
    name: str,
    mirror: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    extras: bool = False,
) -> Path:
    """Make the files of registered data set ``name`` present and verified in the cache.

    Returns the cache folder holding them. ``mirror`` defaults to ``$HASHGNN_DATA_MIRROR``;
    ``extras`` also fetches the side files (id maps, social links). Raises
    :class:`~hashgnn.errors.ChecksumError` on a hash mismatch and :class:`~hashgnn.errors.HashgnnError`
    when no source can provide a file.
    """
    spec = get_spec(name)
    if mirror is None:
        mirror = os.environ.get("HASHGNN_DATA_MIRROR") or None
    folder = dataset_cache_dir(name, cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HashgnnError(
            f"cannot create the cache folder {folder} ({e.strerror or e}); "
            "set HASHGNN_CACHE or --cache-dir to a writable folder"
        ) from None
    remove_stale_parts(folder)
    for file, pin in spec.all_files(extras).items():
        target = folder / file
        if target.is_file():
            if pin_mismatch(target, pin) is None:
                continue
            # Never keep (or use) a corrupt cached copy, even if the new fetch fails.
            target.unlink()
        _fetch_file(spec, file, pin, mirror, target, progress)
    return folder


def _fetch_file(
    spec: DatasetSpec, file: str, pin: Pin, mirror: str | os.PathLike[str] | None, target: Path, progress: bool
) -> None:
    """Fetch one file from the mirror or, when the mirror lacks it, from the public address."""
    public = spec.base_url + urllib.parse.quote(file)
    not_in_mirror = ""
    if mirror is not None:
        source = _mirror_source(mirror, spec.name, file)
        try:
            _copy_verified(source, spec.name, file, pin, target, progress)
            return
        except _Missing:
            not_in_mirror = f" (the mirror has no {source})"
    try:
        _copy_verified(public, spec.name, file, pin, target, progress)
    except _Missing:
        raise HashgnnError(
            f"{public}: not found (HTTP 404){not_in_mirror}; the public copy of "
            f"{spec.name}/{file} has moved. Point HASHGNN_DATA_MIRROR or --mirror at a "
            "folder or URL holding <name>/<file>."
        ) from None
    except HashgnnError as e:
        if not_in_mirror and not isinstance(e, ChecksumError):
            raise HashgnnError(f"{e}{not_in_mirror}") from None
        raise


class _Missing(Exception):
    """The source does not have the file (missing path, HTTP 404): try the next source."""


def _mirror_source(mirror: str | os.PathLike[str], name: str, file: str) -> str:
    """The location of ``<name>/<file>`` in a mirror: a local path or an http(s) URL."""
    m = os.fspath(mirror)
    scheme = urllib.parse.urlsplit(m).scheme.lower()
    if scheme in ("http", "https"):
        return m.rstrip("/") + "/" + urllib.parse.quote(name) + "/" + urllib.parse.quote(file)
    if scheme == "file":
        root = Path(urllib.request.url2pathname(urllib.parse.urlsplit(m).path))
    elif "://" in m:
        raise HashgnnError(
            f"mirror {m!r}: unsupported scheme {scheme!r}; use a folder, a file:// URL or an http(s):// base URL"
        )
    else:
        root = Path(m).expanduser()
    if not root.is_dir():
        raise HashgnnError(
            f"mirror folder {root} does not exist; fix HASHGNN_DATA_MIRROR / --mirror "
            "(a folder laid out as <name>/<file>, or an http(s):// base URL) or unset it "
            "to use the public addresses"
        )
    return str(root / name / file)


def _copy_verified(source: str, name: str, file: str, pin: Pin, target: Path, progress: bool) -> None:
    """Stream ``source`` into a temp file next to ``target``, verify against ``pin``, then rename into place."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _stream(source, f"{name}/{file}", progress, pin.limit):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        wrong = pin_mismatch(tmp, pin)
        if wrong is not None:
            raise ChecksumError(
                f"{name}/{file} does not match the registry ({wrong}). The copy is corrupt, truncated or "
                "has changed; it was not kept. Fix or remove that copy (or unset HASHGNN_DATA_MIRROR to use "
                "the public address) and try again.",
                path=source,
            )
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except OSError as e:
        raise HashgnnError(
            f"cannot write {target} ({e.strerror or e}); set HASHGNN_CACHE or --cache-dir to a writable folder"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, except from https to anything but https."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old = urllib.parse.urlsplit(req.full_url).scheme.lower()
        new = urllib.parse.urlsplit(newurl).scheme.lower()
        if old == "https" and new != "https":
            raise HashgnnError(
                f"{req.full_url} redirects to {newurl}, from https to {new}; refused (the "
                "download could be altered on the way). Use a mirror (--mirror)."
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngrade())


def _stream(source: str, label: str, progress: bool, limit: int) -> Iterator[bytes]:
    """Yield the bytes of a local file or URL in chunks, with a progress bar on stderr.

    At most ``limit`` bytes are accepted; an HTTP body shorter than its ``Content-Length`` is an
    error, as is a download that runs past :data:`DEADLINE_S`.
    """
    if urllib.parse.urlsplit(source).scheme.lower() in ("http", "https"):
        req = urllib.request.Request(source, headers={"User-Agent": _USER_AGENT})
        try:
            resp = _OPENER.open(req, timeout=_TIMEOUT_S)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise _Missing() from None
            raise HashgnnError(f"could not download {source}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise HashgnnError(
                f"could not download {source}: {reason}. Check the network, or set "
                "HASHGNN_DATA_MIRROR / --mirror to a folder or URL holding <name>/<file>."
            ) from None
        with resp:
            size = resp.headers.get("Content-Length")
            declared = int(size) if size and size.isdigit() else None
            if declared is not None and declared > limit:
                raise HashgnnError(
                    f"{source}: the server announces {declared} bytes, more than the {limit} "
                    f"expected for {label}; refused"
                )
            got = 0
            for chunk in _chunks(resp, declared, label, progress, source, limit):
                got += len(chunk)
                yield chunk
            if declared is not None and got != declared:
                raise HashgnnError(
                    f"{source}: the connection ended after {got} of {declared} bytes; the "
                    "partial file was not kept. Try again."
                )
    else:
        try:
            # Not a `with` here: a missing file and a failing read raise different errors; closed below.
            f = open(source, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise _Missing() from None
        except OSError as e:
            raise HashgnnError(f"cannot read {source} ({e.strerror or e})") from None
        with f:
            yield from _chunks(f, os.fstat(f.fileno()).st_size, label, progress, source, limit)


def _chunks(f: BinaryIO, size: int | None, label: str, progress: bool, source: str, limit: int) -> Iterator[bytes]:
    deadline = time.monotonic() + DEADLINE_S
    got = 0
    with progress_bar(size, label, "B", enabled=progress, unit_scale=True) as bar:
        while True:
            try:
                chunk = f.read(_CHUNK)
            except OSError as e:
                raise HashgnnError(f"reading {source} failed: {e}") from None
            if not chunk:
                break
            got += len(chunk)
            if got > limit:
                raise HashgnnError(f"{source}: more than the {limit} bytes expected for {label}; refused")
            if time.monotonic() > deadline:
                raise HashgnnError(
                    f"{source}: the download of {label} took longer than {DEADLINE_S} s; "
                    "stopped. Try again, or use a mirror (--mirror)."
                )
            bar.update(len(chunk))
            yield chunk
