"""Fetch a registered data set into the cache: verified, atomic, from a mirror or the public address.

Resolution, file by file:

1. the cache (``cache_dir``, else ``$HASHGNN_CACHE``, else the per-user cache folder), under
   ``datasets/<name>/<file>``: used when its SHA-256 matches;
2. a mirror (``mirror``, else ``$HASHGNN_DATA_MIRROR``): a folder, a ``file://`` URL or an
   ``http(s)://`` base URL laid out as ``<name>/<file>``;
3. the public address of the registry, when no mirror is set or the mirror lacks the file.

Every copy is streamed into a temporary file in the cache folder, hashed on the way, and only renamed
into place (``os.replace``, atomic) when its SHA-256 matches; a bad copy is deleted and raises
:class:`~hashgnn.errors.ChecksumError`. Files whose hash the registry does not know are recorded on first
download in a ``<file>.sha256`` side file and checked against it afterwards.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterator

import platformdirs
from tqdm import tqdm

from hashgnn.data.registry import DatasetSpec, get_spec
from hashgnn.errors import ChecksumError, HashgnnError

_CHUNK = 1 << 20
_TIMEOUT_S = 60
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
        raise HashgnnError(f"cannot create the cache folder {folder} ({e.strerror or e}); "
                           "set HASHGNN_CACHE or --cache-dir to a writable folder") from None
    for file, known in spec.all_files(extras).items():
        target = folder / file
        sidecar = folder / (file + ".sha256")
        expected = known or _read_sidecar(sidecar)
        if target.is_file():
            if expected is None:
                # First sight of a file the registry cannot vouch for: trust it from now on.
                _write_atomic(sidecar, sha256_file(target) + "\n")
                continue
            if sha256_file(target) == expected:
                continue
            # Never keep (or use) a corrupt cached copy, even if the new fetch fails.
            target.unlink()
        _fetch_file(spec, file, expected, sidecar, mirror, target, progress)
    return folder


def _fetch_file(spec: DatasetSpec, file: str, expected: str | None, sidecar: Path,
                mirror: str | os.PathLike[str] | None, target: Path, progress: bool) -> None:
    """Fetch one file from the mirror or, when the mirror lacks it, from the public address."""
    public = spec.base_url + urllib.parse.quote(file)
    not_in_mirror = ""
    if mirror is not None:
        source = _mirror_source(mirror, spec.name, file)
        try:
            _copy_verified(source, spec.name, file, expected, sidecar, target, progress)
            return
        except _Missing:
            not_in_mirror = f" (the mirror has no {source})"
    try:
        _copy_verified(public, spec.name, file, expected, sidecar, target, progress)
    except _Missing:
        raise HashgnnError(f"{public}: not found (HTTP 404){not_in_mirror}; the public copy of "
                           f"{spec.name}/{file} has moved. Point HASHGNN_DATA_MIRROR or --mirror at a "
                           "folder or URL holding <name>/<file>.") from None
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
        raise HashgnnError(f"mirror {m!r}: unsupported scheme {scheme!r}; use a folder, a file:// URL "
                           "or an http(s):// base URL")
    else:
        root = Path(m).expanduser()
    if not root.is_dir():
        raise HashgnnError(f"mirror folder {root} does not exist; fix HASHGNN_DATA_MIRROR / --mirror "
                           "(a folder laid out as <name>/<file>, or an http(s):// base URL) or unset it "
                           "to use the public addresses")
    return str(root / name / file)


def _copy_verified(source: str, name: str, file: str, expected: str | None, sidecar: Path,
                   target: Path, progress: bool) -> None:
    """Stream ``source`` into a temp file next to ``target``, verify, then rename into place."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in _stream(source, f"{name}/{file}", progress):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if expected is not None and got != expected:
            recorded = ""
            if sidecar.exists():
                recorded = (f" The expected hash was recorded at the first download ({sidecar}); if the "
                            "upstream file has legitimately changed, delete that file and fetch again.")
            raise ChecksumError(
                f"SHA-256 mismatch for {name}/{file}: expected {expected}, got {got}. The copy is corrupt "
                f"or has changed; it was not kept.{recorded} Fix or remove that copy (or unset "
                "HASHGNN_DATA_MIRROR to use the public address) and try again.",
                path=source,
            )
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
        if expected is None:
            _write_atomic(sidecar, got + "\n")
    except OSError as e:
        raise HashgnnError(f"cannot write {target} ({e.strerror or e}); set HASHGNN_CACHE or "
                           "--cache-dir to a writable folder") from None
    finally:
        tmp.unlink(missing_ok=True)


def _stream(source: str, label: str, progress: bool) -> Iterator[bytes]:
    """Yield the bytes of a local file or URL in chunks, with a progress bar on stderr."""
    if urllib.parse.urlsplit(source).scheme.lower() in ("http", "https"):
        req = urllib.request.Request(source, headers={"User-Agent": _USER_AGENT})
        try:
            resp = urllib.request.urlopen(req, timeout=_TIMEOUT_S)  # noqa: S310 (http(s) only)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise _Missing() from None
            raise HashgnnError(f"could not download {source}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise HashgnnError(f"could not download {source}: {reason}. Check the network, or set "
                               "HASHGNN_DATA_MIRROR / --mirror to a folder or URL holding <name>/<file>."
                               ) from None
        with resp:
            size = resp.headers.get("Content-Length")
            yield from _chunks(resp, int(size) if size and size.isdigit() else None, label, progress,
                               source)
    else:
        try:
            # Not a `with` here: a missing file and a failing read raise different errors; closed below.
            f = open(source, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise _Missing() from None
        except OSError as e:
            raise HashgnnError(f"cannot read {source} ({e.strerror or e})") from None
        with f:
            yield from _chunks(f, os.fstat(f.fileno()).st_size, label, progress, source)


def _chunks(f: BinaryIO, size: int | None, label: str, progress: bool, source: str) -> Iterator[bytes]:
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
              disable=not progress, leave=False) as bar:
        while True:
            try:
                chunk = f.read(_CHUNK)
            except OSError as e:
                raise HashgnnError(f"reading {source} failed: {e}") from None
            if not chunk:
                break
            bar.update(len(chunk))
            yield chunk


def _read_sidecar(sidecar: Path) -> str | None:
    try:
        text = sidecar.read_text().strip()
    except FileNotFoundError:
        return None
    return text if len(text) == 64 else None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
