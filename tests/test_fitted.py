"""Methods without a network (hashgnn/train/fitted.py): the spectral reference and its distilled codes.

Checked against direct computations: the run's codes are the training-free codes of the same
factors, the distilled student starts from them, the distillation lowers its loss and moves the
student's ranking towards the teacher's, and the fit protocol refits with the validated budget.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hashgnn.codes.distill import distill_codes, teacher_top_r
from hashgnn.codes.itq import hash_vectors, itq_codes, popularity_bits
from hashgnn.codes.packing import pack_codes, unpack_codes
from hashgnn.config import RunConfig
from hashgnn.data import load_interactions
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.io import ArtifactError
from hashgnn.methods import MODES
from hashgnn.model.spectral import balance_embeddings, bspm_embeddings, embed_factors, spectral_factors
from hashgnn.run import Run
from hashgnn.train.run import train_run

SPECTRAL = {"dim": 24, "gamma": 0.5, "power": 1.0, "code_dim": 16, "popularity_bits": 4}


def config(method: str, epochs: int = 3, valid_fraction: float = 0.1, **distill: float) -> RunConfig:
    return RunConfig.from_dict(
        {
            "data": {"dataset": "music_toy", "valid_fraction": valid_fraction},
            "model": {"method": method, "bits": 16},
            "spectral": SPECTRAL,
            "distill": {"top_r": 20, "batch_users": 512, **distill},
            "train": {"epochs": epochs, "seed": 3, "device": "cpu", "threads": 1, "eval_every": 1},
            "eval": {"ks": [20], "candidates": 50},
        }
    )


def random_interactions(seed: int, n_users: int = 60, n_items: int = 50, density: float = 0.12) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0
    return sp.csr_matrix(dense)


def test_hash_vectors_signs_are_the_itq_codes_plus_popularity_bits() -> None:
    rng = np.random.default_rng(0)
    user, item = rng.standard_normal((30, 12)), rng.standard_normal((40, 12))
    degree = rng.integers(1, 50, 40)
    ux, ix = hash_vectors(user, item, degree, bits=10, code_dim=8, popularity=3, iters=5, seed=1)
    uc, ic, _ = itq_codes(user[:, :8], item[:, :8], 7, iters=5, seed=1)
    pu, pi = popularity_bits(degree, 30, 3)
    assert np.array_equal(np.where(ux >= 0, 1.0, -1.0), np.hstack([uc, pu]))
    assert np.array_equal(np.where(ix >= 0, 1.0, -1.0), np.hstack([ic, pi]))
    with pytest.raises(ConfigError, match="popularity bits"):
        hash_vectors(user, item, degree, bits=4, popularity=4)
    with pytest.raises(ConfigError, match="code_dim"):
        hash_vectors(user, item, degree, bits=8, code_dim=13)


def test_teacher_top_r_is_the_brute_force_ranking_without_seen_items() -> None:
    train = random_interactions(1)
    rng = np.random.default_rng(2)
    user = rng.integers(-2, 3, (60, 4)).astype(np.float32)  # small integers: many exact ties
    item = rng.integers(-2, 3, (50, 4)).astype(np.float32)
    got = teacher_top_r(user, item, train, 7, batch_users=16)
    dense = train.toarray() > 0
    for u in range(60):
        scores = user[u] @ item.T
        order = [i for i in sorted(range(50), key=lambda i: (-scores[i], i)) if not dense[u, i]]
        assert got[u].tolist() == order[:7]
    with pytest.raises(ConfigError, match="top_r"):
        teacher_top_r(user, item, train, 51)


def overlap_at(codes_u: np.ndarray, codes_i: np.ndarray, targets: np.ndarray, train: sp.csr_matrix, r: int) -> float:
    """Mean share of the teacher's top-r among the student's Hamming top-r (seen items excluded)."""
    student = teacher_top_r(codes_u, codes_i, train, r)  # the inner product of ±1 codes is the Hamming order
    return float(np.mean([len(set(s) & set(t[:r])) / r for s, t in zip(student, targets, strict=True)]))


def test_distillation_lowers_its_loss_and_moves_the_codes_towards_the_teacher() -> None:
    train = random_interactions(3, n_users=120, n_items=80)
    rng = np.random.default_rng(4)
    teacher_u, teacher_i = rng.standard_normal((120, 6)), rng.standard_normal((80, 6))
    targets = teacher_top_r(teacher_u, teacher_i, train, 10)
    init_u, init_i = rng.standard_normal((120, 16)) * 0.1, rng.standard_normal((80, 16)) * 0.1
    before = overlap_at(np.sign(init_u), np.sign(init_i), targets, train, 10)
    res = distill_codes(init_u, init_i, targets, train, epochs=60, temperature=2.0, lr=0.05, batch_users=40, seed=0)
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < 0.9 * losses[0]
    after = overlap_at(res.user_codes, res.item_codes, targets, train, 10)
    assert after > before + 0.15
    assert set(np.unique(res.user_codes)) <= {-1.0, 1.0}
    # serving the signs of a moving average of the parameters is still a ±1 code that learns
    avg = distill_codes(
        init_u, init_i, targets, train, epochs=60, temperature=2.0, lr=0.05, batch_users=40, seed=0, ema=0.5
    )
    assert set(np.unique(avg.item_codes)) <= {-1.0, 1.0}
    assert overlap_at(avg.user_codes, avg.item_codes, targets, train, 10) > before + 0.15
    with pytest.raises(ConfigError, match="ema"):
        distill_codes(init_u, init_i, targets, train, epochs=1, ema=1.0)
    # zero epochs serve the initial codes exactly
    same = distill_codes(init_u, init_i, targets, train, epochs=0)
    assert np.array_equal(same.user_codes, np.where(init_u >= 0, 1.0, -1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_pair_check.sh runs it)")
def test_distillation_on_cuda_follows_the_cpu_run() -> None:
    train = random_interactions(7, n_users=200, n_items=90)
    rng = np.random.default_rng(8)
    tu, ti = rng.integers(-2, 3, (200, 5)).astype(np.float32), rng.integers(-2, 3, (90, 5)).astype(np.float32)
    targets = teacher_top_r(tu, ti, train, 10)
    # integer scores are exact in float32 on both devices, ties to the lower id on both
    assert np.array_equal(teacher_top_r(tu, ti, train, 10, batch_users=64, device="cuda"), targets)
    init_u, init_i = rng.standard_normal((200, 16)), rng.standard_normal((90, 16))
    kw = {"epochs": 8, "temperature": 2.0, "lr": 0.02, "batch_users": 64, "seed": 1, "positive_weight": 1.0}
    cpu = distill_codes(init_u, init_i, targets, train, **kw)
    gpu = distill_codes(init_u, init_i, targets, train, device="cuda", **kw)
    # the same user order and steps: only float rounding differs, which can flip a bit near zero
    np.testing.assert_allclose([r["loss"] for r in gpu.history], [r["loss"] for r in cpu.history], rtol=1e-3)
    assert np.mean(gpu.user_codes == cpu.user_codes) > 0.98
    assert np.mean(gpu.item_codes == cpu.item_codes) > 0.98


def test_distillation_keeps_the_best_validated_epoch_and_stops_on_patience() -> None:
    train = random_interactions(5)
    rng = np.random.default_rng(6)
    targets = teacher_top_r(rng.standard_normal((60, 4)), rng.standard_normal((50, 4)), train, 5)
    scores = iter([0.5, 0.4, 0.6, 0.55, 0.52, 0.9])  # before training, then after epochs 0, 1, 2, ...
    seen: list[np.ndarray] = []

    def validate(uc: np.ndarray, ic: np.ndarray) -> float:
        seen.append(uc.copy())
        return next(scores)

    res = distill_codes(
        rng.standard_normal((60, 8)), rng.standard_normal((50, 8)), targets, train, epochs=10, validate=validate,
        patience=2, lr=0.1,
    )  # fmt: skip
    assert res.best_epoch == 1 and res.best_score == 0.6
    assert len(res.history) == 4  # epochs 0..3: two evaluations without improvement after epoch 1
    assert np.array_equal(res.user_codes, seen[2])


def test_spectral_run_serves_the_training_free_codes_of_the_full_training_split(mirror, tmp_path: Path) -> None:
    final = train_run(config("spectral"), tmp_path / "run", progress=False)
    run = Run.load(tmp_path / "run")
    train = load_interactions("music_toy", progress=False).train
    f = spectral_factors(train, 24, power_iters=2, seed=3)
    uz, iz = embed_factors(f, 24, gamma=0.5, power=1.0)
    ux, ix = hash_vectors(uz, iz, f.item_degree, 16, 16, 4, 50, 3)
    assert run.codes.user_z.shape[1] == 24 and run.codes.bits == 16
    np.testing.assert_allclose(run.codes.user_z, uz, rtol=1e-5, atol=1e-6)
    assert np.array_equal(unpack_codes(run.codes.user_codes, 16), np.where(ux >= 0, 1.0, -1.0))
    assert np.array_equal(run.codes.item_codes, pack_codes(ix))
    assert set(final["test"]) == set(MODES) and final["serving_mode"] == "continuous"
    assert final["best_valid_recall@20"] > 0 and final["epochs_run"] == 0
    assert json.loads((tmp_path / "run" / Run.CODES_HEADER).read_text())["code_source"] == "pca-itq+popularity"
    assert run.evaluate("hierarchical", ks=[20])["recall@20"] == pytest.approx(
        final["test"]["hierarchical"]["recall@20"]
    )
    with pytest.raises(HashgnnError, match="has no network"):
        run.model()
    # A header that says the codes are sign(z) while z is wider is still refused.
    header = json.loads((tmp_path / "run" / Run.CODES_HEADER).read_text())
    header["code_source"] = "sign"
    (tmp_path / "run" / Run.CODES_HEADER).write_text(json.dumps(header))
    with pytest.raises(ArtifactError, match="signs of these vectors"):
        Run.load(tmp_path / "run")


def test_spectral_runs_with_the_bspm_filter_serve_and_fold_in_their_balanced_vectors(mirror, tmp_path: Path) -> None:
    from hashgnn.serve.foldin import SpectralFoldIn

    cfg = config("spectral")
    bspm = {"filter": "bspm", "dim": 24, "ideal_dim": 16, "sharpen": 1.5, "ideal_weight": 0.3, "out_dim": 20}
    cfg = RunConfig.from_dict({**cfg.to_dict(), "spectral": {**cfg.to_dict()["spectral"], **bspm}})
    final = train_run(cfg, tmp_path / "run", progress=False)
    run = Run.load(tmp_path / "run")
    train = load_interactions("music_toy", progress=False).train
    f = spectral_factors(train, 24, power_iters=2, seed=3)
    uz, iz = balance_embeddings(*bspm_embeddings(train, f, 24, 1.5, 0.3, 16), 20)
    assert run.codes.user_z.shape == uz.shape and uz.shape[1] == 20
    np.testing.assert_allclose(run.codes.user_z @ run.codes.item_z.T, uz @ iz.T, rtol=1e-4, atol=1e-5)
    assert run.config.spectral.filter == "bspm"
    assert final["test"]["continuous"]["recall@20"] > 0
    # a distilled run with this teacher folds in a trained user's items to that user's vector
    cfg = RunConfig.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "method": "spectral_distill"}})
    train_run(cfg, tmp_path / "distilled", progress=False)
    distilled = Run.load(tmp_path / "distilled")
    folder = SpectralFoldIn(distilled)
    for u in (0, 7, 100):
        items = train[u].indices
        z = folder.vector(items)
        np.testing.assert_allclose(z, distilled.codes.user_z[u], rtol=1e-4, atol=1e-4 * np.abs(z).max())
        code, z2 = folder.fold_in(items)
        assert code.shape == (2,) and np.array_equal(z, z2)


def test_distilled_run_refits_with_the_validated_budget(mirror, tmp_path: Path) -> None:
    final = train_run(config("spectral_distill", epochs=4, temperature=2.0), tmp_path / "run", progress=False)
    history = Run(tmp_path / "run").history
    valid_rows = [r for r in history if r["stage"] == "validation"]
    refit_rows = [r for r in history if r["stage"] != "validation"]
    assert len(valid_rows) >= 1
    best = final["best_epoch"]
    assert len(refit_rows) == best + 1  # best_epoch -1 (the start was best): no refit epochs
    if valid_rows and best >= 0:
        assert final["best_valid_recall@20"] == max(r["valid_recall@20"] for r in valid_rows if "valid_recall@20" in r)
    assert final["serving_mode"] == "hamming" and final["code_source"].startswith("rank-distilled")
    # zero epochs: the distilled method serves exactly the spectral codes
    zero = train_run(config("spectral_distill", epochs=0, valid_fraction=0.0), tmp_path / "zero", progress=False)
    ref = train_run(config("spectral", valid_fraction=0.0), tmp_path / "ref", progress=False)
    assert np.array_equal(Run.load(tmp_path / "zero").codes.item_codes, Run.load(tmp_path / "ref").codes.item_codes)
    assert zero["test"]["hamming"] == ref["test"]["hamming"]


def test_a_distilled_run_can_start_from_a_continuous_student(mirror, tmp_path: Path) -> None:
    final = train_run(
        config("spectral_distill", epochs=2, temperature=2.0, student_epochs=2), tmp_path / "run", progress=False
    )
    assert "started from a 2-epoch continuous student" in final["code_source"]
    assert final["fit_seconds"]["student"] > 0
    # the student changes the start: the initial validation codes are not the teacher's ITQ codes
    plain = train_run(config("spectral_distill", epochs=2, temperature=2.0), tmp_path / "plain", progress=False)
    assert "student" not in plain["fit_seconds"]
    assert final["initial_valid_recall@20"] != plain["initial_valid_recall@20"]
    with pytest.raises(ConfigError, match="student_epochs"):
        train_run(config("spectral_distill", epochs=1, student_epochs=-1), tmp_path / "bad", progress=False)


def test_a_validated_fit_writes_each_evaluation_to_metrics_jsonl_as_it_goes(
    mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hashgnn.train import fitted

    seen: list[list[dict]] = []  # the log's rows right after each validation, while the fit runs
    make = fitted.FitTrainer._validate_fn

    def spying(self, split):
        validate = make(self, split)
        log = self.run.file(Run.METRICS_LOG)

        def wrapped(*a):
            score = validate(*a)
            seen.append([json.loads(line) for line in log.read_text().splitlines()])
            return score

        return wrapped

    monkeypatch.setattr(fitted.FitTrainer, "_validate_fn", spying)
    final = train_run(config("spectral_distill", epochs=3, temperature=2.0), tmp_path / "run", progress=False)
    assert len(seen) >= 2
    for i, rows in enumerate(seen):  # one more row after each evaluation, its score the one returned
        assert len(rows) == i + 1 and rows[-1]["evaluation"] == i and rows[-1]["stage"].startswith("validation")
    assert max(rows[-1]["valid_recall@20"] for rows in seen) == final["best_valid_recall@20"]
    # at the end the file is the whole history: validation epochs, then the refit's
    history = Run(tmp_path / "run").history
    assert {r["stage"] for r in history} <= {"validation", "refit on the full training split"}


def test_query_vectors_learn_to_rank_the_targets_against_the_item_codes() -> None:
    train = random_interactions(3, n_users=120, n_items=80)
    rng = np.random.default_rng(4)
    teacher_u, teacher_i = rng.standard_normal((120, 6)), rng.standard_normal((80, 6))
    targets = teacher_top_r(teacher_u, teacher_i, train, 10)
    init_u, init_i = rng.standard_normal((120, 16)) * 0.1, rng.standard_normal((80, 16)) * 0.1
    kw = {"epochs": 60, "temperature": 2.0, "lr": 0.05, "batch_users": 40, "seed": 0}
    plain = distill_codes(init_u, init_i, targets, train, **kw)  # type: ignore[arg-type]
    assert plain.user_query is None
    scores: list[float] = []

    def validate_query(uq: np.ndarray, ic: np.ndarray) -> float:
        scores.append(overlap_at(uq, ic, targets, train, 10))
        return scores[-1]

    asym = distill_codes(
        init_u,
        init_i,
        targets,
        train,
        query_weight=1.0,
        validate=lambda uc, ic: overlap_at(uc, ic, targets, train, 10),
        validate_query=validate_query,
        eval_every=20,
        **kw,  # type: ignore[arg-type]
    )
    assert asym.user_query is not None and asym.user_query.shape == (120, 16)
    assert len(np.unique(asym.user_query)) > 2  # real vectors, not a code
    # every validation records the query vectors' ranking beside the codes'
    assert [r["valid_query_score"] for r in asym.history if "valid_score" in r] == scores and len(scores) == 3
    start = overlap_at(init_u, np.sign(init_i), targets, train, 10)
    query = overlap_at(asym.user_query, asym.item_codes, targets, train, 10)  # real query, +-1 item codes
    assert query > start + 0.15
    # the real query ranks the same item codes better than the user's own code does
    assert query > overlap_at(asym.user_codes, asym.item_codes, targets, train, 10)
    with pytest.raises(ConfigError, match="query_weight"):
        distill_codes(init_u, init_i, targets, train, epochs=1, query_weight=-1.0)


def test_a_run_with_query_vectors_keeps_them_as_its_continuous_vectors(mirror, tmp_path: Path) -> None:
    from hashgnn.codes.query_weights import dequantised, quantise_queries
    from hashgnn.errors import HashgnnError
    from hashgnn.index import AsymmetricIndex
    from hashgnn.index.recommend import Retriever, item_vectors_are_the_codes, modes_of
    from hashgnn.methods import ALL_MODES, MODES
    from hashgnn.serve.foldin import fold_in_for

    final = train_run(
        config("spectral_distill", epochs=3, temperature=2.0, query_weight=1.0), tmp_path / "run", progress=False
    )
    assert "query vectors" in final["code_source"]
    run = Run.load(tmp_path / "run")
    c = run.codes
    assert c.user_z.shape == (c.n_users, 16) and len(np.unique(c.user_z)) > 2
    np.testing.assert_array_equal(c.item_z, unpack_codes(c.item_codes, 16))  # the served codes as +-1
    # the continuous mode is the asymmetric score: the run's ranking is AsymmetricIndex's
    index = AsymmetricIndex(16)
    index.add(c.item_codes)
    train = run.data().train
    users = np.arange(20)
    s, _ = index.search(c.user_z[users], 10, exclude=train[users])
    ref = np.sort(np.where(train[users].toarray() > 0, -np.inf, c.user_z[users] @ c.item_z.T), axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(s, ref, rtol=1e-5, atol=1e-5)
    assert set(final["test"]) >= {"hamming", "hierarchical", "continuous"}
    # served from the codes alone, with the ranking (ties included) of the float path over +-1 vectors
    assert item_vectors_are_the_codes(c)
    served = Retriever(c, "continuous", 50, 1)
    assert isinstance(served.index, AsymmetricIndex)
    doubled = Retriever(dataclasses.replace(c, item_z=2.0 * c.item_z), "continuous", 50, 1)  # not +-1: FloatIndex
    assert not isinstance(doubled.index, AsymmetricIndex)
    all_users = np.arange(c.n_users)
    s1, i1 = served.search(all_users, 10, exclude=train)
    s2, i2 = doubled.search(all_users, 10, exclude=train)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(2.0 * s1, s2, rtol=1e-6)
    assert fold_in_for(run).query_steps == final["epochs_run"]  # folds in a query (tests/test_serve.py)
    # weighted mode: reported on test, and ranked as the quantised query's inner product, ties by
    # the run's tie order (the float path over the dequantised query, with the same item order)
    assert "weighted" in final["test"] and 0 <= final["test"]["weighted"]["recall@20"] <= 1
    assert modes_of(c) == ALL_MODES
    weighted = Retriever(c, "weighted", 50, 1)
    deq = dataclasses.replace(c, user_z=dequantised(quantise_queries(c.user_z), 16))
    float_path = Retriever(dataclasses.replace(deq, item_z=2.0 * c.item_z), "continuous", 50, 1)
    sw, iw = weighted.search(all_users, 10, exclude=train)
    sf, i_f = float_path.search(all_users, 10, exclude=train)
    np.testing.assert_array_equal(iw, i_f)
    np.testing.assert_allclose(2.0 * sw, sf, rtol=1e-6)
    # a run without query vectors does not serve it, and says why
    plain = dataclasses.replace(c, item_z=2.0 * c.item_z)
    assert modes_of(plain) == MODES
    with pytest.raises(HashgnnError, match="query_weight"):
        Retriever(plain, "weighted", 50, 1)
    # and its speed is measured beside the other modes'
    from hashgnn.experiment.qps import measure_qps

    q = measure_qps(tmp_path / "run", k=10, threads=1, repeats=1, budget_s=0.1)
    assert q["weighted_qps"] > 0 and q["weighted_qps_excluding_train"] > 0 and q["hamming_qps"] > 0
    assert q["continuous_backend"] == "asymmetric" and q["continuous_qps"] > 0


def test_query_vectors_are_refit_to_the_refined_item_codes() -> None:
    """query_refit_epochs trains the queries again against the item codes the refinement flipped:
    the codes stay as refined, the queries move and fit those codes better (the query term's loss)."""
    from hashgnn.codes.distill import teacher_top_r
    from hashgnn.train.fitted import fit_spectral_distill

    train = random_interactions(21, n_users=80, n_items=60)
    plain_cfg = config("spectral_distill", epochs=4, temperature=2.0, query_weight=1.0, refine_rounds=3)
    refit_cfg = config(
        "spectral_distill", epochs=4, temperature=2.0, query_weight=1.0, refine_rounds=3, query_refit_epochs=6
    )
    plain = fit_spectral_distill(plain_cfg, train, None, None, False)
    refit = fit_spectral_distill(refit_cfg, train, None, None, False)
    assert plain.refine is not None and plain.refine["item_flips"] > 0  # something for the queries to follow
    np.testing.assert_array_equal(refit.item_codes, plain.item_codes)
    np.testing.assert_array_equal(refit.user_codes, plain.user_codes)
    assert "query_refit" in refit.seconds and "refit to them for 6 epochs" in refit.code_source
    assert not np.allclose(refit.user_z, plain.user_z)
    teacher = fit_spectral_distill(config("spectral", epochs=1), train, None, None, False)
    targets = teacher_top_r(teacher.user_z, teacher.item_z, train, 20)

    def loss(q: np.ndarray) -> float:
        import torch

        from hashgnn.codes.distill import listwise_loss, rank_weights

        tb = torch.from_numpy(targets)
        wb = rank_weights(tb, plain_cfg.distill.decay)
        raw = torch.from_numpy(q).float() @ torch.from_numpy(plain.item_codes).float().T / 2.0
        return float(listwise_loss(raw, train, tb, tb >= 0, wb, plain_cfg.distill.positive_weight))

    assert loss(refit.user_z) < loss(plain.user_z)
