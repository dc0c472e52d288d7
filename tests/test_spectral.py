"""Spectral reference (hashgnn/model/spectral.py), ITQ codes (hashgnn/codes/itq.py), tie rules
(hashgnn/eval/ties.py): each against a dense brute-force computation of the same thing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hashgnn.codes.itq import itq_codes, itq_rotation, mips_augment, quantization_loss, random_rotation
from hashgnn.codes.packing import pack_codes
from hashgnn.data import load_interactions
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.eval import HammingScorer, InnerProductScorer, topk_items
from hashgnn.eval.ties import TieBreakScorer, popularity_ranks
from hashgnn.model.spectral import (
    balance_embeddings,
    balance_transform,
    bspm_embeddings,
    embed_factors,
    normalized_matrix,
    randomized_svd,
    sharpen_polynomial,
    spectral_embeddings,
    spectral_factors,
)


def random_interactions(seed: int, n_users: int = 40, n_items: int = 30, density: float = 0.15) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # no empty user
    return sp.csr_matrix(dense)


@pytest.fixture(scope="module")
def music_train(mirror) -> sp.csr_matrix:
    return load_interactions("music_toy", progress=False).train


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.5])
def test_normalized_matrix_is_the_dense_formula(alpha: float) -> None:
    r = random_interactions(0)
    r[:, 5] = 0  # an empty column: its degree is alpha, or 0 when alpha = 0
    r.eliminate_zeros()
    dense = r.toarray().astype(np.float64)
    du, di = dense.sum(1) + alpha, dense.sum(0) + alpha
    with np.errstate(divide="ignore"):
        iu = np.where(du > 0, du**-0.5, 0.0)
        ii = np.where(di > 0, di**-0.5, 0.0)
    np.testing.assert_allclose(normalized_matrix(r, alpha).toarray(), iu[:, None] * dense * ii[None, :], rtol=1e-12)


def test_normalized_matrix_top_singular_value_is_one() -> None:
    # alpha = 0: D_u^-1/2 R D_i^-1/2 has largest singular value exactly 1 (singular vectors sqrt(d))
    s = np.linalg.svd(normalized_matrix(random_interactions(1), 0.0).toarray(), compute_uv=False)
    assert s[0] == pytest.approx(1.0, abs=1e-12)


def test_randomized_svd_matches_dense_svd() -> None:
    # a decaying spectrum with distinct values, so the leading singular vectors are unique
    rng = np.random.default_rng(3)
    qu, _ = np.linalg.qr(rng.standard_normal((300, 200)))
    qv, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    a = sp.csr_matrix((qu * 0.9 ** np.arange(200)) @ qv.T)
    k = 12
    u, s, v = randomized_svd(a, k, oversample=40, power_iters=6, seed=3)
    ud, sd, vdt = np.linalg.svd(a.toarray(), full_matrices=False)
    np.testing.assert_allclose(s, sd[:k], rtol=1e-9)
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(v.T @ v, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(np.abs(v.T @ vdt[:k].T), np.eye(k), atol=1e-6)  # same vectors up to sign
    np.testing.assert_allclose((u * s) @ v.T, (ud[:, :k] * sd[:k]) @ vdt[:k], atol=1e-8)


def test_randomized_svd_on_music_toy(music_train: sp.csr_matrix) -> None:
    # real data, alpha = 0: the top singular value is 1 and the estimates (Ritz values) lie below
    # the true ones, approaching them as power iterations are added
    a = normalized_matrix(music_train, 0.0)
    s0 = randomized_svd(a, 16, power_iters=0, seed=0)[1]
    s4 = randomized_svd(a, 16, power_iters=4, seed=0)[1]
    assert np.all(np.diff(s4) <= 0)
    assert 0.99 < s4[0] <= 1.0 + 1e-12  # music_toy has several components: a cluster of values near 1
    assert np.all(s4 >= s0 - 1e-12) and s4.sum() > s0.sum()


def test_randomized_svd_is_exact_at_full_rank_and_seeded() -> None:
    a = normalized_matrix(random_interactions(2), 1.0)
    u, s, v = randomized_svd(a, 30, seed=5)
    np.testing.assert_allclose((u * s) @ v.T, a.toarray(), atol=1e-10)
    u2, s2, v2 = randomized_svd(a, 30, seed=5)
    assert np.array_equal(u, u2) and np.array_equal(s, s2) and np.array_equal(v, v2)
    assert (v.sum(axis=0) >= 0).all()  # the sign convention


@pytest.mark.parametrize(
    ("alpha", "beta", "gamma", "power"),
    [(0.0, 0.0, 0.0, 0.0), (0.0, 2.0, 0.5, 0.0), (2.0, 5.0, 0.25, 1.0), (1.0, 0.0, 0.0, 2.0)],
)
def test_embeddings_score_is_the_dense_filter(alpha: float, beta: float, gamma: float, power: float) -> None:
    r = random_interactions(4)
    k = 10
    user, item = spectral_embeddings(r, k, alpha=alpha, beta=beta, gamma=gamma, power=power, power_iters=8, seed=0)
    assert user.dtype == np.float32 and user.shape == (40, k) and item.shape == (30, k)
    ud, sd, vdt = np.linalg.svd(normalized_matrix(r, alpha).toarray(), full_matrices=False)
    deg_i = r.toarray().sum(0)
    dense = (ud[:, :k] * sd[:k] ** power * np.exp(beta * sd[:k])) @ vdt[:k] * deg_i[None, :] ** gamma
    np.testing.assert_allclose(user @ item.T, dense, atol=2e-5 * np.abs(dense).max())


def test_gfcf_ideal_low_pass_is_beta0_gamma_half() -> None:
    # GF-CF's ideal low-pass filter r_u D_i^-1/2 V V^T D_i^1/2 equals sqrt(d_u) <p_u, q_i>
    # for f(s) = s (power 1, beta 0) and gamma = 1/2
    r = random_interactions(6)
    dense = r.toarray().astype(np.float64)
    f = spectral_factors(r, 8, power_iters=8)
    user, item = embed_factors(f, beta=0.0, gamma=0.5, power=1.0)
    di = dense.sum(0)
    gfcf = dense @ np.diag(di**-0.5) @ f.v @ f.v.T @ np.diag(di**0.5)
    np.testing.assert_allclose(np.sqrt(dense.sum(1))[:, None] * (user @ item.T), gfcf, atol=1e-5)


def dense_t4(p: np.ndarray, h: float) -> np.ndarray:
    t = -h * p
    return np.eye(len(p)) + t + t @ t / 2 + t @ t @ t / 6 + t @ t @ t @ t / 24


@pytest.mark.parametrize(
    ("dim", "h", "weight", "ideal_dim"), [(30, 2.5, 0.2, 30), (12, 1.0, 0.5, 20), (20, 0.0, 0.0, 8)]
)
def test_bspm_embeddings_score_is_the_dense_filter(dim: int, h: float, weight: float, ideal_dim: int) -> None:
    dense = (random_interactions(5).toarray()).astype(np.float64)
    dense[:, 3] = 0.0  # an item without training interactions
    r = sp.csr_matrix(dense)
    f = spectral_factors(r, 30, power_iters=10, seed=0)
    user, item = bspm_embeddings(r, f, dim, sharpen=h, ideal_weight=weight, ideal_dim=ideal_dim)
    assert user.dtype == np.float32 and user.shape[1] == item.shape[1] == dim + (ideal_dim if weight else 0)
    norm = normalized_matrix(r).toarray()
    t4 = dense_t4(norm.T @ norm, h)  # the sharpening, with the full P
    di = dense.sum(0)
    with np.errstate(divide="ignore"):
        half, inv_half = np.diag(np.sqrt(di)), np.diag(np.where(di > 0, di**-0.5, 0.0))
    v, vi, s = f.v[:, :dim], f.v[:, :ideal_dim], f.s[:dim]
    # the linear filter on the dim triplets: T4(-hP) P_K = V g(s^2) V^T, g(x) = x T4(-hx)
    linear = (v * (s**2 * sharpen_polynomial(s**2, h))) @ v.T
    ideal = half @ vi @ vi.T @ inv_half  # Pi, applied to r as a column
    want = (linear @ dense.T + weight * t4 @ ideal @ dense.T).T
    np.testing.assert_allclose(user @ item.T, want, atol=2e-5 * np.abs(want).max())
    if dim == 30:  # all triplets (the rank): exactly BSPM, T4(-hP) (P r + w Pi r) with the full P
        exact = (t4 @ (norm.T @ norm @ dense.T + weight * ideal @ dense.T)).T
        np.testing.assert_allclose(user @ item.T, exact, atol=2e-5 * np.abs(exact).max())


def test_sharpen_polynomial_is_one_rk4_step() -> None:
    # RK4 on dy/dt = -x y from y = 1 over one step h gives T4(-h x), the Taylor polynomial of exp
    for x, h in [(0.3, 2.5), (1.0, 1.0), (0.0, 4.0)]:
        k1 = -x
        k2 = -x * (1 + h / 2 * k1)
        k3 = -x * (1 + h / 2 * k2)
        k4 = -x * (1 + h * k3)
        assert sharpen_polynomial(np.array(x), h) == pytest.approx(1 + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4))


@settings(max_examples=30, deadline=None)
@given(
    n_users=st.integers(3, 25),
    n_items=st.integers(3, 25),
    width=st.integers(1, 12),
    keep=st.integers(1, 12),
    seed=st.integers(0, 10**6),
)
# fewer users than dims: Cholesky QR once succeeded on the singular Gram matrix and kept 11 columns
@example(n_users=10, n_items=11, width=11, keep=1, seed=5503)
def test_balance_embeddings_keeps_the_scores_and_truncates_optimally(
    n_users: int, n_items: int, width: int, keep: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    user, item = rng.standard_normal((n_users, width)), rng.standard_normal((n_items, width))
    scores = user @ item.T
    full_u, full_i = balance_embeddings(user, item)
    np.testing.assert_allclose(full_u @ full_i.T, scores, atol=1e-4 * max(1.0, np.abs(scores).max()))
    top = min(width, n_users, n_items)
    d = min(keep, top)
    bu, bi = balance_embeddings(user, item, d)
    assert bu.shape == (n_users, d) and bi.shape == (n_items, d)
    # equal scale on both sides, dims in decreasing importance, the Eckart-Young error
    np.testing.assert_allclose(np.linalg.norm(bu, axis=0), np.linalg.norm(bi, axis=0), rtol=1e-3, atol=1e-4)
    assert (np.diff(np.linalg.norm(bu, axis=0)) <= 1e-4).all()
    sv = np.linalg.svd(scores, compute_uv=False)
    err = np.linalg.norm(scores - bu.astype(np.float64) @ bi.T.astype(np.float64))
    assert err == pytest.approx(np.sqrt((sv[d:] ** 2).sum()), abs=1e-3 * max(1.0, sv[0]))
    with pytest.raises(ConfigError):
        balance_embeddings(user, item, top + 1)


@pytest.mark.parametrize("seed", range(5))
def test_balance_transform_of_rank_deficient_vectors(seed: int) -> None:
    """Tall vectors of lower rank than their width (R singular: the least-squares path) keep the
    scores, in full and truncated to the rank, like full-rank ones (the triangular path), through a
    bounded transform."""
    from hashgnn.model.spectral import _qr, _solve_r

    rng = np.random.default_rng(seed)
    item = rng.standard_normal((40, 8))
    low, full = rng.standard_normal((30, 3)) @ rng.standard_normal((3, 8)), rng.standard_normal((30, 8))
    for user, dims in ((low, (None, 3)), (full, (None,))):
        scores = user @ item.T
        for d in dims:
            bu, bi = balance_embeddings(user, item, d)
            got = bu.astype(np.float64) @ bi.T.astype(np.float64)
            np.testing.assert_allclose(got, scores, atol=1e-5 * np.abs(scores).max())
        # bounded: a new user's row outside the trained span goes through T_u too (the fold-in)
        tu, ti = balance_transform(user, item)
        assert np.abs(tu).max() < 1e3 and np.abs(ti).max() < 1e3
    # the triangular solve is the pseudo-inverse where R is regular
    r = _qr(rng.standard_normal((50, 6)))[1]
    b = rng.standard_normal((6, 4))
    np.testing.assert_allclose(_solve_r(r, b), np.linalg.lstsq(r, b, rcond=None)[0], atol=1e-10)
    assert np.allclose(np.tril(r, -1), 0.0)


def test_spectral_errors() -> None:
    r = random_interactions(0)
    with pytest.raises(ConfigError):
        normalized_matrix(r, -1.0)
    with pytest.raises(ConfigError):
        randomized_svd(normalized_matrix(r), 31)
    with pytest.raises(ConfigError):
        embed_factors(spectral_factors(r, 5), dim=6)


def test_random_rotation_is_orthogonal_and_seeded() -> None:
    q = random_rotation(17, seed=1)
    np.testing.assert_allclose(q @ q.T, np.eye(17), atol=1e-12)
    assert np.array_equal(q, random_rotation(17, seed=1))
    assert not np.allclose(q, random_rotation(17, seed=2))


def test_itq_rotation_orthogonal_and_loss_never_increases() -> None:
    rng = np.random.default_rng(0)
    # points near the corners of a rotated hypercube: a rotation exists that makes the loss small
    corners = np.where(rng.random((500, 16)) < 0.5, -1.0, 1.0)
    x = (corners + 0.2 * rng.standard_normal((500, 16))) @ random_rotation(16, seed=9)
    rot, losses = itq_rotation(x, iters=30, seed=0, return_losses=True)
    np.testing.assert_allclose(rot.T @ rot, np.eye(16), atol=1e-10)
    assert len(losses) == 31
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(losses))
    assert losses[-1] < 0.5 * losses[0]  # it finds (much of) the hidden rotation
    assert quantization_loss(x, rot) == pytest.approx(losses[-1])
    rot2 = itq_rotation(x, iters=30, seed=0)
    assert np.array_equal(rot, rot2)


def test_itq_codes_shapes_and_rotation_keeps_inner_products() -> None:
    rng = np.random.default_rng(1)
    user, item = rng.standard_normal((50, 8)), rng.standard_normal((70, 8))
    uc, ic, proj = itq_codes(user, item, bits=8, iters=10, seed=0)
    assert uc.shape == (50, 8) and ic.shape == (70, 8)
    assert set(np.unique(uc)) <= {-1.0, 1.0} and set(np.unique(ic)) <= {-1.0, 1.0}
    np.testing.assert_allclose(proj @ proj.T, np.eye(8), atol=1e-10)  # bits = dims: a rotation
    # the codes are the signs of the rotated unit vectors
    un = user / np.linalg.norm(user, axis=1, keepdims=True)
    assert np.array_equal(uc, np.where(un @ proj >= 0, 1.0, -1.0))
    uc16, _, proj16 = itq_codes(user, item, bits=16, iters=10, seed=0, projection="gaussian")
    assert uc16.shape == (50, 16) and proj16.shape == (8, 16)
    with pytest.raises(ConfigError):
        itq_codes(user, item[:, :7], bits=8)
    with pytest.raises(ConfigError):
        itq_codes(user, item, bits=16)  # PCA cannot give more bits than dimensions
    with pytest.raises(ConfigError):
        itq_codes(user, item, bits=4, projection="nope")


def test_mips_augment_keeps_the_inner_product_order() -> None:
    rng = np.random.default_rng(2)
    user = rng.standard_normal((20, 6))
    item = rng.standard_normal((90, 6)) * rng.uniform(0.1, 3.0, (90, 1))
    ua, ia = mips_augment(user, item)
    np.testing.assert_allclose(np.linalg.norm(ia, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(ua, axis=1), 1.0, atol=1e-12)
    assert np.array_equal(np.argsort(-(user @ item.T), axis=1), np.argsort(-(ua @ ia.T), axis=1))


def brute_tie_top(primary: np.ndarray, secondary: np.ndarray, k: int) -> np.ndarray:
    """Top-k per row by (primary desc, secondary desc, id asc), with a plain lexsort."""
    n = primary.shape[1]
    ids = np.arange(n)
    return np.stack([np.lexsort((ids, -secondary[r], -primary[r]))[:k] for r in range(primary.shape[0])])


@pytest.mark.parametrize("rule", ["popularity", "continuous"])
def test_tie_break_scorer_against_lexsort(rule: str) -> None:
    rng = np.random.default_rng(7)
    bits, n_users, n_items = 8, 30, 200
    uc, ic = pack_codes(rng.standard_normal((n_users, bits))), pack_codes(rng.standard_normal((n_items, bits)))
    ham = HammingScorer(uc, ic, bits)
    users = np.arange(n_users)
    primary = ham(users).numpy()
    if rule == "popularity":
        train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
        ranks = popularity_ranks(train)
        deg = np.asarray(train.sum(0)).ravel()
        # equal degrees keep id order, as the lexsort's last key does
        scorer = TieBreakScorer(ham, ranks, bits, n_items)
        secondary = np.broadcast_to(deg, primary.shape)
    else:
        ue = rng.integers(0, 3, (n_users, 2)).astype(np.float32)  # few levels: ties in the secondary too
        ie = rng.integers(0, 3, (n_items, 2)).astype(np.float32)
        scorer = TieBreakScorer(ham, InnerProductScorer(ue, ie), bits, n_items)
        secondary = ue @ ie.T
    got = topk_items(scorer, users, 25, n_items=n_items)
    assert np.array_equal(got, brute_tie_top(primary, secondary, 25))


def test_tie_break_scorer_refuses_inexact_combinations() -> None:
    with pytest.raises(HashgnnError):
        TieBreakScorer(lambda u: torch.zeros(len(u), 10), np.arange(10), max_primary=2**24, n_items=10)
    s = TieBreakScorer(lambda u: torch.full((len(u), 4), 0.5), np.arange(4), max_primary=4, n_items=4)
    with pytest.raises(HashgnnError):
        s(np.arange(2))


def test_popularity_bits_add_a_monotone_prior() -> None:
    from hashgnn.codes.itq import popularity_bits

    deg = np.array([5, 1, 9, 1, 3, 9, 0, 7])
    uc, ic = popularity_bits(deg, n_users=3, bits=4)
    assert uc.shape == (3, 4) and ic.shape == (8, 4) and (uc == 1).all()
    sim = (uc @ ic.T + 4) / 2  # Hamming similarity of the extra bits alone
    assert np.all(sim[0] == sim[1])  # the same prior for every user
    order = np.argsort(deg, kind="stable")
    assert np.all(np.diff(sim[0][order]) >= 0)  # never lower for a more popular item
    assert sim[0][deg == 9].tolist() == [4, 4] and sim[0][deg == 1][0] == sim[0][deg == 1][1]
    assert sim[0].max() == 4 and sim[0].min() < 4
    assert popularity_bits(deg, 2, 0)[1].shape == (8, 0)
