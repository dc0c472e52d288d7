"""Security issue, items 2 and 5: every registry file is pinned, and a download that is cut short,
too large, too slow or downgraded to plain http is never cached."""

from __future__ import annotations

import http.server
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import hashgnn.data.fetch as fetch_mod
from hashgnn.data.fetch import dataset_cache_dir, fetch_dataset, git_blob_id, pin_mismatch
from hashgnn.data.registry import REGISTRY, DatasetSpec, Pin
from hashgnn.errors import ChecksumError, HashgnnError

BODY = b"0 0 1\n1 1 2\n"


def test_every_registry_file_is_pinned() -> None:
    for spec in REGISTRY.values():
        for name, pin in spec.all_files(extras=True).items():
            assert pin.sha256 is not None or pin.git_blob is not None, (spec.name, name)
            if pin.sha256 is not None:
                assert pin.size is not None and pin.size > 0, (spec.name, name)


def test_git_blob_pin_matches_git(mirror: Path) -> None:
    # The public repository's tree names gowalla/train.txt as this blob; the mirror's copy hashes to it.
    assert git_blob_id(mirror / "gowalla" / "train.txt") == "a27782bd7a1d4d0744148dc0460ea94da74763f2"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves BODY under /tofu/<file>, misbehaving as the path asks."""

    def do_GET(self) -> None:
        if "short" in self.path:  # announces the whole body, sends half, closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if "huge" in self.path:  # no Content-Length, more bytes than pinned
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY * 1000)
            self.close_connection = True
            return
        if "downgrade" in self.path:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/tofu/train.txt")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def register(monkeypatch: pytest.MonkeyPatch, base: str, pin: Pin) -> None:
    spec = DatasetSpec(name="tofu", description="t", base_url=base, fmt="txt", files={"train.txt": pin})
    monkeypatch.setitem(REGISTRY, "tofu", spec)


def git_pin(tmp_path: Path) -> Pin:
    p = tmp_path / "body"
    p.write_bytes(BODY)
    return Pin(git_blob=git_blob_id(p), max_bytes=1000)


def cached(cache: Path) -> list[str]:
    folder = dataset_cache_dir("tofu", cache)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_file_pinned_by_git_blob_is_verified(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, f"{server}/tofu/", git_pin(tmp_path))
    folder = fetch_dataset("tofu", mirror=None, cache_dir=tmp_path / "c", progress=False)
    assert (folder / "train.txt").read_bytes() == BODY
    # Nothing is recorded on first use: a tampered cached copy is caught by the pin itself.
    assert cached(tmp_path / "c") == ["train.txt"]
    (folder / "train.txt").write_bytes(BODY.replace(b"2", b"3"))
    assert "Git blob" in (pin_mismatch(folder / "train.txt", REGISTRY["tofu"].files["train.txt"]) or "")
    register(monkeypatch, f"{server}/other/", Pin(git_blob="0" * 40, max_bytes=1000))
    with pytest.raises(ChecksumError, match="does not match the registry"):
        fetch_dataset("tofu", mirror=None, cache_dir=tmp_path / "c", progress=False)
    assert cached(tmp_path / "c") == []


def test_a_cut_connection_is_not_cached(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, f"{server}/short/", git_pin(tmp_path))
    with pytest.raises(HashgnnError, match=r"ended after \d+ of 12 bytes|does not match"):
        fetch_dataset("tofu", mirror=None, cache_dir=tmp_path / "c", progress=False)
    assert cached(tmp_path / "c") == []


def test_a_download_larger_than_pinned_is_refused(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, f"{server}/huge/", git_pin(tmp_path))
    with pytest.raises(HashgnnError, match="more than the 1000 bytes"):
        fetch_dataset("tofu", mirror=None, cache_dir=tmp_path / "c", progress=False)
    assert cached(tmp_path / "c") == []


def test_a_download_past_the_deadline_is_stopped(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, f"{server}/tofu/", git_pin(tmp_path))
    monkeypatch.setattr(fetch_mod, "DEADLINE_S", -1)
    with pytest.raises(HashgnnError, match="took longer than"):
        fetch_dataset("tofu", mirror=None, cache_dir=tmp_path / "c", progress=False)
    assert cached(tmp_path / "c") == []


def test_https_to_http_redirects_are_refused() -> None:
    handler = fetch_mod._NoDowngrade()
    req = urllib.request.Request("https://example.org/a.txt")
    with pytest.raises(HashgnnError, match="from https to http"):
        handler.redirect_request(req, None, 302, "Found", {}, "http://example.org/a.txt")
    ok = handler.redirect_request(req, None, 302, "Found", {}, "https://mirror.example.org/a.txt")
    assert ok is not None and ok.full_url == "https://mirror.example.org/a.txt"


def test_stale_part_files_are_removed(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, f"{server}/tofu/", git_pin(tmp_path))
    folder = dataset_cache_dir("tofu", tmp_path / "c")
    folder.mkdir(parents=True)
    stale, fresh = folder / ".train.txt.dead.part", folder / ".train.txt.live.part"
    stale.write_bytes(b"x" * 10)
    fresh.write_bytes(b"y")
    old = time.time() - 2 * fetch_mod.STALE_PART_S
    os.utime(stale, (old, old))
    fetch_dataset("tofu", mirror=None, cache_dir=tmp_path / "c", progress=False)
    assert not stale.exists() and fresh.exists()  # a live download of another process is left alone
