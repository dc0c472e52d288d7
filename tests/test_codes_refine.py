"""Discrete refinement of codes (hashgnn/codes/refine.py), checked against brute force.

The closed-form gains of single bit flips (users: one product per batch; items: one product over all
users) must equal the loss recomputed after actually flipping the bit; the refinement never raises
the loss, leaves no user with an improving flip, and the fit protocol keeps it only when validation
says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgnn.codes import refine as R
from hashgnn.codes.distill import teacher_top_r
from hashgnn.errors import ConfigError


def problem(seed: int, n_users: int = 12, n_items: int = 15, bits: int = 8, r: int = 5):
    rng = np.random.default_rng(seed)
    train = sp.random(n_users, n_items, density=0.2, format="csr", random_state=seed, dtype=np.float32)
    train.data[:] = 1.0
    targets = teacher_top_r(rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4)), train, r)
    user = np.where(rng.random((n_users, bits)) < 0.5, 1.0, -1.0).astype(np.float32)
    item = np.where(rng.random((n_items, bits)) < 0.5, 1.0, -1.0).astype(np.float32)
    return user, item, targets, train


def total(
    user: np.ndarray, item: np.ndarray, targets: np.ndarray, train: sp.csr_matrix, t: float, d: float, pw: float = 0.0
):
    return R.distill_loss(
        torch.from_numpy(user), torch.from_numpy(item), torch.from_numpy(targets), train, t, d, positive_weight=pw
    )


def dense_loss(user, item, targets, train, t: float, d: float, pw: float) -> np.ndarray:
    """The objective written out with dense arrays, one user at a time: the reference for the sparse one."""
    seen = train.toarray() > 0
    w = np.exp(-np.arange(targets.shape[1]) / d)
    out = []
    for u in range(user.shape[0]):
        s = (item @ user[u]).astype(np.float64) / t
        masked = np.where(seen[u], -np.inf, s)
        lp_m = masked - np.logaddexp.reduce(masked)
        lp_a = s - np.logaddexp.reduce(s)
        keep = targets[u] >= 0
        wu = w[keep] / w[keep].sum() if keep.any() else w[:0]
        loss = -(wu * lp_m[targets[u][keep]]).sum()
        own = np.flatnonzero(seen[u])
        if pw > 0 and own.size:
            loss -= pw * lp_a[own].mean()
        out.append(loss)
    return np.array(out)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), pw=st.sampled_from([0.0, 0.7]))
def test_objective_is_the_dense_loss(seed: int, pw: float) -> None:
    user, item, targets, train = problem(seed)
    got = total(user, item, targets, train, 2.0, 3.0, pw).numpy()
    np.testing.assert_allclose(got, dense_loss(user, item, targets, train, 2.0, 3.0, pw), rtol=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.sampled_from([0.5, 2.0, 8.0]), pw=st.sampled_from([0.0, 0.7]))
def test_user_flip_gains_are_the_loss_after_the_flip(seed: int, temperature: float, pw: float) -> None:
    user, item, targets, train = problem(seed)
    base = total(user, item, targets, train, temperature, 3.0, pw).numpy()
    u, it = torch.from_numpy(user), torch.from_numpy(item)
    obj = R.Objective.of(targets, train, temperature, 3.0, positive_weight=pw)
    n = user.shape[0]
    shares = [t.rows(0, n)[1] for t in obj.terms]
    gains = R._user_flip_gains(u, it, obj.scores(u, it, 0, n), obj.query(it, 0, n), shares, obj).numpy()
    for k in range(user.shape[1]):
        flipped = user.copy()
        flipped[:, k] *= -1
        np.testing.assert_allclose(
            gains[:, k], total(flipped, item, targets, train, temperature, 3.0, pw).numpy() - base, atol=1e-5
        )


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.sampled_from([1.0, 8.0]), pw=st.sampled_from([0.0, 0.7]))
def test_item_flip_gains_are_the_loss_after_the_flip(seed: int, temperature: float, pw: float) -> None:
    user, item, targets, train = problem(seed)
    base = float(total(user, item, targets, train, temperature, 3.0, pw).sum())
    obj = R.Objective.of(targets, train, temperature, 3.0, batch_users=5, positive_weight=pw)
    gains_t, now = R._item_flip_gains(torch.from_numpy(user), torch.from_numpy(item), obj)
    assert now == pytest.approx(base, rel=1e-9)  # the loss it reports is the loss before any flip
    gains = gains_t.numpy()
    for i in range(item.shape[0]):
        for k in range(item.shape[1]):
            flipped = item.copy()
            flipped[i, k] *= -1
            after = float(total(user, flipped, targets, train, temperature, 3.0, pw).sum())
            assert gains[i, k] == pytest.approx(after - base, abs=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), pw=st.sampled_from([0.0, 0.7]))
def test_refinement_lowers_the_loss_and_ends_where_no_user_flip_helps(seed: int, pw: float) -> None:
    user, item, targets, train = problem(seed, n_users=20, n_items=30)
    before = float(total(user, item, targets, train, 2.0, 3.0, pw).mean())
    u, i, stats = R.refine_codes(
        user, item, targets, train, temperature=2.0, decay=3.0, rounds=50, batch_users=7, positive_weight=pw
    )
    assert set(np.unique(u)) <= {-1.0, 1.0} and set(np.unique(i)) <= {-1.0, 1.0}
    after = total(u, i, targets, train, 2.0, 3.0, pw)
    assert stats.loss_before == pytest.approx(before) and stats.loss_after == pytest.approx(float(after.mean()))
    assert stats.loss_after <= stats.loss_before + 1e-12
    assert (stats.user_flips > 0) == (not np.array_equal(u, user)) or stats.item_flips > 0
    # the inputs are left as they were
    assert set(np.unique(user)) <= {-1.0, 1.0}
    if stats.user_flips + stats.item_flips < 50 * 30:  # converged within the rounds
        for k in range(u.shape[1]):
            flipped = u.copy()
            flipped[:, k] *= -1
            assert np.all(total(flipped, i, targets, train, 2.0, 3.0, pw).numpy() >= after.numpy() - 1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(0, 9), density=st.sampled_from([0.0, 0.1, 0.5]))
def test_the_gpu_sparse_product_is_scipys(seed: int, rows: int, density: float) -> None:
    # the refinement's query on a GPU: the torch CSR product, run here on the CPU against scipy
    rng = np.random.default_rng(seed)
    w = sp.random(rows, 13, density=density, format="csr", random_state=seed)
    dense = torch.from_numpy(rng.standard_normal((13, 5)).astype(np.float32))
    np.testing.assert_allclose(R._torch_sparse_times(w, dense).numpy(), w @ dense.double().numpy(), atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_pair_check.sh runs it)")
@pytest.mark.parametrize("pw", [0.0, 0.7])
def test_refinement_on_cuda_is_the_cpu_refinement(pw: float) -> None:
    user, item, targets, train = problem(11, n_users=300, n_items=120, bits=16, r=10)
    kw = {"temperature": 2.0, "decay": 3.0, "rounds": 4, "batch_users": 64, "positive_weight": pw}
    cu, ci, cs = R.refine_codes(user, item, targets, train, **kw)
    gu, gi, gs = R.refine_codes(user, item, targets, train, device="cuda", **kw)
    assert gs.loss_before == pytest.approx(cs.loss_before, rel=1e-9)
    assert gs.loss_after == pytest.approx(cs.loss_after, rel=1e-6)
    # float64 gains: only a near-tie between two flips could go the other way on another device
    assert np.mean(gu == cu) > 0.99 and np.mean(gi == ci) > 0.99


def test_refinement_with_zero_rounds_is_the_identity_and_bad_settings_are_refused() -> None:
    user, item, targets, train = problem(0)
    u, i, stats = R.refine_codes(user, item, targets, train, temperature=2.0, decay=3.0, rounds=0)
    assert np.array_equal(u, user) and np.array_equal(i, item) and stats.user_flips == stats.item_flips == 0
    with pytest.raises(ConfigError, match="refine_rounds"):
        R.refine_codes(user, item, targets, train, temperature=2.0, decay=3.0, rounds=-1)
    with pytest.raises(ConfigError, match="temperature"):
        R.refine_codes(user, item, targets, train, temperature=0.0, decay=3.0, rounds=1)


def test_a_run_keeps_the_refinement_only_where_validation_rises(mirror, tmp_path: Path) -> None:
    from test_fitted import config

    from hashgnn.run import Run
    from hashgnn.train.run import train_run

    cfg = config("spectral_distill", epochs=2, temperature=2.0, refine_rounds=3)
    final = train_run(cfg, tmp_path / "run", progress=False)
    v = final["validation_refine"]
    assert v["rounds"] == 3 and v["loss_after"] <= v["loss_before"]
    assert v["kept"] == (v["valid_recall@20_after"] > v["valid_recall@20_before"])
    assert final["best_valid_recall@20"] == max(v["valid_recall@20_after"], v["valid_recall@20_before"])
    assert ("refine" in final) == v["kept"]
    assert final["code_source"].endswith("refined by bit flips") == v["kept"]
    # the saved config is the user's, whatever the validation decided
    assert Run.load(tmp_path / "run").config.distill.refine_rounds == 3


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")))
def test_every_shipped_config_loads(path: Path) -> None:
    """A misspelt key or a bad value in a shipped config (e.g. a new distill field) fails here, not in a run."""
    from hashgnn.config import RunConfig

    cfg = RunConfig.load(path)
    assert cfg.data.dataset and cfg.model.bits >= 8


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.sampled_from([1.0, 4.0]))
def test_the_trained_own_items_term_is_the_refined_one(seed: int, temperature: float) -> None:
    """distill_codes trains the own-items term that the refinement lowers (the same loss, per user)."""
    from hashgnn.codes.distill import _own_items_loss

    user, item, targets, train = problem(seed)
    logits = torch.from_numpy(user @ item.T) / temperature
    trained = float(_own_items_loss(logits, train))
    own = dense_loss(user, item, targets, train, temperature, 3.0, 1.0) - dense_loss(
        user, item, targets, train, temperature, 3.0, 0.0
    )
    assert trained == pytest.approx(float(own.mean()), rel=1e-5, abs=1e-6)
