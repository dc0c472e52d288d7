"""The distillation's gradient estimators and bit penalties (hashgnn/codes/distill.py).

Checked against closed forms: the Gaussian estimator's gradient is exp(-x^2 / 2) times the upstream
gradient, the penalties are 0 for a balanced and uncorrelated code and equal their weight for a
constant one, and each penalty, trained alone, moves a code towards what it asks for. The continuous
start is the ITQ hash of the unquantised student, recomputed step by step.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hashgnn.codes.distill import (
    _ste,
    bit_penalty,
    continuous_start,
    distill_codes,
    fused_listwise_loss,
    listwise_loss,
    rank_weights,
    refit_queries,
    teacher_top_r,
)
from hashgnn.codes.itq import hash_vectors
from hashgnn.errors import ConfigError


@given(arrays(np.float32, st.integers(1, 40), elements=st.floats(-6, 6, width=32)))
@settings(max_examples=50, deadline=None)
def test_gauss_estimator_is_sign_forward_and_a_gaussian_bump_backward(x: np.ndarray) -> None:
    t = torch.tensor(x, requires_grad=True)
    up = torch.linspace(-1.0, 2.0, len(x))
    out = _ste(t, "gauss")
    assert torch.equal(out, torch.where(t >= 0, 1.0, -1.0))
    (out * up).sum().backward()
    assert t.grad is not None
    np.testing.assert_allclose(
        t.grad.numpy(), up.numpy() * np.exp(-0.5 * x.astype(np.float64) ** 2), rtol=1e-5, atol=1e-7
    )


def test_every_estimator_serves_the_sign_and_an_unknown_one_is_refused() -> None:
    x = torch.tensor([-2.0, -0.3, 0.0, 0.4, 3.0])
    for kind in ("identity", "clip", "gauss"):
        assert _ste(x, kind).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="gauss"):
        _ste(x, "fourier")


def hadamard(k: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < k:
        h = np.block([[h, h], [h, -h]])
    return h


def test_bit_penalty_is_zero_for_balanced_uncorrelated_bits_and_its_weight_for_a_constant_code() -> None:
    # the columns 1..8 of a 16 x 16 Hadamard matrix: every bit splits the rows in half, pairwise orthogonal
    good = torch.tensor(hadamard(16)[:, 1:9], dtype=torch.float32)
    assert float(bit_penalty(good, 1.0, 1.0)) == pytest.approx(0.0, abs=1e-7)
    const = torch.ones(10, 8)
    assert float(bit_penalty(const, 0.3, 0.0)) == pytest.approx(0.3)
    assert float(bit_penalty(const, 0.0, 0.7)) == pytest.approx(0.7)
    assert float(bit_penalty(const, 0.0, 0.0)) == 0.0


@given(arrays(np.int8, st.tuples(st.integers(2, 30), st.integers(2, 9)), elements=st.sampled_from([-1, 1])))
@settings(max_examples=50, deadline=None)
def test_bit_penalty_matches_a_loop_over_bits_and_pairs(b: np.ndarray) -> None:
    n, k = b.shape
    f = b.astype(np.float64)
    balance = sum(f[:, j].mean() ** 2 for j in range(k)) / k
    corr = sum((f[:, j] @ f[:, m] / n) ** 2 for j in range(k) for m in range(k) if j != m) / (k * (k - 1))
    got = float(bit_penalty(torch.tensor(f, dtype=torch.float32), 2.0, 3.0))
    assert got == pytest.approx(2.0 * balance + 3.0 * corr, rel=1e-5, abs=1e-6)


def test_the_decorrelation_penalty_alone_decorrelates_the_item_codes() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, bits = 40, 64, 8
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
    targets = teacher_top_r(rng.standard_normal((n_users, 3)), rng.standard_normal((n_items, 3)), train, 5)
    # items start with 8 noisy copies of one bit: strongly correlated. (Exact copies cannot be pulled
    # apart: the penalty's gradient is then the same for every bit, and they flip together.)
    base = rng.standard_normal((n_items, 1))
    init_i = base + 0.3 * rng.standard_normal((n_items, bits))
    init_u = rng.standard_normal((n_users, bits))

    def correlation(codes: np.ndarray) -> float:
        return float(bit_penalty(torch.tensor(codes, dtype=torch.float32), 0.0, 1.0))

    kw = {"epochs": 30, "temperature": 2.0, "lr": 0.05, "batch_users": 40, "seed": 0}
    plain = distill_codes(init_u, init_i, targets, train, **kw)  # type: ignore[arg-type]
    decor = distill_codes(init_u, init_i, targets, train, decorrelation_weight=10.0, **kw)  # type: ignore[arg-type]
    start = correlation(np.where(init_i >= 0, 1.0, -1.0))
    assert start > 0.5
    assert correlation(decor.item_codes) < 0.5 * min(start, correlation(plain.item_codes))
    with pytest.raises(ConfigError, match="decorrelation_weight"):
        distill_codes(init_u, init_i, targets, train, epochs=1, decorrelation_weight=-1.0)
    with pytest.raises(ConfigError, match=r"distill\.ste"):
        distill_codes(init_u, init_i, targets, train, epochs=1, ste="fourier")


def overlap(user: np.ndarray, item: np.ndarray, targets: np.ndarray, train: sp.csr_matrix) -> float:
    """Mean share of each user's targets among the top len(targets) items of <user, item>."""
    r = targets.shape[1]
    top = teacher_top_r(np.sign(user), np.sign(item), train, r)
    return float(np.mean([len(set(a) & set(b)) / r for a, b in zip(top, targets, strict=True)]))


def test_continuous_start_is_the_itq_hash_of_the_unquantised_student_and_ranks_closer() -> None:
    rng = np.random.default_rng(5)
    n_users, n_items, bits = 90, 70, 16
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
    targets = teacher_top_r(rng.standard_normal((n_users, 5)), rng.standard_normal((n_items, 5)), train, 10)
    init_u, init_i = rng.standard_normal((n_users, bits)) * 0.1, rng.standard_normal((n_items, bits)) * 0.1
    kw = {"temperature": 2.0, "lr": 0.05, "batch_users": 30}
    su, si = continuous_start(init_u, init_i, targets, train, epochs=40, popularity=2, seed=1, **kw)  # type: ignore[arg-type]
    student = distill_codes(init_u, init_i, targets, train, epochs=40, ste="none", seed=1, **kw)  # type: ignore[arg-type]
    # the student is real-valued (nothing quantised), and the start is its PCA + ITQ + popularity hash
    assert len(np.unique(student.item_codes)) > 2
    degree = np.asarray(train.sum(axis=0)).ravel()
    ru, ri = hash_vectors(student.user_codes, student.item_codes, degree, bits, None, 2, 50, 1)
    np.testing.assert_array_equal(su, ru)
    np.testing.assert_array_equal(si, ri)
    assert su.shape == (n_users, bits) and si.shape == (n_items, bits)
    # its signs rank the targets far better than the start the student came from
    assert overlap(su, si, targets, train) > overlap(init_u, init_i, targets, train) + 0.15
    with pytest.raises(ConfigError, match="student_epochs"):
        continuous_start(init_u, init_i, targets, train, epochs=0)


def test_each_diagnostic_lifts_one_constraint_of_the_codes_and_serves_what_it_trained() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, bits = 60, 50, 8
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
    targets = teacher_top_r(rng.standard_normal((n_users, 4)), rng.standard_normal((n_items, 4)), train, 8)
    init_u, init_i = rng.standard_normal((n_users, bits)), rng.standard_normal((n_items, bits))
    kw = {"temperature": 2.0, "lr": 0.05, "batch_users": 20, "epochs": 5, "seed": 3}

    def is_sign(a: np.ndarray) -> bool:
        return bool(np.isin(a, (-1.0, 1.0)).all())

    sphere = distill_codes(init_u, init_i, targets, train, ste="sphere", **kw)  # type: ignore[arg-type]
    for side in (sphere.user_codes, sphere.item_codes):
        assert not is_sign(side)
        np.testing.assert_allclose(np.linalg.norm(side, axis=1), np.sqrt(bits), rtol=1e-5)
    items = distill_codes(init_u, init_i, targets, train, ste="items-only", **kw)  # type: ignore[arg-type]
    assert is_sign(items.item_codes) and not is_sign(items.user_codes)
    users = distill_codes(init_u, init_i, targets, train, ste="users-only", **kw)  # type: ignore[arg-type]
    assert is_sign(users.user_codes) and not is_sign(users.item_codes)
    scaled = distill_codes(init_u, init_i, targets, train, ste="scaled-2", **kw)  # type: ignore[arg-type]
    for side in (scaled.user_codes, scaled.item_codes):
        halves = side.reshape(len(side), 2, bits // 2)
        assert not is_sign(side)
        # within a segment every entry has one magnitude, the segment's scale, and the sign of the code
        np.testing.assert_allclose(np.abs(halves), np.abs(halves[:, :, :1]).repeat(bits // 2, axis=2), rtol=1e-6)
        assert (np.abs(halves[:, 0, 0]) != np.abs(halves[:, 1, 0])).any()  # two scales, not one
    # each trained: its loss fell from the first epoch to the last
    for res in (sphere, items, users, scaled):
        assert res.history[-1]["loss"] < res.history[0]["loss"]
    with pytest.raises(ConfigError, match="divisible"):
        distill_codes(init_u, init_i, targets, train, ste="scaled-16", **kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ste"):
        distill_codes(init_u, init_i, targets, train, ste="half", **kw)  # type: ignore[arg-type]


@given(
    st.integers(1, 9),
    st.integers(2, 40),
    st.integers(1, 8),
    st.sampled_from([0.0, 0.3, 1.0]),
    st.sampled_from([0.0, 0.5, 2.0]),
    st.integers(0, 2**31 - 1),
)
@settings(max_examples=60, deadline=None)
def test_the_fused_loss_and_its_gradient_equal_autograd_through_listwise_loss(
    n_users: int, n_items: int, r: int, positive_weight: float, query_weight: float, seed: int
) -> None:
    """distill_codes' fused block against the plain listwise loss differentiated by autograd: loss and
    the gradients of the user rows, the query rows and the items, with rows that have every item seen,
    no item seen, and fewer valid targets than slots."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < rng.uniform(0.0, 0.6)
    dense[0] = rng.random() < 0.5  # a row with every item seen or none
    rows = sp.csr_matrix(dense.astype(np.float32))
    r = min(r, n_items)
    t = np.full((n_users, r), -1, np.int64)
    for u in range(n_users):
        unseen = rng.permutation(np.flatnonzero(~dense[u]))[: rng.integers(0, r + 1)]
        t[u, : len(unseen)] = unseen
    tb = torch.from_numpy(t)
    wb = torch.where(tb >= 0, torch.exp(-torch.arange(r) / 3.0), 0.0)
    wb = wb / wb.sum(1, keepdim=True).clamp(min=1e-12)
    xu, xq = (torch.from_numpy(rng.standard_normal((n_users, 6)).astype(np.float32) * 3) for _ in range(2))
    it = torch.from_numpy(rng.standard_normal((n_items, 6)).astype(np.float32))

    ref_in = [x.clone().requires_grad_() for x in (xu, xq, it)]
    ref = listwise_loss(ref_in[0] @ ref_in[2].T, rows, tb, tb >= 0, wb, positive_weight)
    if query_weight:
        ref = ref + query_weight * listwise_loss(ref_in[1] @ ref_in[2].T, rows, tb, tb >= 0, wb, positive_weight)
    ref.backward()
    got_in = [x.clone().requires_grad_() for x in (xu, xq, it)]
    blocks = [(got_in[0], 1.0)] + ([(got_in[1], query_weight)] if query_weight else [])
    got = fused_listwise_loss(blocks, got_in[2], rows, tb, wb, positive_weight)
    got.backward()
    np.testing.assert_allclose(float(got.detach()), float(ref.detach()), rtol=1e-5, atol=1e-5)
    for a, b in zip(ref_in, got_in, strict=True):
        if a.grad is None:  # the query rows when query_weight is 0
            assert b.grad is None
            continue
        assert b.grad is not None
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("query_weight", [0.0, 1.0])
def test_the_fused_step_trains_as_the_autograd_reference_does(query_weight: float) -> None:
    """distill_codes with the fused loss and Adam against fused=False (autograd, unfused Adam): the
    same losses epoch by epoch and the same codes and queries, up to rounding."""
    rng = np.random.default_rng(11)
    n_users, n_items, bits = 60, 80, 12
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.15).astype(np.float32))
    targets = teacher_top_r(rng.standard_normal((n_users, 6)), rng.standard_normal((n_items, 6)), train, 10)
    init_u, init_i = rng.standard_normal((n_users, bits)), rng.standard_normal((n_items, bits))
    kw = {"epochs": 6, "temperature": 2.0, "lr": 0.02, "batch_users": 16, "positive_weight": 0.5, "seed": 3}
    ref = distill_codes(init_u, init_i, targets, train, query_weight=query_weight, fused=False, **kw)  # type: ignore[arg-type]
    got = distill_codes(init_u, init_i, targets, train, query_weight=query_weight, **kw)  # type: ignore[arg-type]
    np.testing.assert_allclose([h["loss"] for h in got.history], [h["loss"] for h in ref.history], rtol=1e-4)
    # a bit whose parameter sits within rounding of 0 may flip; nearly all must agree
    assert np.mean(got.user_codes == ref.user_codes) > 0.99
    assert np.mean(got.item_codes == ref.item_codes) > 0.99
    if query_weight:
        assert got.user_query is not None and ref.user_query is not None
        np.testing.assert_allclose(got.user_query, ref.user_query, rtol=1e-3, atol=1e-4)
    else:
        assert got.user_query is None


def _query_loss(
    q: np.ndarray, items: np.ndarray, targets: np.ndarray, train: sp.csr_matrix, t: float, pw: float
) -> float:
    """The query term's loss over all users at once (listwise_loss, the autograd reference)."""
    tb = torch.from_numpy(targets)
    raw = torch.from_numpy(q).float() @ torch.from_numpy(items).float().T / t
    return float(listwise_loss(raw, train, tb, tb >= 0, rank_weights(tb, 20.0), pw))


def test_refit_queries_follows_flipped_item_bits_and_lowers_the_loss() -> None:
    rng = np.random.default_rng(13)
    n_users, n_items, bits = 70, 90, 12
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.12).astype(np.float32))
    targets = teacher_top_r(rng.standard_normal((n_users, 6)), rng.standard_normal((n_items, 6)), train, 10)
    init_u, init_i = rng.standard_normal((n_users, bits)), rng.standard_normal((n_items, bits))
    kw = {"temperature": 2.0, "lr": 0.02, "batch_users": 16, "positive_weight": 0.5, "seed": 3}
    got = distill_codes(init_u, init_i, targets, train, epochs=8, query_weight=1.0, **kw)  # type: ignore[arg-type]
    assert got.user_query is not None
    # a refinement flipped some item bits the queries were trained against
    items = got.item_codes * np.where(rng.random(got.item_codes.shape) < 0.15, -1.0, 1.0)
    before = _query_loss(got.user_query, items, targets, train, 2.0, 0.5)
    same = refit_queries(got.user_query, items, targets, train, epochs=0, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(same, got.user_query)
    refit = refit_queries(got.user_query, items, targets, train, epochs=10, **kw)  # type: ignore[arg-type]
    assert refit.shape == got.user_query.shape and refit.dtype == np.float32
    assert _query_loss(refit, items, targets, train, 2.0, 0.5) < before - 0.01
    # the same seed, the same refit
    again = refit_queries(got.user_query, items, targets, train, epochs=10, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again, refit)
    with pytest.raises(ConfigError, match="query_refit_epochs"):
        refit_queries(got.user_query, items, targets, train, epochs=-1)
