"""The real server: ``hashgnn serve`` in a subprocess on a free loopback port, talked to over HTTP.

Endpoints, concurrent clients (micro-batched, answers identical to one-at-a-time), a swap of runs
under load with no failed request, requests generated from the OpenAPI schema (schemathesis), and a
clean stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (pip install 'hashgnn[serve]') is not installed")
import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from serve_helpers import Server, tiny_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-http")
    a = tiny_run(root / "a")
    shutil.copytree(a, root / "b")  # another folder, so another run id: what a swap must switch to
    return {"a": a, "b": root / "b"}


@pytest.fixture(scope="module")
def server(runs: dict[str, Path]) -> Server:
    s = Server(runs["a"], "--batch-wait-ms", "5", "--max-list", "100", "--log-level", "warning")
    yield s
    assert s.stop() == 0, s.output()


def test_endpoints_over_http(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        info = c.get("/v1/info").json()
        assert info["n_items"] > 0 and info["fold_in"] is True
        u = info["example_users"][2]
        r = c.get(f"/v1/users/{u}/recommendations", params={"k": 7, "mode": "hierarchical"})
        assert r.status_code == 200 and len(r.json()["items"]) == 7
        assert r.json()["run_id"] == info["run_id"]
        r = c.post("/v1/recommendations/new-user", json={"items": info["example_items"][:4], "k": 5})
        assert r.status_code == 200 and len(r.json()["items"]) == 5
        assert c.get(f"/v1/items/{info['example_items'][0]}/similar", params={"k": 3}).status_code == 200
        assert c.get("/v1/users/not-a-user/recommendations").status_code == 404
        assert c.get("/docs").status_code == 200 and "swagger" in c.get("/docs").text.lower()
        assert "/v1/recommendations/new-user" in c.get("/openapi.json").json()["paths"]
        assert "<title>hashgnn serve</title>" in c.get("/").text
        m = c.get("/metrics")
        assert m.headers["content-type"].startswith("text/plain")
        text = m.text
        assert f'hashgnn_run_info{{method="hashgnn",run_id="{info["run_id"]}"}} 1.0' in text
        assert f"hashgnn_index_items {float(info['n_items'])}" in text
        assert re.search(
            r'hashgnn_requests_total\{endpoint="/v1/users/\{user\}/recommendations",mode="hierarchical",status="200"\} [1-9]',
            text,
        )
        assert re.search(
            r'hashgnn_request_errors_total\{endpoint="/v1/users/\{user\}/recommendations".*status="404"\}', text
        )
        assert 'hashgnn_request_seconds_bucket{endpoint="/v1/items/{item}/similar",le="0.05",mode="hamming"}' in text


def _batch_stats(text: str, mode: str) -> tuple[float, float]:
    s = float(re.search(rf'hashgnn_batch_size_sum\{{mode="{mode}"\}} (\S+)', text).group(1))  # type: ignore[union-attr]
    n = float(re.search(rf'hashgnn_batch_size_count\{{mode="{mode}"\}} (\S+)', text).group(1))  # type: ignore[union-attr]
    return s, n


@pytest.mark.parametrize("mode", ["hamming", "continuous"])
def test_concurrent_requests_are_batched_and_answered_as_alone(server: Server, mode: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        users = c.get("/v1/info").json()["example_users"]
        alone = {
            u: c.get(f"/v1/users/{u}/recommendations", params={"k": 5 + i, "mode": mode}).json()
            for i, u in enumerate(users)
        }
        before = _batch_stats(c.get("/metrics").text, mode)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=64)) as ac:
            reqs = [
                ac.get(f"/v1/users/{u}/recommendations", params={"k": 5 + i, "mode": mode})
                for _ in range(8)
                for i, u in enumerate(users)
            ]
            return await asyncio.gather(*reqs)

    answers = asyncio.run(burst())
    assert all(r.status_code == 200 for r in answers)
    for r in answers:
        body, ref = r.json(), alone[r.json()["user"]]
        assert [x["item"] for x in body["items"]] == [x["item"] for x in ref["items"]]
        # float products of a batch may round in another order than a single query's (BLAS blocking)
        assert [x["score"] for x in body["items"]] == pytest.approx([x["score"] for x in ref["items"]], rel=1e-5)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        after = _batch_stats(c.get("/metrics").text, mode)
    served, searches = after[0] - before[0], after[1] - before[1]
    assert served == len(answers)
    assert searches < served  # at least one search answered several requests


def test_swap_under_load_fails_no_request(server: Server, runs: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("model: [unclosed\n")

    async def scenario() -> tuple[list[int], set[str], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as ac:
            first = (await ac.get("/v1/info")).json()["run_id"]
            statuses: list[int] = []
            run_ids: set[str] = set()
            done = asyncio.Event()

            async def client(i: int) -> None:
                while not done.is_set():
                    r = await ac.get(f"/v1/users/{i}/recommendations", params={"k": 10, "mode": "hierarchical"})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        run_ids.add(r.json()["run_id"])
                    r = await ac.post("/v1/recommendations/new-user", json={"items": [i, i + 1], "k": 5})
                    statuses.append(r.status_code)

            tasks = [asyncio.create_task(client(i)) for i in range(8)]
            await asyncio.sleep(0.5)
            swaps = [await ac.post("/admin/swap", json={"run": str(runs["b"])})]
            await asyncio.sleep(0.5)
            swaps.append(await ac.post("/admin/swap", json={"run": str(broken)}))
            await asyncio.sleep(0.3)
            swaps.append(await ac.post("/admin/swap", json={"run": str(runs["a"])}))
            await asyncio.sleep(0.3)
            done.set()
            await asyncio.gather(*tasks)
            run_ids.add(first)
            return statuses, run_ids, swaps

    statuses, run_ids, swaps = asyncio.run(scenario())
    assert len(statuses) > 50 and set(statuses) == {200}
    assert swaps[0].status_code == 200 and swaps[0].json()["serving"].startswith("b-")
    assert swaps[1].status_code == 409
    assert swaps[1].json()["detail"]["serving"] == swaps[0].json()["serving"]  # the failed load kept run b
    assert "config.yaml" in swaps[1].json()["detail"]["message"]
    assert swaps[2].status_code == 200 and swaps[2].json()["previous"] == swaps[0].json()["serving"]
    assert len(run_ids) == 2  # requests were answered by both runs
    with httpx.Client(base_url=server.url) as c:
        assert 'hashgnn_swaps_total{result="failed"} 1.0' in c.get("/metrics").text


def test_generated_requests_never_get_a_server_error(server: Server) -> None:
    # schemathesis draws requests (valid and invalid paths, queries, bodies) from the app's OpenAPI
    # schema; every answer must be a documented client error or a success, never a 5xx
    from hypothesis import given

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/admin/swap":  # changes what is served; tested above
            continue

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=server.url, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])
            assert response.status_code in (200, 404, 413, 422, 501), (response.status_code, response.text[:300])

        check()
        checked.append(op.path)
    assert "/v1/recommendations/new-user" in checked and "/v1/users/{user}/recommendations" in checked


def test_cli_user_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "hashgnn", "serve", "--run", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "not a hashgnn run folder" in r.stderr and "Traceback" not in r.stderr


def test_bench_serve_reports_every_cell(runs: dict[str, Path]) -> None:
    from hashgnn.serve.load import bench_serve

    res = bench_serve(
        runs["a"], modes=("hamming",), clients=(1, 4), seconds=0.5, warmup=0.2, index_seconds=0.2, progress=False
    )
    assert [c["clients"] for c in res["cells"]] == [1, 4]
    for c in res["cells"]:
        assert c["requests"] > 0 and c["failed"] == 0 and c["rps"] > 0
        assert c["p50_ms"] <= c["p95_ms"] <= c["p99_ms"]
    assert res["index"]["hamming"]["single_query_qps"] > 0


def test_synthetic_index_serves_without_data(tmp_path: Path) -> None:
    from hashgnn.serve.load import synthetic_run
    from hashgnn.serve.service import ServedRun

    served = ServedRun(synthetic_run(tmp_path / "syn", 5000, bits=32, n_users=50))
    assert served.seen is None and served.folder is None and "config.yaml" in (served.fold_in_error or "")
    _, items = served.search(
        "hamming", served.codes.user_codes[:3], served.codes.user_z[:3], 10, [np.zeros(0, np.int64)] * 3
    )
    assert items.shape == (3, 10) and (items >= 0).all()
