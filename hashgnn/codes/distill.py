"""Codes trained to rank like a continuous teacher: listwise ranking distillation through sign.

The student is one free real vector per user and per item (``x_u``, ``x_i``, width ``bits``), served as
``b = sign(x)``; the served score is ``<b_u, b_i> = bits - 2 Hamming(b_u, b_i)``. For each user the
teacher's ``R`` best unseen items ``t_1..t_R`` are targets with weights ``w_r ∝ exp(-r / lambda)``
(BiGeaR's ranking-aware distillation, Chen et al., KDD 2022), and the loss is the weighted listwise
cross-entropy of a softmax over all the user's unseen items (seen items are masked, as they are when
recommendations are served)::

    loss_u = - sum_r w_r log softmax_i( <b_u, b_i> / T )[t_r]

With ``positive_weight`` p > 0 a second term has the user's own training items as targets (weight
``p / n_u`` each) against a softmax over all items, seen ones included::

    loss_u += - (p / n_u) sum_{i in train(u)} log softmax_i( <b_u, b_i> / T )[i]

(the objective of :class:`hashgnn.codes.refine.Objective`, which the refinement lowers).

The gradient reaches ``x`` through the straight-through estimator: identity, zero where ``|x| > 1``
(``clip``), or a Gaussian approximation of sign's derivative, ``exp(-x^2 / 2)`` (``gauss``).
Optional penalties on the item codes (:func:`bit_penalty`) ask for balanced and uncorrelated bits. The temperature ``T`` matters because ``<b_u, b_i>`` spans ``[-bits, bits]``: at
``T = 1`` a 64-bit score saturates the softmax. The student starts from the teacher's own codes
(the ITQ projection, hashgnn/codes/itq.py), so epoch 0 serves exactly the training-free codes.

Every step scores a batch of users against every item (one ``(B, I)`` block), so there is no
negative sampling and no Python loop per user or interaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.arrays import repeat_rows
from hashgnn.errors import ConfigError


def teacher_top_r(
    user: np.ndarray,
    item: np.ndarray,
    train: sp.csr_matrix,
    r: int,
    batch_users: int = 2048,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The ``r`` best items of every user by ``<user, item>``, seen items excluded: (U, r) int64, best first.

    Ties go to the lower item id (:mod:`hashgnn.index.topk`); a user with fewer than ``r`` unseen
    items gets ``-1`` in the tail. ``device`` is where the scores are computed (e.g. ``"cuda"``).
    """
    from hashgnn.index.topk import mask_, topk_desc

    n_users, n_items = train.shape
    if not 1 <= r <= n_items:
        raise ConfigError(f"distill.top_r must be in [1, {n_items}] (the item count), got {r}")
    dev = torch.device(device)
    ut, it = (
        torch.from_numpy(np.ascontiguousarray(user, np.float32)).to(dev),
        torch.from_numpy(np.ascontiguousarray(item, np.float32)).to(dev),
    )
    out = np.empty((n_users, r), np.int64)
    for s in range(0, n_users, batch_users):
        e = min(n_users, s + batch_users)
        scores = mask_(ut[s:e] @ it.T, train[s:e])
        out[s:e] = topk_desc(scores, r).cpu().numpy()
    return out


class _GaussSign(torch.autograd.Function):
    """sign forward; backward through ``exp(-x^2 / 2)``, a Gaussian bump that is 1 at 0 (the identity
    STE's slope there) and fades for entries far from the sign flip. The parameters start at unit
    standard deviation (hashgnn/codes/itq.py), so the width is one standard deviation of the start."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * torch.exp(-0.5 * x * x)


STE_KINDS = ("identity", "clip", "gauss")
# Diagnostics, not methods: what the served score would reach without one of the constraints that
# codes impose. "none": no quantisation (a real ``bits``-wide inner product); "sphere": no
# quantisation, but every row scaled to length sqrt(bits), as every +-1 code is (equal item norms,
# nothing discrete); "items-only" / "users-only": one side quantised (identity STE), the other real;
# "scaled-S": both sides +-1, but each of S equal segments of a row scaled by its mean |x| (BiGeaR's
# per-node scalers, Chen et al., WWW 2022, on segments of one vector instead of GNN layers), so the
# score is sum_s a_u^s a_i^s <b_u^s, b_i^s>: what S scalers per item and per user buy.
DIAGNOSTIC_STE = (
    "none",
    "sphere",
    "items-only",
    "users-only",
    "scaled-1",
    "scaled-2",
    "scaled-4",
    "scaled-8",
    "scaled-16",
)


def _ste(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "none":  # no quantisation: the continuous student of distill_codes' diagnostic mode
        return x
    if kind == "sphere":
        return x * (x.shape[1] ** 0.5) / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    code = torch.where(x >= 0, 1.0, -1.0)  # sign(0) = +1, the project's convention
    if kind == "identity":
        return x + (code - x).detach()
    if kind == "clip":
        xc = x.clamp(-1.0, 1.0)
        return xc + (code - xc).detach()
    if kind == "gauss":
        out: torch.Tensor = _GaussSign.apply(x)
        return out
    raise ConfigError(f"distill.ste must be one of {', '.join(STE_KINDS)}, got {kind!r}")


def _scaled_segments(x: torch.Tensor, segments: int) -> torch.Tensor:
    """Rows as ``segments`` equal parts, each its signs (identity STE) times its mean |x| (BiGeaR's
    scaler, which takes gradient too)."""
    n, k = x.shape
    if k % segments:
        raise ConfigError(f"distill.ste=scaled-{segments} needs a code length divisible by {segments}, got {k}")
    parts = x.reshape(n, segments, k // segments)
    scale = parts.abs().mean(dim=2, keepdim=True)
    return (scale * _ste(parts, "identity")).reshape(n, k)


def _served(x: torch.Tensor, kind: str, side: str) -> torch.Tensor:
    """The ``side`` ("user" or "item") rows as the score sees them under ``kind`` (forward and backward)."""
    if kind in ("items-only", "users-only"):
        return _ste(x, "identity") if kind.startswith(side) else x
    if kind.startswith("scaled-"):
        return _scaled_segments(x, int(kind.removeprefix("scaled-")))
    return _ste(x, kind)


def bit_penalty(codes: torch.Tensor, balance: float, decorrelation: float) -> torch.Tensor:
    """Spectral hashing's two conditions on the item codes (n, K), as a penalty on their STE signs.

    ``balance * ||mean_i b_i||^2 / K`` asks every bit to split the items in half; ``decorrelation *
    ||B^T B / n - I||_F^2 / (K (K - 1))`` asks bits to be pairwise uncorrelated, so that 64 bits
    carry 64 bits of information. Both are 0 for a balanced, uncorrelated code and at most 1 (times
    their weight) for a constant one. Popularity is encoded by items that share the sign of the
    average user, which balance works against; the two weights are separate for that reason.
    """
    n, k = codes.shape
    out = codes.new_zeros(())
    if balance > 0:
        out = out + balance * codes.mean(0).square().sum() / k
    if decorrelation > 0 and k > 1:
        gram = codes.T @ codes / n
        off = gram - torch.diag(torch.diagonal(gram))  # the diagonal of ±1 codes is exactly 1
        out = out + decorrelation * off.square().sum() / (k * (k - 1))
    return out


def _own_items_loss(logits: torch.Tensor, rows: sp.csr_matrix) -> torch.Tensor:
    """Mean over the batch's users of -mean log softmax(logits)[own training items], no mask (a user
    without training items adds 0): the ``own`` term of :class:`hashgnn.codes.refine.Objective`."""
    dev = logits.device
    counts = np.diff(rows.indptr)
    user = torch.from_numpy(repeat_rows(counts)).to(dev)
    item = torch.from_numpy(rows.indices.astype(np.int64)).to(dev)
    share = torch.from_numpy(np.repeat(1.0 / np.maximum(counts, 1), counts).astype(np.float32)).to(dev)
    logp = torch.log_softmax(logits, dim=1)[user, item]
    return -torch.zeros(rows.shape[0], device=dev).index_add_(0, user, logp * share).mean()


@dataclass
class DistillResult:
    """The student's ±1 codes (float32) at the best validated epoch, or the last one without validation."""

    user_codes: np.ndarray
    item_codes: np.ndarray
    best_epoch: int | None
    best_score: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    initial_score: float | None = None  # validate() of the initial codes
    # (U, bits) float32 real query vectors at the same epoch as the codes (query_weight > 0), else None
    user_query: np.ndarray | None = None


def rank_weights(targets: torch.Tensor, decay: float) -> torch.Tensor:
    """Rank weights ``exp(-r / decay)`` of each user's targets ``(B, R)``, zero on missing ones (-1),
    normalised per row: the weights of the distillation loss (and of the refinement's objective)."""
    w = torch.exp(-torch.arange(targets.shape[1], dtype=torch.float32, device=targets.device) / decay)
    w = torch.where(targets >= 0, w, 0.0)
    return w / w.sum(1, keepdim=True).clamp(min=1e-12)


def listwise_loss(
    raw: torch.Tensor, rows: sp.csr_matrix, tb: torch.Tensor, vb: torch.Tensor, wb: torch.Tensor, positive_weight: float
) -> torch.Tensor:
    """The distillation loss of one block of users: rank-weighted log-likelihood of their targets
    ``tb`` (valid where ``vb``, weights ``wb``) under a softmax of ``raw`` over their unseen items,
    plus ``positive_weight`` times :func:`_own_items_loss`."""
    from hashgnn.index.topk import mask_

    logp = torch.log_softmax(mask_(raw.clone(), rows), dim=1)
    picked = logp.gather(1, tb.clamp(min=0))
    out = -(torch.where(vb, picked, 0.0) * wb).sum(1).mean()
    if positive_weight > 0:
        out = out + positive_weight * _own_items_loss(raw, rows)
    return out


class _ListwiseBlock(torch.autograd.Function):
    """:func:`listwise_loss` of a block of rows with its gradient written out, fused.

    Rows ``users`` (N, K), already divided by the temperature, are scored against ``items`` (I, K) in
    one (N, I) buffer that is reused for every step: the scores, then their exponentials, then the
    gradient. Autograd through ``listwise_loss`` writes about ten (N, I) tensors per loss (clone, mask,
    two log-softmaxes, their backward, the temperature's division); this writes one, and with fused
    Adam makes a gowalla epoch 1.6-1.8x as fast (docs/RESULTS.md). The buffer becomes the gradient,
    so the graph can be run backward once only (no ``retain_graph``). Per row u, with ``p_un`` the
    softmax over its unseen items and ``p_all`` over all items::

        d loss / d raw_u = scale_u (a_u p_un + c_u p_all - w_u at the targets - own_u at the seen items)

    where ``a_u`` is the sum of the row's target weights and ``c_u`` that of its own-item weights.
    ``seen`` holds (row, item) of every seen pair of the block, ``own`` their weights (positive_weight
    / n_u), ``scale`` (N,) the weight of each row in the sum (1 / B, or query_weight / B).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        users: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        seen_row: torch.Tensor,
        seen_col: torch.Tensor,
        own: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        buf = users @ items.T
        picked = buf.gather(1, targets)
        raw_seen = buf[seen_row, seen_col]
        top = buf.amax(1)
        buf.sub_(top.unsqueeze(1)).exp_()
        e_seen = buf[seen_row, seen_col]
        buf[seen_row, seen_col] = 0.0  # the unseen sum directly, not all minus seen: no cancellation
        s_un = buf.sum(1).clamp(min=torch.finfo(buf.dtype).tiny)  # 0 only for a row with every item seen
        s_all = s_un + torch.zeros_like(s_un).index_add_(0, seen_row, e_seen)
        lse_un, lse_all = top + s_un.log(), top + s_all.log()
        a = weights.sum(1)
        c = torch.zeros_like(a).index_add_(0, seen_row, own)
        loss_rows = a * lse_un - (weights * picked).sum(1) + c * lse_all
        loss_rows = loss_rows - torch.zeros_like(a).index_add_(0, seen_row, own * raw_seen)
        ctx.save_for_backward(users, items, buf, targets, weights, seen_row, seen_col, own, scale, e_seen)
        ctx.sums = (s_un, s_all, a, c)  # type: ignore[attr-defined]
        return (scale * loss_rows).sum()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        users, items, buf, targets, weights, seen_row, seen_col, own, scale, e_seen = ctx.saved_tensors  # type: ignore[attr-defined]
        s_un, s_all, a, c = ctx.sums  # type: ignore[attr-defined]
        g = scale * grad
        # unseen entries: e (a / s_un + c / s_all); seen ones: e c / s_all; then minus the targets' weights
        buf.mul_((g * (a / s_un + c / s_all)).unsqueeze(1))
        buf[seen_row, seen_col] = g[seen_row] * (e_seen * (c / s_all)[seen_row] - own)
        buf.scatter_add_(1, targets, -(g.unsqueeze(1) * weights))
        need = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_users = buf @ items if need[0] else None
        grad_items = buf.T @ users if need[1] else None
        return grad_users, grad_items, None, None, None, None, None, None


def _seen_pairs(
    rows: sp.csr_matrix, copies: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, item) of every nonzero of ``rows`` stacked ``copies`` times (row offset by the block
    height), and each pair's share 1 / n_u of its user."""
    counts = np.diff(rows.indptr)
    row = repeat_rows(counts)
    share = np.repeat(1.0 / np.maximum(counts, 1), counts).astype(np.float32)
    b = rows.shape[0]
    r = np.concatenate([row + k * b for k in range(copies)])
    col = np.tile(rows.indices.astype(np.int64), copies)
    return (
        torch.from_numpy(r).to(device),
        torch.from_numpy(col).to(device),
        torch.from_numpy(np.tile(share, copies)).to(device),
    )


def fused_listwise_loss(
    blocks: list[tuple[torch.Tensor, float]],
    items: torch.Tensor,
    rows: sp.csr_matrix,
    tb: torch.Tensor,
    wb: torch.Tensor,
    positive_weight: float,
) -> torch.Tensor:
    """``sum_k weight_k * listwise_loss(raw_k, rows, tb, tb >= 0, wb, positive_weight)`` for ``blocks``
    of (raw rows (B, K) before the item product, weight), with ``raw_k = rows_k @ items.T``: every
    block in one fused pass (:class:`_ListwiseBlock`). ``wb`` must be 0 where ``tb`` is -1."""
    b, k = rows.shape[0], len(blocks)
    users = torch.cat([u for u, _ in blocks]) if k > 1 else blocks[0][0]
    seen_row, seen_col, share = _seen_pairs(rows, k, items.device)
    scale = torch.cat([torch.full((b,), wk / b, dtype=items.dtype, device=items.device) for _, wk in blocks])
    targets = tb.clamp(min=0).repeat(k, 1)
    out: torch.Tensor = _ListwiseBlock.apply(
        users, items, targets, wb.repeat(k, 1), seen_row, seen_col, share.to(items.dtype) * positive_weight, scale
    )
    return out


def distill_codes(
    user_init: np.ndarray,
    item_init: np.ndarray,
    targets: np.ndarray,
    train: sp.csr_matrix,
    *,
    epochs: int,
    temperature: float = 4.0,
    decay: float = 20.0,
    lr: float = 0.01,
    batch_users: int = 1024,
    ste: str = "identity",
    schedule: str = "constant",
    horizon: int | None = None,
    ema: float = 0.0,
    positive_weight: float = 0.0,
    balance_weight: float = 0.0,
    decorrelation_weight: float = 0.0,
    query_weight: float = 0.0,
    seed: int = 0,
    validate: Callable[[np.ndarray, np.ndarray], float] | None = None,
    validate_query: Callable[[np.ndarray, np.ndarray], float] | None = None,
    eval_every: int = 1,
    patience: int = 0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
    device: str | torch.device = "cpu",
    fused: bool = True,
) -> DistillResult:
    """Train codes from ``user_init`` / ``item_init`` (real, (U, bits) / (I, bits)) to rank ``targets``.

        ``targets`` is :func:`teacher_top_r`'s (U, R) array. ``validate(user_codes, item_codes)`` (±1
        arrays) returns the score to maximise (e.g. validation Recall@20); it is called before the first
        epoch (the initial codes, ``DistillResult.initial_score``) and every ``eval_every`` epochs, and
        ``patience`` evaluations without improvement stop the training. ``schedule="cosine"`` decays the
        learning rate to 0 over ``horizon`` epochs (default ``epochs``), so that a shorter run with the
        same horizon follows the same schedule (the refit with a validated budget). ``ema`` in [0, 1):
        serve the signs of an exponential moving average of the parameters (per step) instead of the
        parameters themselves (0: off). ``positive_weight`` > 0 adds that weight times a second listwise
        term whose targets are the user's own training items, uniformly weighted, against a softmax over
        all items (seen ones included: Mult-VAE's likelihood on the served score). ``balance_weight`` and
    ``decorrelation_weight`` add :func:`bit_penalty` of the item codes to every step. The
    ``ste`` values of ``DIAGNOSTIC_STE`` are diagnostics, not methods: ``"none"`` quantises nothing,
    and the "codes" returned (and validated) are the real vectors, i.e. the best a ``bits``-wide
    inner-product model reaches with this objective; ``"sphere"`` returns them scaled to the length
    of a code; ``"items-only"`` / ``"users-only"`` return one side as signs, the other real;
    ``"scaled-S"`` returns both sides as signs times one scale per segment (S segments per row).
    ``query_weight`` > 0 trains a third matrix beside the two codes, one real query vector per user
    (started from ``user_init``), by the same listwise loss on the asymmetric score ``<q_u, b_i>``
    against the item codes' straight-through signs, with that weight; it is returned as
    ``user_query`` at the epoch of the returned codes (picked by ``validate``, as they are), and
    ``validate_query(user_query, item_codes)``, if given, is recorded beside each validation as
    ``valid_query_score`` (not used to pick). ``on_epoch``
        receives each epoch's row (loss, seconds, lr, score). ``device`` holds the parameters and the
        (B, I) score blocks (e.g. ``"cuda"``); the user order of each epoch is drawn on the CPU from
        ``seed`` either way, so a device changes only the floating-point arithmetic. ``fused=False``
        takes the loss through autograd (:func:`listwise_loss`) and steps Adam unfused: the same
        training up to rounding, about half as fast; it is kept as the reference the fused step is
        measured and tested against (``bench/distill_speed.py``).
    """
    import math
    import time

    if temperature <= 0:
        raise ConfigError(f"distill.temperature must be > 0, got {temperature}")
    if decay <= 0:
        raise ConfigError(f"distill.decay must be > 0, got {decay}")
    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"distill.schedule must be constant or cosine, got {schedule!r}")
    horizon = max(horizon if horizon is not None else epochs, 1)
    if not 0.0 <= ema < 1.0:
        raise ConfigError(f"distill.ema must be in [0, 1), got {ema}")
    if positive_weight < 0:
        raise ConfigError(f"distill.positive_weight must be >= 0, got {positive_weight}")
    if balance_weight < 0 or decorrelation_weight < 0:
        raise ConfigError(
            f"distill.balance_weight and decorrelation_weight must be >= 0, got {balance_weight}, {decorrelation_weight}"
        )
    if query_weight < 0:
        raise ConfigError(f"distill.query_weight must be >= 0, got {query_weight}")
    if ste not in (*STE_KINDS, *DIAGNOSTIC_STE):
        raise ConfigError(f"distill.ste must be one of {', '.join(STE_KINDS)}, got {ste!r}")
    n_users, n_items = train.shape
    if user_init.shape[0] != n_users or item_init.shape[0] != n_items or user_init.shape[1] != item_init.shape[1]:
        raise ConfigError(
            f"initial codes {user_init.shape} / {item_init.shape} do not fit the {n_users} x {n_items} matrix"
        )
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    xu = torch.nn.Parameter(torch.tensor(user_init, dtype=torch.float32, device=dev))
    xi = torch.nn.Parameter(torch.tensor(item_init, dtype=torch.float32, device=dev))
    params = [xu, xi]
    xq: torch.nn.Parameter | None = None
    if query_weight > 0:
        xq = torch.nn.Parameter(torch.tensor(user_init, dtype=torch.float32, device=dev))
        params.append(xq)
    # fused: one kernel per parameter instead of a dozen passes (dense updates of every row either way)
    opt = torch.optim.Adam(params, lr=lr, fused=fused and dev.type in ("cpu", "cuda"))
    t = torch.from_numpy(np.asarray(targets, np.int64)).to(dev)
    valid_t = t >= 0
    train = sp.csr_matrix(train)

    # The served codes are the signs of an exponential moving average of the parameters (ema > 0):
    # single steps flip bits near zero back and forth, the average keeps the direction they agree on.
    avg_u, avg_i = xu.detach().clone(), xi.detach().clone()
    avg_q = xq.detach().clone() if xq is not None else None

    def query() -> np.ndarray | None:
        if xq is None:
            return None
        q = avg_q if ema > 0 and avg_q is not None else xq.detach()
        return q.cpu().numpy().copy()

    def signs() -> tuple[np.ndarray, np.ndarray]:
        u, i = (avg_u, avg_i) if ema > 0 else (xu.detach(), xi.detach())
        if ste in DIAGNOSTIC_STE:
            return (_served(u, ste, "user").cpu().numpy().copy(), _served(i, ste, "item").cpu().numpy().copy())
        return (torch.where(u >= 0, 1.0, -1.0).cpu().numpy(), torch.where(i >= 0, 1.0, -1.0).cpu().numpy())

    best_u, best_i = signs()
    best_q = query()
    best_score: float | None = None
    best_epoch: int | None = None
    initial: float | None = None
    if validate is not None:
        initial = best_score = float(validate(best_u, best_i))
        best_epoch = -1
    history: list[dict[str, float]] = []
    bad = 0
    for epoch in range(epochs):
        start = time.perf_counter()
        lr_now = lr if schedule == "constant" else lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch / horizon, 1.0)))
        for group in opt.param_groups:
            group["lr"] = lr_now
        perm = torch.randperm(n_users, generator=gen)
        total = 0.0
        from hashgnn.progress import progress_bar

        bar = progress_bar(-(-n_users // batch_users), f"distill epoch {epoch}", "batch", progress)
        for s in range(0, n_users, batch_users):
            b_cpu = perm[s : s + batch_users]
            b = b_cpu.to(dev)
            item_b = _served(xi, ste, "item")
            rows = train[b_cpu.numpy()]
            tb, vb = t[b], valid_t[b]
            wb = rank_weights(tb, decay)
            blocks = [(_served(xu[b], ste, "user") / temperature, 1.0)]
            if xq is not None:
                # the query's length is free, so the temperature only sets where it starts
                blocks.append((xq[b] / temperature, query_weight))
            if fused:
                loss = fused_listwise_loss(blocks, item_b, rows, tb, wb, positive_weight)
            else:
                loss = sum(
                    (wk * listwise_loss(x @ item_b.T, rows, tb, vb, wb, positive_weight) for x, wk in blocks),
                    torch.zeros((), device=dev),
                )
            if balance_weight > 0 or decorrelation_weight > 0:
                loss = loss + bit_penalty(item_b, balance_weight, decorrelation_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema > 0:
                with torch.no_grad():
                    avg_u.mul_(ema).add_(xu, alpha=1.0 - ema)
                    avg_i.mul_(ema).add_(xi, alpha=1.0 - ema)
                    if avg_q is not None and xq is not None:
                        avg_q.mul_(ema).add_(xq, alpha=1.0 - ema)
            total += float(loss.detach()) * len(b_cpu)
            bar.update(1)
        bar.close()
        row: dict[str, float] = {
            "epoch": float(epoch),
            "loss": total / n_users,
            "seconds": time.perf_counter() - start,
            "lr": lr_now,
        }
        stop = False
        if validate is not None and ((epoch + 1) % eval_every == 0 or epoch == epochs - 1):
            uc, ic = signs()
            uq = query()
            score = float(validate(uc, ic))
            row["valid_score"] = score
            if validate_query is not None and uq is not None:
                row["valid_query_score"] = float(validate_query(uq, ic))
            if best_score is None or score > best_score:
                best_score, best_epoch, best_u, best_i, best_q, bad = score, epoch, uc, ic, uq, 0
            else:
                bad += 1
                stop = patience > 0 and bad >= patience
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if stop:
            break
    if validate is None:
        best_u, best_i = signs()
        best_q = query()
        best_epoch = epochs - 1 if epochs else None
    return DistillResult(best_u, best_i, best_epoch, best_score, history, initial, best_q)


def refit_queries(
    user_query: np.ndarray,
    item_codes: np.ndarray,
    targets: np.ndarray,
    train: sp.csr_matrix,
    *,
    epochs: int,
    temperature: float = 4.0,
    decay: float = 20.0,
    lr: float = 0.01,
    batch_users: int = 1024,
    positive_weight: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The real query vectors trained again, alone, against fixed ±1 ``item_codes``: (U, bits) float32.

    The loss is :func:`distill_codes`'s query term (the listwise loss of ``<q_u, b_i> / temperature``
    on the teacher's ``targets``, plus ``positive_weight`` times the user's own items), so a refit
    starts where training left the queries and follows the items' bits after a refinement flipped
    some of them. Each user's loss is convex in their query, and users do not interact.
    """
    if epochs < 0:
        raise ConfigError(f"distill.query_refit_epochs must be >= 0, got {epochs}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    xq = torch.nn.Parameter(torch.tensor(user_query, dtype=torch.float32, device=dev))
    items = torch.tensor(np.asarray(item_codes), dtype=torch.float32, device=dev)
    opt = torch.optim.Adam([xq], lr=lr, fused=dev.type in ("cpu", "cuda"))
    t = torch.from_numpy(np.asarray(targets, np.int64)).to(dev)
    train = sp.csr_matrix(train)
    n_users = train.shape[0]
    from hashgnn.progress import progress_bar

    for epoch in range(epochs):
        perm = torch.randperm(n_users, generator=gen)
        bar = progress_bar(-(-n_users // batch_users), f"query refit epoch {epoch}", "batch", progress)
        for s in range(0, n_users, batch_users):
            b_cpu = perm[s : s + batch_users]
            b = b_cpu.to(dev)
            tb = t[b]
            loss = fused_listwise_loss(
                [(xq[b] / temperature, 1.0)], items, train[b_cpu.numpy()], tb, rank_weights(tb, decay), positive_weight
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(1)
        bar.close()
    return xq.detach().cpu().numpy().copy()


def continuous_start(
    user_init: np.ndarray,
    item_init: np.ndarray,
    targets: np.ndarray,
    train: sp.csr_matrix,
    *,
    epochs: int,
    popularity: int = 0,
    itq_iters: int = 50,
    seed: int = 0,
    **distill: object,
) -> tuple[np.ndarray, np.ndarray]:
    """A better start for :func:`distill_codes`: a continuous student first, then its own PCA + ITQ.

    ``epochs`` of :func:`distill_codes` without quantisation (``ste="none"``: the same loss on the real
    ``bits``-wide vectors, from ``user_init`` / ``item_init``), then those vectors hashed to as many
    bits by :func:`hashgnn.codes.itq.hash_vectors` (``popularity`` fixed bits). On gowalla the
    continuous student reaches the teacher's validation Recall@20 in about 15 epochs where the codes
    need 60-70 to reach their level (docs/RESULTS.md), so its ITQ codes start the code training much
    closer to where it ends. ``distill`` takes :func:`distill_codes`' loss and optimiser keywords
    (temperature, decay, lr, batch_users, ema, positive_weight, progress, device); the student has no
    bit penalties and a constant learning rate. Returns real pre-sign values (U, bits), (I, bits).
    """
    from hashgnn.codes.itq import hash_vectors

    if epochs < 1:
        raise ConfigError(f"distill.student_epochs must be >= 1 for a continuous start, got {epochs}")
    student = distill_codes(user_init, item_init, targets, train, epochs=epochs, ste="none", seed=seed, **distill)  # type: ignore[arg-type]
    degree = np.asarray(sp.csr_matrix(train).sum(axis=0)).ravel()
    return hash_vectors(
        student.user_codes, student.item_codes, degree, user_init.shape[1], None, popularity, itq_iters, seed
    )
