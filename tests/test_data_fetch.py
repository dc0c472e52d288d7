"""Fetching named data sets: cache, folder / file:// / http:// mirrors, checksums, atomic writes."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashgnn.cli import main
from hashgnn.config import DataConfig
from hashgnn.data import fetch_dataset, load_interactions
from hashgnn.data.fetch import dataset_cache_dir
from hashgnn.data.registry import REGISTRY
from hashgnn.errors import ChecksumError, DataWarning, HashgnnError

TOY = REGISTRY["music_toy"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the ``hashgnn`` entry point in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary files a fetch must never leave behind."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")] if folder.exists() else []


@pytest.fixture
def serve() -> Iterator:
    """Start an HTTP server on 127.0.0.1 (ephemeral port) for a folder; shut it down afterwards."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


def test_folder_mirror_fetch_verifies_and_reuses_the_cache(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_dataset("music_toy", mirror=mirror, cache_dir=cache, progress=False)
    assert folder == dataset_cache_dir("music_toy", cache)
    for name, pin in TOY.files.items():
        assert sha(folder / name) == pin.sha256
    assert leftovers(folder) == []
    # The cache is used without touching the mirror: a mirror that does not exist is never opened.
    again = fetch_dataset("music_toy", mirror=tmp_path / "no-such-mirror", cache_dir=cache, progress=False)
    assert again == folder
    # ... but it is reported when it is needed.
    with pytest.raises(HashgnnError, match=r"mirror folder .*no-such-mirror does not exist"):
        fetch_dataset("music_toy", mirror=tmp_path / "no-such-mirror", cache_dir=tmp_path / "c2", progress=False)


def test_env_vars_choose_mirror_and_cache(mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHGNN_DATA_MIRROR", mirror.as_uri())  # a file:// URL
    monkeypatch.setenv("HASHGNN_CACHE", str(tmp_path / "envcache"))
    with pytest.warns(DataWarning, match="dropped 527 test interaction"):  # music_toy's unseen test items
        data = load_interactions(DataConfig(dataset="music_toy"), progress=False)
    assert data.n_users == 1872 and data.train.nnz == 16180
    assert (tmp_path / "envcache" / "datasets" / "music_toy" / "train.txt").is_file()


def corrupt_mirror(mirror: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "bad-mirror"
    shutil.copytree(mirror / "music_toy", bad / "music_toy")
    p = bad / "music_toy" / "train.txt"
    p.chmod(0o644)
    data = bytearray(p.read_bytes())
    data[100] ^= 1  # one flipped bit
    p.write_bytes(bytes(data))
    return bad


def test_checksum_mismatch_is_an_error_and_nothing_is_kept(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = corrupt_mirror(mirror, tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as e:
        fetch_dataset("music_toy", mirror=bad, cache_dir=cache, progress=False)
    msg = str(e.value)
    assert "music_toy/train.txt" in msg and TOY.files["train.txt"].sha256 in msg
    assert sha(bad / "music_toy" / "train.txt") in msg and "not kept" in msg
    folder = dataset_cache_dir("music_toy", cache)
    assert not (folder / "train.txt").exists() and leftovers(folder) == []
    code, _, err = run_cli(["data", "info", "music_toy", "--mirror", str(bad), "--cache-dir", str(cache)], capsys)
    assert code == 2 and "music_toy/train.txt does not match the registry" in err and "Traceback" not in err
    assert not (folder / "train.txt").exists()


def test_a_corrupt_cached_copy_is_replaced_or_removed(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_dataset("music_toy", mirror=mirror, cache_dir=cache, progress=False)
    (folder / "test.txt").write_text("0 1\n")  # tampered
    fetch_dataset("music_toy", mirror=mirror, cache_dir=cache, progress=False)
    assert sha(folder / "test.txt") == TOY.files["test.txt"].sha256
    (folder / "train.txt").write_text("0 1\n")
    with pytest.raises(ChecksumError):
        fetch_dataset("music_toy", mirror=corrupt_mirror(mirror, tmp_path), cache_dir=cache, progress=False)
    assert not (folder / "train.txt").exists()  # the bad cached copy is gone, not used


def test_http_mirror_serves_the_shared_folder(mirror: Path, tmp_path: Path, serve) -> None:
    url = serve(mirror)
    cfg = DataConfig(dataset="music_toy", mirror=url + "/", cache_dir=str(tmp_path / "c"))
    with pytest.warns(DataWarning, match="dropped 527 test interaction"):
        data = load_interactions(cfg, progress=False)
    assert (data.n_users, data.n_items, data.train.nnz) == (1872, 3846, 16180)
    assert data.meta["n_test_raw"] == 4998


def test_http_mirror_checksum_mismatch(mirror: Path, tmp_path: Path, serve) -> None:
    url = serve(corrupt_mirror(mirror, tmp_path))
    with pytest.raises(ChecksumError, match=r"music_toy/train\.txt"):
        fetch_dataset("music_toy", mirror=url, cache_dir=tmp_path / "c", progress=False)
    assert not (dataset_cache_dir("music_toy", tmp_path / "c") / "train.txt").exists()


def test_mirror_without_the_file_falls_back_to_the_public_address(
    mirror: Path, tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = serve(mirror)
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    # Stand-in for the public address: the same server, so the test needs no internet.
    monkeypatch.setitem(REGISTRY, "music_toy", dataclasses.replace(TOY, base_url=f"{url}/music_toy/"))
    folder = fetch_dataset("music_toy", mirror=empty, cache_dir=tmp_path / "c", progress=False)
    assert sha(folder / "train.txt") == TOY.files["train.txt"].sha256
    # Neither has it: the message names both places.
    monkeypatch.setitem(REGISTRY, "music_toy", dataclasses.replace(TOY, base_url=f"{url}/gone/"))
    with pytest.raises(HashgnnError) as e:
        fetch_dataset("music_toy", mirror=empty, cache_dir=tmp_path / "c2", progress=False)
    assert f"{url}/gone/train.txt: not found (HTTP 404)" in str(e.value) and "empty-mirror" in str(e.value)


def test_network_error_names_the_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cache = ["--cache-dir", str(tmp_path)]
    code, _, err = run_cli(["data", "fetch", "music_toy", "--mirror", url, *cache], capsys)
    assert code == 2 and f"could not download {url}/music_toy/train.txt" in err
    assert "Traceback" not in err
    code, _, err = run_cli(["data", "fetch", "music_toy", "--mirror", "ftp://x/", *cache], capsys)
    assert code == 2 and "unsupported scheme 'ftp'" in err
    assert leftovers(dataset_cache_dir("music_toy", tmp_path)) == []


def test_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["data", "fetch", "movielens-99"], capsys)
    assert code == 2 and "unknown data set 'movielens-99'" in err and "gowalla" in err


def test_fetch_extras_and_cli_prints_the_folder(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["data", "fetch", "lastfm", "--extras", "--mirror", str(mirror), "--cache-dir", str(tmp_path), "-q"], capsys
    )
    assert code == 0
    folder = Path(out.strip())
    assert folder == dataset_cache_dir("lastfm", tmp_path)
    for name, pin in {**REGISTRY["lastfm"].files, **REGISTRY["lastfm"].extra_files}.items():
        assert sha(folder / name) == pin.sha256
