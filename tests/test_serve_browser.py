"""The web page in a real headless browser (Debian's chromium driven by Playwright) against the real server:
the page loads, a user's recommendations appear in every mode the run serves, an unknown id shows a readable
message, and a new user typed as item ids is folded in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (pip install 'hashgnn[serve]') is not installed")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
from serve_helpers import Server, tiny_run, tiny_spectral_run  # noqa: E402

pytestmark = pytest.mark.slow

# As the machine notes say: as root, without a sandbox, GPU or background traffic (this machine's
# network is closed, and chromium's own connections would fail many times at every start).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    for c in (os.environ.get("HASHGNN_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if c and Path(c).exists():
            return c
    pytest.skip("Debian's chromium is not installed and .ci/run could not install it (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Server:
    run = tiny_run(tmp_path_factory.mktemp("serve-browser") / "run")
    s = Server(run, "--log-level", "warning")
    yield s
    s.stop()


def test_the_page_shows_three_modes_and_readable_errors(server: Server, tmp_path: Path) -> None:
    exe = chromium()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert "items" in page.inner_text("#info")
            # a known user, by clicking one of the example ids
            page.click("#examples a >> nth=1")
            page.wait_for_selector("#overlap-table", timeout=30_000)
            cols = page.query_selector_all("#results .col")
            assert [c.get_attribute("data-mode") for c in cols] == ["hamming", "hierarchical", "continuous"]
            for c in cols:
                assert len(c.query_selector_all("li")) == 10
                assert "ms" in c.inner_text()
            assert "history of user" in page.inner_text("#history")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            if os.environ.get("HASHGNN_SCREENSHOT"):
                page.screenshot(path=os.environ["HASHGNN_SCREENSHOT"], full_page=True)
            # an unknown user: a readable message, no lists
            page.fill("#user", "no-such-user")
            page.click("#go")
            page.wait_for_selector("#message.error", timeout=30_000)
            assert "404" in page.inner_text("#message") and "unknown user" in page.inner_text("#message")
            assert page.query_selector_all("#results .col") == []
            # a new user typed as item ids
            page.fill("#items", "1, 2, 3")
            page.click("#go-new")
            page.wait_for_selector("#overlap-table", timeout=30_000)
            assert len(page.query_selector_all("#results .col")) == 3
            # an unknown item for a new user
            page.fill("#items", "1, nope")
            page.click("#go-new")
            page.wait_for_selector("#message.error", timeout=30_000)
            assert "unknown item" in page.inner_text("#message") and "nope" in page.inner_text("#message")
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_page_shows_the_modes_its_run_serves(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> None:
    # a run with query vectors serves a fourth mode, weighted: the page takes its columns from /v1/info
    run = tiny_spectral_run(tmp_path_factory.mktemp("serve-browser-query") / "run", query_weight=1.0)
    server = Server(run, "--log-level", "warning")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(server.url + "/")
                page.wait_for_selector("body[data-ready='1']", timeout=30_000)
                page.click("#examples a >> nth=1")
                page.wait_for_selector("#overlap-table", timeout=30_000)
                cols = page.query_selector_all("#results .col")
                modes = [c.get_attribute("data-mode") for c in cols]
                assert modes == ["hamming", "hierarchical", "continuous", "weighted"]
                assert all(len(c.query_selector_all("li")) == 10 for c in cols)
                assert "all 4 lists" in page.inner_text("#overlap")
            finally:
                browser.close()
    finally:
        server.stop()
