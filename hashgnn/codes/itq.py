"""Binary codes from continuous user and item vectors without training: ITQ and helpers.

Iterative Quantisation (Gong & Lazebnik, CVPR 2011) looks for an orthogonal rotation ``R`` that
brings the rows of ``X`` close to the corners of the hypercube: it alternates

    B = sign(X R)                     (best codes for a fixed rotation)
    R = S W^T, where X^T B = S Sigma W^T    (orthogonal Procrustes: best rotation for fixed codes)

and each step can only lower the quantisation loss ``||B - X R||_F^2``. A rotation leaves every
inner product ``<p_u, q_i>`` unchanged, so rotating user and item vectors by the same ``R`` keeps the
continuous score and changes only what the signs lose.

Sign codes keep directions, not lengths. A score ``<p_u, q_i>`` in which the item's length carries a
popularity prior therefore loses that prior when hashed. :func:`mips_augment` is the "simple LSH"
reduction of maximum inner product search to angular search (Neyshabur & Srebro, ICML 2015): items
get an extra coordinate ``sqrt(M^2 - ||q_i||^2)`` (all of length M), users a 0, so the angle
between the augmented vectors orders items as the inner product does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hashgnn.errors import ConfigError


def _sign(x: np.ndarray) -> np.ndarray:
    # sign(0) = +1, the project's convention (hashgnn/codes/packing.py)
    return np.where(x >= 0, 1.0, -1.0)


def quantization_loss(x: np.ndarray, rotation: np.ndarray) -> float:
    """``||sign(X R) - X R||_F^2``, the loss ITQ lowers."""
    xr = np.asarray(x, np.float64) @ rotation
    return float(np.square(_sign(xr) - xr).sum())


def random_rotation(dim: int, seed: int = 0) -> np.ndarray:
    """A Haar-random (dim, dim) orthogonal matrix from a seeded generator (QR of a Gaussian)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)  # the sign fix makes the draw uniform (Haar)


def itq_rotation(
    x: np.ndarray,
    iters: int = 50,
    seed: int = 0,
    return_losses: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[float]]:
    """The ITQ rotation (dim, dim) of the rows of ``x`` (n, dim), from a seeded random start.

    ``x`` should be centred and scaled so that its entries are of order 1 (the loss, not the
    rotation, depends on the scale; see :func:`itq_codes`). With ``return_losses`` also returns the
    quantisation loss before the first and after every iteration (non-increasing).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ConfigError(f"ITQ needs a non-empty 2-D array (rows x dims), got shape {x.shape}")
    if iters < 0:
        raise ConfigError(f"ITQ iterations must be >= 0, got {iters}")
    rotation = random_rotation(x.shape[1], seed)
    losses = [quantization_loss(x, rotation)]
    for _ in range(iters):
        b = _sign(x @ rotation)
        s, _, wt = np.linalg.svd(x.T @ b)
        rotation = s @ wt
        if return_losses:
            losses.append(quantization_loss(x, rotation))
    return (rotation, losses) if return_losses else rotation


def mips_augment(user: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append one coordinate so that angles order items as inner products do (module docstring).

    Returns ``(user', item')`` of width dim + 1: ``user' = [p_u / ||p_u||, 0]`` and
    ``item' = [q_i / M, sqrt(1 - ||q_i||^2 / M^2)]`` with ``M = max_i ||q_i||``, so every item' has
    unit length and ``<user', item'> = <p_u, q_i> / (||p_u|| M)``.
    """
    user = np.asarray(user, np.float64)
    item = np.asarray(item, np.float64)
    m = float(np.linalg.norm(item, axis=1).max())
    if m == 0.0:
        raise ConfigError("all item vectors are zero; nothing to hash")
    qi = item / m
    extra = np.sqrt(np.clip(1.0 - np.square(qi).sum(axis=1), 0.0, None))
    un = np.linalg.norm(user, axis=1, keepdims=True)
    pu = user / np.where(un > 0, un, 1.0)
    return (np.hstack([pu, np.zeros((len(pu), 1))]), np.hstack([qi, extra[:, None]]))


def itq_codes(
    user: np.ndarray,
    item: np.ndarray,
    bits: int,
    iters: int = 50,
    seed: int = 0,
    projection: str = "pca",
    center: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """±1 codes (float32) of users and items from one shared projection and ITQ rotation.

    Rows are scaled to unit length first, so users and items weigh alike in the fit (a sign code
    keeps only the direction anyway). The vectors (width d) are mapped to ``bits`` dimensions by
    ``P`` (d, bits): ``projection="pca"`` takes the top-``bits`` principal directions of the stacked
    unit vectors (needs ``bits <= d``), ``"gaussian"`` a seeded Gaussian matrix (sign random
    projections, SimHash; any ``bits``). ITQ then rotates within those ``bits`` dimensions;
    ``iters=0`` leaves a Haar-random rotation. For ``bits = d`` with PCA, ``P R`` is a rotation of
    the whole space, so it keeps every inner product. ``center`` subtracts the mean (ITQ's usual
    preprocessing; it balances the bits but no longer keeps the inner product).
    Returns ``(user_codes, item_codes, P R)``.
    """
    user = np.asarray(user, np.float64)
    item = np.asarray(item, np.float64)
    if user.shape[1] != item.shape[1]:
        raise ConfigError(f"user and item vectors differ in width: {user.shape[1]} vs {item.shape[1]}")
    if bits < 1:
        raise ConfigError(f"bits must be at least 1, got {bits}")
    d = user.shape[1]

    def unit(a: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.where(n > 0, n, 1.0)

    stacked = np.vstack([unit(user), unit(item)])
    mean = stacked.mean(axis=0) if center else np.zeros(d)
    stacked = stacked - mean
    if projection == "pca":
        if bits > d:
            raise ConfigError(f"PCA projection gives at most {d} bits (the vectors' width), asked for {bits}")
        _, _, vt = np.linalg.svd(stacked, full_matrices=False)
        proj = vt[:bits].T
    elif projection == "gaussian":
        proj = np.random.default_rng(seed + 1).standard_normal((d, bits)) / np.sqrt(d)
    else:
        raise ConfigError(f"unknown projection {projection!r}; use 'pca' or 'gaussian'")
    z = stacked @ proj
    # entries of order 1, so that the loss of different widths compares
    z = z * np.sqrt(bits) / max(float(np.linalg.norm(z, axis=1).mean()), 1e-12)
    rotation = itq_rotation(z, iters=iters, seed=seed)
    full = proj @ rotation
    uc = _sign((unit(user) - mean) @ full).astype(np.float32)
    ic = _sign((unit(item) - mean) @ full).astype(np.float32)
    return uc, ic, full


def popularity_bits(item_degree: np.ndarray, n_users: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``bits`` extra code bits that add a popularity prior to the Hamming similarity.

    Sign codes lose vector lengths, and with them the item-degree factor of a spectral score.
    These bits put a coarse version back: every user has +1 in all of them, and item ``i`` has
    +1 in the first ``ceil(bits * q_i)`` of them, ``q_i`` in [0, 1] its popularity quantile
    (rank of its training degree; equal degrees share a quantile). An item thus gains up to
    ``bits`` similarity points for being popular. Returns ±1 float32 ``(user (n_users, bits),
    item (n_items, bits))``, to be stacked beside the other code bits.
    """
    if bits < 0:
        raise ConfigError(f"popularity bits must be >= 0, got {bits}")
    deg = np.asarray(item_degree, np.float64)
    # quantile by value, so that equal degrees get equal bits
    q = np.searchsorted(np.sort(deg), deg, side="right") / max(len(deg), 1)
    on = np.ceil(bits * q - 1e-9).astype(np.int64)
    item = np.where(np.arange(bits)[None, :] < on[:, None], 1.0, -1.0).astype(np.float32)
    return np.ones((n_users, bits), np.float32), item


def hash_vectors(
    user: np.ndarray,
    item: np.ndarray,
    item_degree: np.ndarray,
    bits: int,
    code_dim: int | None = None,
    popularity: int = 0,
    iters: int = 50,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Real pre-sign codes ``(user (U, bits), item (I, bits))`` of continuous vectors; serve ``sign`` of them.

    The leading ``code_dim`` dims (None: all) are hashed to ``bits - popularity`` bits by
    :func:`itq_codes` (PCA + ITQ); :func:`popularity_bits` adds ``popularity`` bits. The ITQ part is
    the rotated projection scaled to unit standard deviation, the popularity part is ±1, so the
    signs are exactly the training-free codes and the values can start a trained student
    (hashgnn/codes/distill.py).
    """
    projection = HashProjection.fit(user, item, bits, code_dim, popularity, iters, seed)
    ux, ix = projection.rows(user), projection.rows(item)
    if popularity:
        pu, pi = popularity_bits(item_degree, len(ux), popularity)
        ux, ix = np.hstack([ux, pu]), np.hstack([ix, pi])
    return ux.astype(np.float32), ix.astype(np.float32)


@dataclass
class HashProjection:
    """The map of :func:`hash_vectors` from a continuous vector to its real pre-sign code (ITQ part):
    the leading ``code_dim`` dims, scaled to unit length, times ``matrix`` (PCA + ITQ rotation),
    divided by ``scale``. Kept so that a user folded in later gets the start every trained user got."""

    matrix: np.ndarray  # (code_dim, bits - popularity)
    scale: float
    code_dim: int | None
    popularity: int

    @classmethod
    def fit(
        cls,
        user: np.ndarray,
        item: np.ndarray,
        bits: int,
        code_dim: int | None = None,
        popularity: int = 0,
        iters: int = 50,
        seed: int = 0,
    ) -> HashProjection:
        """PCA + ITQ of the stacked users and items (:func:`itq_codes`), scaled to unit standard deviation."""
        if not 0 <= popularity < bits:
            raise ConfigError(f"popularity bits must be in [0, bits) = [0, {bits}), got {popularity}")
        cu, ci = np.asarray(user, np.float64), np.asarray(item, np.float64)
        if code_dim is not None:
            if not 1 <= code_dim <= cu.shape[1]:
                raise ConfigError(f"code_dim must be in [1, {cu.shape[1]}] (the vectors' width), got {code_dim}")
            cu, ci = cu[:, :code_dim], ci[:, :code_dim]
        _, _, full = itq_codes(cu, ci, bits - popularity, iters=iters, seed=seed)
        out = cls(full, 1.0, code_dim, popularity)
        out.scale = max(float(np.vstack([out.rows(user), out.rows(item)]).std()), 1e-12)
        return out

    def rows(self, vectors: np.ndarray) -> np.ndarray:
        """The ITQ part (float64, (n, bits - popularity)) of the pre-sign codes of ``vectors``."""
        a = np.asarray(vectors, np.float64)
        if self.code_dim is not None:
            a = a[:, : self.code_dim]
        n = np.linalg.norm(a, axis=1, keepdims=True)
        return (a / np.where(n > 0, n, 1.0)) @ self.matrix / self.scale

    def user_start(self, vectors: np.ndarray) -> np.ndarray:
        """Users' real pre-sign codes, float32 (n, bits): the ITQ part, then +1 in every popularity bit."""
        x = self.rows(vectors)
        return np.hstack([x, np.ones((len(x), self.popularity))]).astype(np.float32)
