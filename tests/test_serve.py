"""The service in process: fold-in against the trained encoder, answers equal to the one retrieval path,
and bad requests answered 404 / 422 / 413 / 501 (never 500)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the serve extra (pip install 'hashgnn[serve]') is not installed")
from fastapi.testclient import TestClient
from serve_helpers import tiny_run, tiny_spectral_run

from hashgnn.errors import HashgnnError
from hashgnn.index.recommend import Recommender
from hashgnn.methods import MODES
from hashgnn.run import Run
from hashgnn.serve.app import _plain_query, create_app
from hashgnn.serve.foldin import FoldIn, FoldInUnsupported, SpectralFoldIn, fold_in_for
from hashgnn.serve.service import ServedRun, ServeSettings


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-runs")
    return {
        "lightgcn": tiny_run(root / "lightgcn", "lightgcn"),
        "sage": tiny_run(root / "sage", "sage"),
        "mf": tiny_run(root / "mf", method="mf"),
    }


def _wait_ready(c: TestClient) -> None:
    """Wait (up to a minute) until the app has loaded its run: /readyz answers 200."""
    for _ in range(600):
        if c.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def client(runs: dict[str, Path]) -> TestClient:
    app = create_app(runs["lightgcn"], ServeSettings(max_list=50, max_k=100))
    with TestClient(app) as c:
        _wait_ready(c)
        yield c


def _user_items(model: torch.nn.Module, u: int) -> np.ndarray:
    g = model.graph
    return g.user_indices[g.user_indptr[u] : g.user_indptr[u + 1]].numpy()


# ----------------------------------------------------------------------------- fold-in
def test_lightgcn_fold_in_of_a_trained_user_gives_its_exported_vector(runs: dict[str, Path]) -> None:
    run = Run.load(runs["lightgcn"])
    f = FoldIn(run)
    for u in (0, 7, 100):
        ego = f.model.encoder.embedding.weight[u]
        code, z = f.fold_in(_user_items(f.model, u), ego=ego)
        np.testing.assert_allclose(z, run.codes.user_z[u], atol=1e-6)
        np.testing.assert_array_equal(code, run.codes.user_codes[u])


def test_run_fold_in_by_index_and_by_original_id(runs: dict[str, Path]) -> None:
    run = Run.load(runs["lightgcn"])
    items = [1, 5, 9]
    code, z = run.fold_in(items)
    ids = run.codes.item_ids
    by_id = [ids[i].item() for i in items] if ids is not None else items
    code2, z2 = run.fold_in(by_id, by_original_id=True)
    np.testing.assert_array_equal(code, code2)
    np.testing.assert_array_equal(z, z2)
    assert code.shape == (run.codes.user_codes.shape[1],) and z.shape == (run.codes.user_z.shape[1],)
    with pytest.raises(HashgnnError, match="item indices"):
        run.fold_in([run.codes.n_items])


def test_sage_fold_in_samples_and_aggregates_as_the_user_tower(runs: dict[str, Path]) -> None:
    run = Run.load(runs["sage"])
    f = FoldIn(run)
    m = f.model
    for u in (0, 7, 100):
        with torch.no_grad():
            ref = m.serve(m.encoder.encode_users(torch.tensor([u]), torch.Generator().manual_seed(f.seed)), "user")
        _, z = f.fold_in(_user_items(m, u), ego=m.encoder.user_input.id_emb.weight[u])
        np.testing.assert_allclose(z, ref[0].numpy(), atol=1e-6)


def test_a_new_user_is_coded_deterministically_and_near_its_trained_self(runs: dict[str, Path]) -> None:
    run = Run.load(runs["lightgcn"])
    f = FoldIn(run)
    every = np.unpackbits(run.codes.user_codes, axis=1)
    farther = []
    for u in range(0, run.codes.n_users, 25):
        items = _user_items(f.model, u)
        if len(items) == 0:
            continue
        c1, z1 = f.fold_in(items)
        c2, z2 = f.fold_in(np.concatenate([items[::-1], items[:1]]))  # order and repeats do not matter
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(z1, z2)
        d = (np.unpackbits(c1) != every).sum(axis=1)
        farther.append((d > d[u]).mean())  # share of trained users farther from the fold-in than u itself
    # by chance the share is about 0.5; a folded-in user lands nearer its own trained code than most
    assert len(farther) > 50 and np.mean(farther) > 0.6, np.mean(farther)


def test_fold_in_needs_a_graph_encoder(runs: dict[str, Path]) -> None:
    run = Run.load(runs["mf"])
    with pytest.raises(FoldInUnsupported, match="mf"):
        FoldIn(run)
    served = ServedRun(run.path)
    assert served.folder is None and "mf" in (served.fold_in_error or "")


@pytest.fixture(scope="module")
def spectral_run(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    return tiny_spectral_run(tmp_path_factory.mktemp("serve-spectral") / "run")


def test_spectral_fold_in_of_a_trained_user_gives_its_teacher_vector(spectral_run: Path) -> None:
    run = Run.load(spectral_run)
    f = fold_in_for(run)
    assert isinstance(f, SpectralFoldIn)
    tr, z = run.data().train.tocsr(), run.codes.user_z
    errs = [
        np.linalg.norm(f.fold_in(tr.indices[tr.indptr[u] : tr.indptr[u + 1]])[1] - z[u]) / np.linalg.norm(z[u])
        for u in range(tr.shape[0])
        if tr.indptr[u + 1] > tr.indptr[u]
    ]
    # exact up to the SVD's own accuracy (30 power iterations here; a few users' vectors are tiny)
    assert len(errs) > 1000 and np.median(errs) < 1e-4 and max(errs) < 1e-2, (np.median(errs), max(errs))


def test_spectral_fold_in_code_is_a_local_minimum_of_the_distillation_loss(spectral_run: Path) -> None:
    from hashgnn.codes.distill import teacher_top_r
    from hashgnn.codes.packing import unpack_codes
    from hashgnn.codes.refine import Objective

    run = Run.load(spectral_run)
    f = fold_in_for(run)
    assert isinstance(f, SpectralFoldIn)
    d, bits = run.config.distill, run.codes.bits
    item = torch.from_numpy(unpack_codes(run.codes.item_codes, bits))
    rng = np.random.default_rng(0)
    for _ in range(5):
        items = rng.choice(run.codes.n_items, size=int(rng.integers(1, 30)), replace=False)
        code, z = f.fold_in(items)
        again = f.fold_in(np.concatenate([items[::-1], items[:1]]))  # order and repeats do not matter
        np.testing.assert_array_equal(code, again[0])
        np.testing.assert_array_equal(z, again[1])
        seen = sp.csr_matrix((np.ones(len(items)), np.sort(items), [0, len(items)]), shape=(1, run.codes.n_items))
        targets = teacher_top_r(z[None], run.codes.item_z, seen, d.top_r)
        assert d.positive_weight > 0  # the own-items term is part of the loss the code was chosen by
        obj = Objective.of(targets, seen, d.temperature, d.decay, positive_weight=d.positive_weight)
        b = torch.from_numpy(unpack_codes(code[None], bits))
        base = float(obj.loss(b, item)[0])
        for k in range(bits):  # no single flip lowers the loss the code was chosen by
            flipped = b.clone()
            flipped[0, k] *= -1
            assert float(obj.loss(flipped, item)[0]) >= base - 1e-9


def test_new_users_of_a_spectral_distill_run_are_served(spectral_run: Path) -> None:
    with TestClient(create_app(spectral_run)) as c:
        _wait_ready(c)
        assert c.get("/v1/info").json()["fold_in"] is True
        for mode in MODES:
            r = c.post("/v1/recommendations/new-user", json={"items": [1, 2, 3], "k": 10, "mode": mode})
            assert r.status_code == 200, r.text
            got = [x["item"] for x in r.json()["items"]]
            assert len(got) == 10 and not {1, 2, 3} & set(got)


@pytest.fixture(scope="module")
def query_run(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    return tiny_spectral_run(tmp_path_factory.mktemp("serve-query") / "run", query_weight=1.0)


def test_a_run_with_query_vectors_serves_the_weighted_mode_as_its_retrieval_path(query_run: Path) -> None:
    run = query_run
    rec = Recommender(run, "weighted")
    users = np.array([0, 7, 40])
    want = rec.topk(users, 10)
    with TestClient(create_app(run)) as c:
        _wait_ready(c)
        assert c.get("/v1/info").json()["modes"] == ["hamming", "hierarchical", "continuous", "weighted"]
        for j, u in enumerate(users):
            uid = rec.codes.user_ids[u].item() if rec.codes.user_ids is not None else int(u)
            r = c.get(f"/v1/users/{uid}/recommendations", params={"k": 10, "mode": "weighted"})
            assert r.status_code == 200, r.text
            exp = want.items[j][want.items[j] >= 0]
            exp_ids = [want.item_ids[i].item() if want.item_ids is not None else int(i) for i in exp]
            assert [x["item"] for x in r.json()["items"]] == exp_ids
            np.testing.assert_allclose([x["score"] for x in r.json()["items"]], want.scores[j][: len(exp)])
            # the allow-list path ranks its sub-index the same way
            allow = [str(i) for i in exp_ids[::2]]
            r = c.get(f"/v1/users/{uid}/recommendations", params={"k": 3, "mode": "weighted", "allow": allow})
            assert [str(x["item"]) for x in r.json()["items"]] == allow[:3]


def test_a_query_run_folds_in_the_teachers_targets_and_a_query_trained_as_in_training(query_run: Path) -> None:
    from hashgnn.codes.distill import listwise_loss, teacher_top_r
    from hashgnn.codes.itq import hash_vectors
    from hashgnn.codes.packing import unpack_codes
    from hashgnn.model.spectral import embed_factors, spectral_factors

    run = Run.load(query_run)
    cfg, c = run.config, run.codes
    f = fold_in_for(run)
    assert isinstance(f, SpectralFoldIn) and f.query_steps == run.metrics["epochs_run"] > 0
    # the folder holds no teacher vector, so the fold-in refits the seeded teacher: the same one
    tr = run.data().train.tocsr()
    ones = sp.csr_matrix((np.ones_like(tr.data, dtype=np.float32), tr.indices, tr.indptr), shape=tr.shape)
    s = cfg.spectral
    fac = spectral_factors(ones, s.triplets, alpha=s.alpha, power_iters=s.power_iters, seed=cfg.train.seed)
    teacher_u, teacher_i = embed_factors(fac, s.dim, beta=s.beta, gamma=s.gamma, power=s.power)
    np.testing.assert_allclose(f.item_z, teacher_i, rtol=1e-6)
    starts, _ = hash_vectors(  # the trained queries' starts (hashgnn/train/fitted.py)
        teacher_u, teacher_i, fac.item_degree, c.bits, s.code_dim, s.popularity_bits, s.itq_iters, cfg.train.seed
    )
    item = torch.from_numpy(unpack_codes(c.item_codes, c.bits))
    queries = c.user_z / np.linalg.norm(c.user_z, axis=1, keepdims=True)
    users = [u for u in range(0, c.n_users, 10) if tr.indptr[u + 1] > tr.indptr[u]]
    farther, vector_err = [], []
    for u in users:
        items = tr.indices[tr.indptr[u] : tr.indptr[u + 1]]
        code, q = f.fold_in(items)
        again = f.fold_in(np.concatenate([items[::-1], items[:1]]))  # order and repeats do not matter
        np.testing.assert_array_equal(code, again[0])
        np.testing.assert_array_equal(q, again[1])
        assert q.shape == (c.bits,) and q.dtype == np.float32
        z = f.vector(items)
        vector_err.append(np.linalg.norm(z - teacher_u[u]) / np.linalg.norm(teacher_u[u]))
        # the query starts where a trained user's did (the teacher vector's PCA + ITQ projection) and
        # lowers from there the loss it is trained on
        seen = sp.csr_matrix((np.ones(len(items)), np.sort(items), [0, len(items)]), shape=(1, c.n_items))
        t = torch.from_numpy(teacher_top_r(z[None], f.item_z, seen, f.top_r))
        w = torch.where(t >= 0, torch.exp(-torch.arange(t.shape[1], dtype=torch.float32) / f.decay), 0.0)
        w = w / w.sum()

        def loss(x: np.ndarray, t: torch.Tensor = t, w: torch.Tensor = w, seen: sp.csr_matrix = seen) -> float:
            raw = torch.from_numpy(x[None]) @ item.T / f.temperature
            return float(listwise_loss(raw, seen, t, t >= 0, w, f.positive_weight))

        assert f.projection is not None
        start = f.projection.user_start(z[None])[0]
        np.testing.assert_allclose(start, starts[u], rtol=1e-3, atol=1e-3)  # to the SVD's accuracy
        assert loss(q) < loss(start)
        sim = queries @ (q / np.linalg.norm(q))
        farther.append((sim < sim[u]).mean())  # share of trained users' queries farther than u's own
    assert np.median(vector_err) < 1e-4, np.median(vector_err)
    # by chance about 0.5: a folded-in user's query lands nearer its trained query than most
    assert len(farther) > 100 and np.mean(farther) > 0.8, np.mean(farther)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n_seen=st.integers(0, 12),
    n_targets=st.integers(0, 10),
    ema=st.sampled_from([0.0, 0.9]),
    positive_weight=st.sampled_from([0.0, 1.0]),
)
def test_fold_in_query_is_adam_on_the_listwise_loss(
    seed: int, n_seen: int, n_targets: int, ema: float, positive_weight: float
) -> None:
    """The written-out gradient and Adam step against autograd and torch.optim.Adam (the reference)."""
    from hashgnn.codes.distill import listwise_loss
    from hashgnn.serve.foldin import fold_in_query

    rng = np.random.default_rng(seed)
    n, bits, steps, temperature, decay, lr = 40, 8, 7, 2.0, 5.0, 0.05
    items = np.where(rng.random((n, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    perm = rng.permutation(n)
    seen = np.sort(perm[:n_seen])
    targets = np.full(12, -1, np.int64)
    targets[:n_targets] = perm[n_seen : n_seen + n_targets]
    start = rng.standard_normal(bits).astype(np.float32)
    got = fold_in_query(
        start, items, targets, seen, steps=steps, temperature=temperature, decay=decay, lr=lr, ema=ema,
        positive_weight=positive_weight,
    )  # fmt: skip
    # reference: the loss of distill_codes, autograd, torch's Adam, the same moving average
    x = torch.nn.Parameter(torch.from_numpy(start)[None])
    avg = x.detach().clone()
    opt = torch.optim.Adam([x], lr=lr)
    t = torch.from_numpy(targets)[None]
    w = torch.where(t >= 0, torch.exp(-torch.arange(12, dtype=torch.float32) / decay), 0.0)
    w = w / w.sum().clamp(min=1e-12)
    row = sp.csr_matrix((np.ones(len(seen)), seen, [0, len(seen)]), shape=(1, n))
    it = torch.from_numpy(items)
    for _ in range(steps):
        loss = listwise_loss(x @ it.T / temperature, row, t, t >= 0, w, positive_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            avg.mul_(ema).add_(x, alpha=1.0 - ema)
    want = (avg if ema > 0 else x.detach())[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_new_users_of_a_query_run_are_served_in_all_four_modes(query_run: Path) -> None:
    from hashgnn.index.recommend import Retriever

    served = ServedRun(query_run)
    c = served.codes
    ids = [1, 2, 3]
    index = (
        np.array([int(np.flatnonzero(c.item_ids == i)[0]) for i in ids]) if c.item_ids is not None else np.array(ids)
    )
    code, q = served.fold_in(index)
    s_w, i_w = Retriever(c, "weighted", 50, 1).query(code[None], q[None], 10, [index])
    want = [c.item_ids[i].item() if c.item_ids is not None else int(i) for i in i_w[0]]
    with TestClient(create_app(query_run)) as client:
        _wait_ready(client)
        assert client.get("/v1/info").json()["fold_in"] is True
        for mode in ("hamming", "hierarchical", "continuous", "weighted"):
            r = client.post("/v1/recommendations/new-user", json={"items": ids, "k": 10, "mode": mode})
            assert r.status_code == 200, r.text
            got = [x["item"] for x in r.json()["items"]]
            assert len(got) == 10 and not set(ids) & set(got)
            if mode == "weighted":
                assert got == want
                np.testing.assert_allclose([x["score"] for x in r.json()["items"]], s_w[0])


# ----------------------------------------------------------------------------- answers
@pytest.mark.parametrize("mode", MODES)
def test_answers_are_the_retrieval_paths_by_original_id(client: TestClient, runs: dict[str, Path], mode: str) -> None:
    rec = Recommender(runs["lightgcn"], mode)
    ids = rec.codes.user_ids
    users = [0, 3, 250]
    want = rec.topk(np.array(users), 10)
    for j, u in enumerate(users):
        uid = ids[u].item() if ids is not None else u
        r = client.get(f"/v1/users/{uid}/recommendations", params={"k": 10, "mode": mode})
        assert r.status_code == 200, r.text
        body = r.json()
        got = [x["item"] for x in body["items"]]
        exp = want.items[j][want.items[j] >= 0]
        exp_ids = [want.item_ids[i].item() if want.item_ids is not None else int(i) for i in exp]
        assert got == exp_ids
        np.testing.assert_allclose([x["score"] for x in body["items"]], want.scores[j][: len(exp)], rtol=1e-5)
        hist = client.get(f"/v1/users/{uid}").json()["items"]
        assert not set(hist) & set(got)  # seen items excluded


def test_filters_and_similar_items(client: TestClient) -> None:
    base = client.get("/v1/users/3/recommendations", params={"k": 10}).json()["items"]
    top = [x["item"] for x in base]
    denied = client.get("/v1/users/3/recommendations", params={"k": 10, "deny": top[:3]}).json()["items"]
    assert not set(top[:3]) & {x["item"] for x in denied}
    assert [x["item"] for x in denied][:7] == top[3:]  # the rest moves up, in the same order
    allow = [str(i) for i in range(40)]
    allowed = client.get("/v1/users/3/recommendations", params={"k": 5, "allow": allow}).json()["items"]
    hist = set(client.get("/v1/users/3").json()["items"])
    assert allowed and {x["item"] for x in allowed} <= set(range(40)) - hist
    with_seen = client.get(
        "/v1/users/3/recommendations", params={"k": 5, "allow": list(hist)[:5], "exclude_seen": False}
    )
    assert {x["item"] for x in with_seen.json()["items"]} == set(list(hist)[:5])
    sim = client.get("/v1/items/5/similar", params={"k": 8}).json()
    assert len(sim["items"]) == 8 and 5 not in [x["item"] for x in sim["items"]]
    scores = [x["score"] for x in sim["items"]]
    assert scores == sorted(scores, reverse=True)


def test_new_user_endpoint_excludes_the_given_items(client: TestClient) -> None:
    r = client.post("/v1/recommendations/new-user", json={"items": [1, 2, 3], "k": 10, "mode": "hierarchical"})
    assert r.status_code == 200, r.text
    got = [x["item"] for x in r.json()["items"]]
    assert len(got) == 10 and not {1, 2, 3} & set(got)
    again = client.post("/v1/recommendations/new-user", json={"items": [3, 2, 1], "k": 10, "mode": "hierarchical"})
    assert [x["item"] for x in again.json()["items"]] == got


# ----------------------------------------------------------------------------- the hot path
def test_plain_query_takes_only_the_plain_forms() -> None:
    assert _plain_query(b"") == (20, "hamming", True)
    assert _plain_query(b"k=5&mode=continuous&exclude_seen=false") == (5, "continuous", False)
    assert _plain_query(b"k=5&k=7&mode=hierarchical") == (7, "hierarchical", True)  # the last wins, as in FastAPI
    for q in (b"k=-1", b"k=5.0", b"k=", b"k=%35", b"mode=Hamming", b"exclude_seen=1", b"allow=3", b"k=5&deny=1", b"x"):
        assert _plain_query(q) is None, q


@settings(max_examples=80, deadline=None)
@given(
    user=st.sampled_from(["0", "3", "250", "nobody", "-1", "99999999", "3.0", " 3", "1" * 30]),
    k=st.sampled_from(["1", "7", "100", "101", "0", "ten", "007", None]),
    mode=st.sampled_from([*MODES, "cosine", None]),
    seen=st.sampled_from(["true", "false", "1", "no", "maybe", None]),
)
def test_the_hot_path_answers_as_fastapi_does(
    client: TestClient, user: str, k: str | None, mode: str | None, seen: str | None
) -> None:
    params = {n: v for n, v in (("k", k), ("mode", mode), ("exclude_seen", seen)) if v is not None}
    app = client.app
    hot = app.hot
    taken: list[bool] = []

    async def spy(scope: object, receive: object, send: object) -> bool:
        taken.append(await hot(scope, receive, send))
        return taken[-1]

    def get() -> tuple[int, object]:
        r = client.get(f"/v1/users/{user}/recommendations", params=params)
        body = r.json()
        if isinstance(body, dict):
            body.pop("took_ms", None)
        return r.status_code, body

    try:
        app.hot = spy
        fast = get()
        app.hot = None
        slow = get()
    finally:
        app.hot = hot
    assert slow == fast
    plain = user in ("0", "3", "250", " 3") and k in ("1", "7", "100", "007", None) and seen in ("true", "false", None)
    assert taken == [plain and mode in (*MODES, None)]  # the plain, valid requests, and only they, took it


def test_the_hot_path_is_counted_under_its_endpoint(client: TestClient) -> None:
    def count() -> float:
        m = re.search(
            r'hashgnn_requests_total\{endpoint="/v1/users/\{user\}/recommendations",mode="hierarchical",status="200"\} (\S+)',
            client.get("/metrics").text,
        )
        return float(m.group(1)) if m else 0.0

    before = count()
    for _ in range(3):
        assert client.get("/v1/users/3/recommendations", params={"mode": "hierarchical"}).status_code == 200
    assert count() == before + 3


def test_one_id_is_looked_up_as_a_list_of_ids(runs: dict[str, Path]) -> None:
    from hashgnn.serve.service import NotFound, _Ids

    for ids in (None, np.array([5, 3, 2**31 - 1, 9], np.int32), np.array(["b", "a", "c"])):
        n = 4 if ids is None else len(ids)
        table = _Ids(ids, n, "user")
        for v in ["0", "3", "5", "2147483647", str(2**32 + 5), str(2**64), "-1", "a", "c", "zz", "", " 9"]:
            try:
                want: int | str = int(table.index([v])[0])
            except NotFound as e:
                want = str(e)
            try:
                got: int | str = table.index_one(v)
            except NotFound as e:
                got = str(e)
            assert got == want, (ids, v)
    wrapped = _Ids(np.array([5, 3], np.int32), 2, "user")  # 2**32 + 5 cast to int32 would be 5
    with pytest.raises(NotFound):
        wrapped.index([str(2**32 + 5)])


# ----------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize(
    "method,path,params,body,status,needle",
    [
        ("get", "/v1/users/nobody/recommendations", {}, None, 404, "'nobody'"),
        ("get", "/v1/users/99999999/recommendations", {}, None, 404, "99999999"),
        ("get", "/v1/users/nobody", {}, None, 404, "'nobody'"),
        ("get", "/v1/items/nothing/similar", {}, None, 404, "'nothing'"),
        ("get", "/v1/users/3/recommendations", {"deny": ["1", "zz"]}, None, 404, "'zz'"),
        ("get", "/v1/users/3/recommendations", {"k": 0}, None, 422, "k"),
        ("get", "/v1/users/3/recommendations", {"k": 101}, None, 422, "k"),
        ("get", "/v1/users/3/recommendations", {"k": "ten"}, None, 422, "k"),
        ("get", "/v1/users/3/recommendations", {"mode": "cosine"}, None, 422, "mode"),
        ("get", "/v1/users/3/recommendations", {"mode": "weighted"}, None, 422, "query_weight"),
        ("post", "/v1/recommendations/new-user", {}, {"items": [1], "mode": "weighted"}, 422, "query_weight"),
        ("get", "/v1/users/3/recommendations", {"exclude_seen": "maybe"}, None, 422, "exclude_seen"),
        ("get", "/v1/users/3/recommendations", {"allow": [str(i) for i in range(51)]}, None, 413, "allow"),
        ("post", "/v1/recommendations/new-user", {}, {"items": []}, 422, "items"),
        ("post", "/v1/recommendations/new-user", {}, {"items": [1], "k": -1}, 422, "k"),
        ("post", "/v1/recommendations/new-user", {}, {"items": [1], "mode": "x"}, 422, "mode"),
        ("post", "/v1/recommendations/new-user", {}, {"k": 3}, 422, "items"),
        ("post", "/v1/recommendations/new-user", {}, {"items": ["nope"]}, 404, "'nope'"),
        ("post", "/v1/recommendations/new-user", {}, {"items": list(range(51))}, 413, "items"),
        ("post", "/v1/recommendations/new-user", {}, [1, 2], 422, "body"),
    ],
)
def test_bad_requests_get_their_status_naming_the_problem(
    client: TestClient, method: str, path: str, params: dict, body: object, status: int, needle: str
) -> None:
    r = client.request(method.upper(), path, params=params, json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_oversized_and_malformed_bodies(client: TestClient) -> None:
    big = b'{"items": [' + b"1," * 600_000 + b"1]}"
    r = client.post("/v1/recommendations/new-user", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.text
    r = client.post("/v1/recommendations/new-user", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_fold_in_unavailable_is_501_with_the_reason(runs: dict[str, Path]) -> None:
    app = create_app(runs["mf"])
    with TestClient(app) as c:
        _wait_ready(c)
        r = c.post("/v1/recommendations/new-user", json={"items": [1, 2]})
        assert r.status_code == 501 and "mf" in r.json()["detail"]
        assert c.get("/v1/users/1/recommendations").status_code == 200


def test_readiness_and_a_run_that_fails_to_load(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path / "missing")) as c:
        for _ in range(100):
            r = c.get("/readyz")
            if "not a hashgnn run folder" in r.text:
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "not a hashgnn run folder" in r.text
        assert c.get("/healthz").status_code == 200
        r = c.get("/v1/users/1/recommendations")
        assert r.status_code == 503 and "no run is being served" in r.text


def test_a_loaded_run_is_moved_out_of_the_collectors_reach(runs: dict[str, Path]) -> None:
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(runs["lightgcn"])) as c:
        _wait_ready(c)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the run, torch and the app: long-lived, never walked by a collection again
        assert c.get("/v1/users/0/recommendations", params={"k": 5}).status_code == 200
        # a swap collects what the old run left in cycles, then freezes the new live set
        assert c.post("/admin/swap", json={"run": str(runs["mf"])}).status_code == 200
        assert gc.get_freeze_count() > 10_000
    gc.unfreeze()
