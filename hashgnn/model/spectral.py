"""Training-free spectral recommenders: user and item vectors from a truncated SVD of the
normalised interaction matrix.

With ``R`` the (n_users, n_items) 0/1 training matrix and ``d_u``, ``d_i`` its row and column sums,
the renormalised matrix is

    R~ = (D_u + alpha I)^{-1/2} R (D_i + alpha I)^{-1/2}          (alpha = 0: the LightGCN matrix)

and ``R~ ~= U_K diag(s) V_K^T`` its K leading singular triplets. The served score of item ``i`` for
user ``u`` is an inner product ``<p_u, q_i>`` with

    p_u = U_K[u] * w,    q_i = V_K[i] * w * d_i^gamma,    w_k = sqrt(f(s_k)),  f(s) = s^power exp(beta s)

so ``<p_u, q_i> = sum_k U[u,k] f(s_k) V[i,k] d_i^gamma``. This covers:

- SVD-GCN-S (Peng et al., CIKM 2022): ``alpha`` renormalisation, ``f(s) = exp(beta s)``, gamma = 0;
- the ideal low-pass filter of GF-CF (Shen et al., CIKM 2021), ``D_i^{-1/2} V V^T D_i^{1/2}`` applied
  to the user's row ``r_u``: power = 1, beta = 0, gamma = 1/2, since
  ``r_u D_i^{-1/2} V = d_u^{1/2} U[u] diag(s)`` and the factor ``d_u^{1/2}`` does not change a ranking;
- plain truncated SVD of R~: power = 1, beta = 0, gamma = 0; the bare projection U V^T: power = 0.

:func:`bspm_embeddings` gives a second filter in the same embedding form: BSPM's blur (the linear
filter ``R~^T R~`` plus a weighted ideal low-pass filter) and one RK4 sharpening step (Choi et al.,
SIGIR 2023), with :func:`balance_embeddings` to order and shorten its concatenated parts.

The vectors are an embedding form (the score is their inner product), so they can be hashed like any
trained model's (hashgnn/codes/itq.py). Everything is vectorised sparse/dense linear algebra; the SVD
is a seeded randomised range finder (Halko, Martinsson & Tropp 2011), so a seed fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from hashgnn.errors import ConfigError


@dataclass(frozen=True)
class SpectralFactors:
    """The K leading singular triplets of the normalised matrix, largest first, and the degrees."""

    u: np.ndarray  # (n_users, K) float64, orthonormal columns
    s: np.ndarray  # (K,) float64, descending
    v: np.ndarray  # (n_items, K) float64, orthonormal columns
    user_degree: np.ndarray  # (n_users,) training degrees
    item_degree: np.ndarray  # (n_items,)
    alpha: float


def normalized_matrix(train: sp.spmatrix, alpha: float = 0.0) -> sp.csr_matrix:
    """``(D_u + alpha)^{-1/2} R (D_i + alpha)^{-1/2}`` as float64 CSR; rows/columns of degree 0 stay 0."""
    if alpha < 0:
        raise ConfigError(f"the renormalisation alpha must be >= 0, got {alpha}")
    r = sp.csr_matrix(train, dtype=np.float64)
    r.data[:] = 1.0  # implicit feedback: any stored entry is one interaction
    du = np.asarray(r.sum(axis=1)).ravel() + alpha
    di = np.asarray(r.sum(axis=0)).ravel() + alpha
    # degree 0 (and alpha 0) would divide by zero; such rows and columns are empty anyway
    inv_u = np.where(du > 0, 1.0 / np.sqrt(np.where(du > 0, du, 1.0)), 0.0)
    inv_i = np.where(di > 0, 1.0 / np.sqrt(np.where(di > 0, di, 1.0)), 0.0)
    return sp.csr_matrix(sp.diags(inv_u) @ r @ sp.diags(inv_i))


def _qr(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, R)`` with ``x = Q R``, Q's columns orthonormal, for ``x`` (n, w): Cholesky QR, twice.

    Two passes of Q = X L^-T (X^T X = L L^T) are as accurate as Householder QR for the
    well-conditioned blocks a range finder produces, and about 3x faster here (a Gram product and
    a triangular solve are BLAS-3); R is the product of the two passes' factors (square, upper
    triangular). Householder QR where the Gram matrix is singular (Cholesky fails) or ``x`` has
    fewer rows than columns (then R is (n, w)).
    """
    q = np.asarray(x, np.float64)
    if q.shape[0] < q.shape[1]:
        # wider than tall: the Gram matrix is singular, and Cholesky can still succeed on its
        # round-off and return more columns than the rank (a hypothesis case found it)
        return np.linalg.qr(q)
    r = np.eye(q.shape[1])
    try:
        for _ in range(2):
            chol = np.linalg.cholesky(q.T @ q)
            q = sla.solve_triangular(chol, q.T, lower=True).T
            r = chol.T @ r
    except np.linalg.LinAlgError:
        return np.linalg.qr(np.asarray(x, np.float64))
    return q, r


def _orthonormalize(x: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of ``x`` (n, w), n >> w: the Q of :func:`_qr`."""
    return _qr(x)[0]


def _solve_r(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``R^+ b`` for a factor R of :func:`_qr`: a triangular solve where R is square and not
    numerically singular, least squares otherwise (rank-deficient or wide inputs)."""
    if r.shape[0] == r.shape[1]:
        d = np.abs(np.diagonal(r))
        if d.size and d.min() > 1e-10 * d.max():
            return sla.solve_triangular(r, b, lower=False)
    return np.linalg.lstsq(r, b, rcond=None)[0]


def randomized_svd(
    matrix: sp.spmatrix | np.ndarray,
    k: int,
    oversample: int = 32,
    power_iters: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` leading singular triplets ``(U (m,k), s (k,), V (n,k))`` of ``matrix``, s descending.

    A seeded Gaussian range finder with ``power_iters`` QR-stabilised power iterations: the same
    inputs and seed give the same result. Signs are fixed so that each column of V has a positive
    sum of entries (an SVD is defined only up to the sign of each pair of singular vectors).
    """
    m, n = matrix.shape
    if not 1 <= k <= min(m, n):
        raise ConfigError(f"the number of singular vectors must be in [1, {min(m, n)}], got {k}")
    a = sp.csr_matrix(matrix, dtype=np.float64) if sp.issparse(matrix) else np.asarray(matrix, np.float64)
    at = a.T.tocsr() if sp.issparse(a) else a.T
    width = min(k + oversample, m, n)
    rng = np.random.default_rng(seed)
    q = _orthonormalize(np.asarray(a @ rng.standard_normal((n, width))))
    for _ in range(power_iters):
        # re-orthonormalise after each product: without it the columns collapse onto s_1
        z = _orthonormalize(np.asarray(at @ q))
        q = _orthonormalize(np.asarray(a @ z))
    b = np.asarray(at @ q).T  # (width, n) = Q^T A
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    u = q @ ub[:, :k]
    v = vt[:k].T
    s = s[:k]
    flip = np.where(v.sum(axis=0) < 0, -1.0, 1.0)
    return u * flip, s, v * flip


def spectral_factors(
    train: sp.spmatrix,
    k: int,
    alpha: float = 0.0,
    oversample: int = 32,
    power_iters: int = 4,
    seed: int = 0,
) -> SpectralFactors:
    """The ``k`` leading singular triplets of :func:`normalized_matrix` ``(train, alpha)``."""
    r = sp.csr_matrix(train)
    norm = normalized_matrix(r, alpha)
    u, s, v = randomized_svd(norm, k, oversample=oversample, power_iters=power_iters, seed=seed)
    ones = r.copy()
    ones.data[:] = 1.0
    return SpectralFactors(
        u=u,
        s=s,
        v=v,
        user_degree=np.asarray(ones.sum(axis=1)).ravel(),
        item_degree=np.asarray(ones.sum(axis=0)).ravel(),
        alpha=float(alpha),
    )


def embed_factors(
    factors: SpectralFactors,
    dim: int | None = None,
    beta: float = 0.0,
    gamma: float = 0.0,
    power: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """User and item vectors (float32) whose inner product is the spectral score (module docstring).

    ``dim`` takes the leading ``dim`` triplets (default all). The spectral weight
    ``f(s) = s^power exp(beta s)`` is split evenly between the two sides, so the user and item vectors have comparable scales
    (which matters when each side is hashed on its own); the item-degree factor ``d_i^gamma`` goes
    to the item side, where it acts as a popularity prior.
    """
    k = factors.s.shape[0] if dim is None else int(dim)
    if not 1 <= k <= factors.s.shape[0]:
        raise ConfigError(f"dim must be in [1, {factors.s.shape[0]}] (the factors computed), got {dim}")
    s = np.maximum(factors.s[:k], 0.0)
    w = np.sqrt(np.power(s, power) * np.exp(beta * s))
    user = factors.u[:, :k] * w
    pop = np.power(np.maximum(factors.item_degree, 1.0), gamma)[:, None]
    item = factors.v[:, :k] * w * pop
    return user.astype(np.float32), item.astype(np.float32)


def spectral_embeddings(
    train: sp.spmatrix,
    dim: int,
    alpha: float = 0.0,
    beta: float = 0.0,
    gamma: float = 0.0,
    power: float = 0.0,
    power_iters: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Training-free user and item vectors (float32, width ``dim``) of the spectral recommender.

    ``alpha``: renormalisation of the degrees; ``beta``, ``power``: the filter
    ``f(s) = s^power exp(beta s)``; ``gamma``: item-degree exponent. See the module docstring.
    """
    factors = spectral_factors(train, dim, alpha=alpha, power_iters=power_iters, seed=seed)
    return embed_factors(factors, beta=beta, gamma=gamma, power=power)


def sharpen_polynomial(x: np.ndarray, h: float) -> np.ndarray:
    """``T4(-h x) = 1 - hx + (hx)^2/2 - (hx)^3/6 + (hx)^4/24``: one Runge-Kutta-4 step of ``dy/dt = -x y``."""
    t = -h * np.asarray(x, np.float64)
    return 1.0 + t + t**2 / 2.0 + t**3 / 6.0 + t**4 / 24.0


def _sharpen(norm: sp.csr_matrix, y: np.ndarray, h: float) -> np.ndarray:
    """``T4(-h P) y`` with ``P = R~^T R~`` (items x items), never formed: one RK4 step of ``dy/dt = -P y``."""
    norm_t = norm.T.tocsr()

    def minus_p(x: np.ndarray) -> np.ndarray:
        return -np.asarray(norm_t @ (norm @ x))

    k1 = minus_p(y)
    k2 = minus_p(y + h / 2.0 * k1)
    k3 = minus_p(y + h / 2.0 * k2)
    k4 = minus_p(y + h * k3)
    return y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _check_bspm(factors: SpectralFactors, dim: int | None, sharpen: float, ideal_dim: int) -> int:
    k = factors.s.shape[0] if dim is None else int(dim)
    if not 1 <= k <= factors.s.shape[0]:
        raise ConfigError(f"dim must be in [1, {factors.s.shape[0]}] (the factors computed), got {dim}")
    if not 0 <= ideal_dim <= factors.s.shape[0]:
        raise ConfigError(f"ideal_dim must be in [0, {factors.s.shape[0]}] (the factors computed), got {ideal_dim}")
    if sharpen < 0:
        raise ConfigError(f"the sharpening time must be >= 0, got {sharpen}")
    return k


def _degree_roots(factors: SpectralFactors) -> tuple[np.ndarray, np.ndarray]:
    di = factors.item_degree + factors.alpha
    half = np.sqrt(np.maximum(di, 0.0))
    return half, np.where(di > 0, 1.0 / np.where(di > 0, half, 1.0), 0.0)


def bspm_user_map(
    factors: SpectralFactors,
    dim: int | None = None,
    sharpen: float = 2.5,
    ideal_weight: float = 0.2,
    ideal_dim: int = 448,
) -> np.ndarray:
    """The (n_items, width) float64 matrix ``M`` with ``p_u = r_u M`` in :func:`bspm_embeddings`.

    A user's vector is linear in its 0/1 row, so a user the fit never saw is folded in as the sum of
    ``M``'s rows of its items (hashgnn/serve/foldin.py).
    """
    k = _check_bspm(factors, dim, sharpen, ideal_dim)
    x = np.maximum(factors.s[:k], 0.0) ** 2
    parts = [factors.v[:, :k] * (x * sharpen_polynomial(x, sharpen))]
    if ideal_dim > 0 and ideal_weight != 0:
        parts.append(ideal_weight * factors.v[:, :ideal_dim] * _degree_roots(factors)[1][:, None])
    return np.hstack(parts)


def bspm_embeddings(
    train: sp.spmatrix,
    factors: SpectralFactors,
    dim: int | None = None,
    sharpen: float = 2.5,
    ideal_weight: float = 0.2,
    ideal_dim: int = 448,
) -> tuple[np.ndarray, np.ndarray]:
    """User and item vectors (float32) whose inner product is a BSPM-style score, in embedding form.

    BSPM (Choi et al., SIGIR 2023) blurs a user's row ``r`` with the linear filter ``P = R~^T R~`` and
    the ideal low-pass filter ``Pi = D_i^1/2 V V^T D_i^-1/2``, then sharpens with one RK4 step of
    ``dy/dt = -P y`` over time ``h``; one RK4 step is exactly the polynomial ``T4(-h P)``, so

        score(u) = T4(-h P) (P r + ideal_weight Pi_{ideal_dim} r).

    With ``P ~= V diag(s^2) V^T`` on the ``dim`` leading triplets (``g(x) = x T4(-h x)``) this is
    ``<p_u, q_i>`` for

        p_u = [ (V^T r) g(s^2),  ideal_weight V_I^T D_i^-1/2 r ],    q_i = [ V,  T4(-h P) D_i^1/2 V_I ]

    where ``V_I`` are the ``ideal_dim`` leading right singular vectors and ``T4(-h P) D_i^1/2 V_I`` is
    computed exactly with the sparse ``P``. Only the linear filter is truncated (to ``dim``
    triplets); BSPM's own code applies it in full, which is not an embedding. Width:
    ``dim + ideal_dim``; :func:`balance_embeddings` orders and shortens it.
    """
    k = _check_bspm(factors, dim, sharpen, ideal_dim)
    r = sp.csr_matrix(train, dtype=np.float64)
    r.data[:] = 1.0
    user = np.asarray(r @ bspm_user_map(factors, k, sharpen, ideal_weight, ideal_dim))
    item_parts = [factors.v[:, :k]]
    if ideal_dim > 0 and ideal_weight != 0:
        half = _degree_roots(factors)[0]
        item_parts.append(
            _sharpen(normalized_matrix(r, factors.alpha), factors.v[:, :ideal_dim] * half[:, None], sharpen)
        )
    return user.astype(np.float32), np.hstack(item_parts).astype(np.float32)


def balance_transform(user: np.ndarray, item: np.ndarray, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Matrices ``(T_u, T_i)`` (width, dim) such that ``user @ T_u`` and ``item @ T_i`` are
    :func:`balance_embeddings` ``(user, item, dim)``.

    With ``user = Q_u R_u`` and ``item = Q_i R_i`` (QR) and ``R_u R_i^T = A diag(c) B^T`` (SVD),
    ``T_u = R_u^+ A c^1/2`` and ``T_i = R_i^+ B c^1/2`` (``+``: pseudo-inverse, exact for full column
    rank). A new user's row maps through ``T_u`` like the trained ones (hashgnn/serve/foldin.py).
    """
    u = np.asarray(user, np.float64)
    it = np.asarray(item, np.float64)
    if u.shape[1] != it.shape[1]:
        raise ConfigError(f"user and item vectors differ in width: {u.shape[1]} and {it.shape[1]}")
    # Only the R factors are needed (Q_u = u R_u^+ is never formed); from the QR itself, R is
    # triangular, so the pseudo-inverses are triangular solves instead of least squares.
    ru, ri = _qr(u)[1], _qr(it)[1]
    top = min(ru.shape[0], ri.shape[0])
    d = top if dim is None else int(dim)
    if not 1 <= d <= top:
        raise ConfigError(f"the balanced width must be in [1, {top}] (the rank bound of the vectors), got {dim}")
    a, c, bt = np.linalg.svd(ru @ ri.T)
    root = np.sqrt(c[:d])
    tu = _solve_r(ru, a[:, :d] * root)
    ti = _solve_r(ri, bt[:d].T * root)
    flip = np.where((it @ ti).sum(axis=0) < 0, -1.0, 1.0)  # the sign convention of randomized_svd
    return tu * flip, ti * flip


def balance_embeddings(user: np.ndarray, item: np.ndarray, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same scores ``user @ item.T`` from vectors whose dims are ordered by importance, first ``dim`` kept.

    The vectors ``Q_u A c^1/2`` and ``Q_i B c^1/2`` of :func:`balance_transform` have the same inner
    products as ``user`` and ``item``, equal scale on both sides and dims in decreasing order of
    ``c``; keeping ``dim`` of them is the best rank-``dim`` approximation of the score matrix
    (Eckart-Young). Hashing the leading dims (hashgnn/codes/itq.py) needs this order; a filter built
    from concatenated parts does not have it.
    """
    tu, ti = balance_transform(user, item, dim)
    return _transformed(user, tu), _transformed(item, ti)


def _transformed(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float64) @ t).astype(np.float32)


def bspm_vectors(
    train: sp.spmatrix,
    factors: SpectralFactors,
    dim: int | None = None,
    sharpen: float = 2.5,
    ideal_weight: float = 0.2,
    ideal_dim: int = 448,
    out_dim: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The served ``bspm`` model: balanced user and item vectors (float32, width ``out_dim``) and the
    user side's balancing ``T_u`` (float64), with which a new user's vector is
    ``r @ bspm_user_map(...) @ T_u`` (hashgnn/serve/foldin.py).

    :func:`bspm_embeddings` balanced by :func:`balance_transform`. The map itself (n_items rows) is
    left to the fold-in, the one caller that needs it.
    """
    user, item = bspm_embeddings(train, factors, dim, sharpen, ideal_weight, ideal_dim)
    tu, ti = balance_transform(user, item, out_dim)
    return _transformed(user, tu), _transformed(item, ti), tu
