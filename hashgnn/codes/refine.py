"""Discrete refinement of ±1 codes: greedy bit flips that lower the distillation loss exactly.

:mod:`hashgnn.codes.distill` trains codes through the straight-through sign, whose gradient is that
of a real vector, not of the served ±1 code, so the trained codes stop short of a minimum of the loss
they are served with. This module takes the ±1 codes themselves and flips bits, one at a time, where
the flip lowers that loss (the discrete coordinate descent of Discrete Collaborative Filtering, Zhang
et al., SIGIR 2016, here on the listwise distillation loss)::

    loss_u = - sum_r w_r log softmax_i( <b_u, b_i> / T )[t_r]     (seen items masked)

**Users.** A user's loss depends on their own code only, so all users move at once. Flipping bit
``k`` of ``b_u`` changes ``<b_u, b_i>`` by ``-2 b_uk b_ik``: the items that agree with ``b_u`` on
``k`` lose 2, the others gain 2. So the softmax's normaliser after each of the ``bits`` flips follows
from the mass of the agreeing items, ``(Z + b_uk (E b)_k) / 2`` with ``E = exp(<b_u, b_i> / T)``:
one ``(users, items) x (items, bits)`` product scores every flip of every user. Each user takes the
best flip while one lowers their loss (at most ``bits`` rounds).

**Items.** Flipping bit ``k`` of ``b_i`` moves only column ``i`` of every user's scores, so its change
of the loss is exact for each item alone: ``sum_u [-w_ui d_u / T + log(1 + p_ui (exp(d_u / T) - 1))]``
with ``d_u = -2 b_uk b_ik`` and ``p_ui`` the user's softmax probability of ``i``; again one product
over users gives every (item, bit). Items flip together, each its best bit; since their changes add
up only to first order (they share each user's normaliser), a round whose total loss does not fall is
undone and retried with the better half of the flips.

Every flip is checked on the loss, so the loss never rises; whether ranking improves is for the
validation split to say (hashgnn/train/fitted.py keeps the refinement only when it does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.index.topk import mask_


@dataclass
class RefineStats:
    """What :func:`refine_codes` did: the loss before and after, flips made, seconds."""

    loss_before: float
    loss_after: float
    user_flips: int
    item_flips: int
    seconds: float


def _weights(targets: torch.Tensor, decay: float) -> torch.Tensor:
    """Rank weights ``exp(-r / decay)`` per user, zero on missing targets (-1), normalised per row."""
    w = torch.exp(-torch.arange(targets.shape[1], dtype=torch.float32) / decay)
    w = torch.where(targets >= 0, w, 0.0)
    return w / w.sum(1, keepdim=True).clamp(min=1e-12)


@dataclass(frozen=True)
class Objective:
    """The distillation loss the refinement lowers: targets (U, R), their rank weights, the seen items."""

    targets: torch.Tensor
    weights: torch.Tensor
    train: sp.csr_matrix
    temperature: float
    batch_users: int = 256

    @classmethod
    def of(
        cls,
        targets: np.ndarray | torch.Tensor,
        train: sp.csr_matrix,
        temperature: float,
        decay: float,
        batch_users: int = 256,
    ) -> Objective:
        """The objective of :func:`hashgnn.codes.distill.teacher_top_r`'s ``targets`` on ``train``."""
        t = torch.as_tensor(np.asarray(targets, np.int64))
        return cls(t, _weights(t, decay), sp.csr_matrix(train), temperature, batch_users)

    def batches(self, n_users: int) -> range:
        return range(0, n_users, self.batch_users)

    def loss(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Per-user loss of ±1 codes ((U,), float64)."""
        out = torch.empty(user.shape[0], dtype=torch.float64)
        for s in self.batches(user.shape[0]):
            e = min(user.shape[0], s + self.batch_users)
            logits = mask_(user[s:e] @ item.T, self.train[s:e]) / self.temperature
            out[s:e] = self.rows_loss(torch.log_softmax(logits.double(), dim=1), s, e)
        return out

    def rows_loss(self, logp: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Per-user loss of users ``s:e`` from their log-probabilities over the items ((e - s, I))."""
        tb = self.targets[s:e]
        picked = torch.where(tb >= 0, logp.gather(1, tb.clamp(min=0)), 0.0)
        return -(picked * self.weights[s:e].double()).sum(1)


def distill_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    targets: torch.Tensor,
    train: sp.csr_matrix,
    temperature: float,
    decay: float,
    batch_users: int = 512,
) -> torch.Tensor:
    """Per-user distillation loss of ±1 codes (float64 (U,)), the objective the refinement lowers."""
    return Objective.of(targets, train, temperature, decay, batch_users).loss(user, item)


def _user_flip_gains(
    u: torch.Tensor, item: torch.Tensor, scores: torch.Tensor, q: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Loss change of flipping each bit of each user in ``u`` ((b, bits), float64; negative is better).

    ``scores`` are the masked logits ``<b_u, b_i>`` ((b, I), -inf on seen items) and ``q`` the
    rank-weighted sum of the targets' codes ((b, bits)).
    """
    top = scores.max(1, keepdim=True).values
    e = torch.exp((scores - top) / temperature).double()  # seen items: exp(-inf) = 0
    z = e.sum(1, keepdim=True)
    agree = ((z + u.double() * (e @ item.double())) / 2).clamp(min=0.0)  # mass that loses 2 per flip
    z_new = agree * np.exp(-2.0 / temperature) + (z - agree).clamp(min=0.0) * np.exp(2.0 / temperature)
    # target term -sum_r w_r s_tr / T moves by +2 b_uk q_k / T
    return 2.0 * u.double() * q.double() / temperature + torch.log(z_new / z)


def refine_users(user: torch.Tensor, item: torch.Tensor, obj: Objective) -> int:
    """Greedy bit flips of every user's code in place (item codes fixed); returns the flips made."""
    bits, flips = user.shape[1], 0
    for s in obj.batches(user.shape[0]):
        e = min(user.shape[0], s + obj.batch_users)
        u = user[s:e].clone()
        q = (item[obj.targets[s:e].clamp(min=0)] * obj.weights[s:e, :, None]).sum(1)  # (b, bits)
        scores = mask_(u @ item.T, obj.train[s:e])
        active = torch.arange(e - s)
        for _ in range(bits):  # each round flips at most one bit per user
            gain = _user_flip_gains(u[active], item, scores[active], q[active], obj.temperature)
            best = gain.argmin(1)
            take = gain.gather(1, best[:, None])[:, 0] < -1e-9
            if not bool(take.any()):
                break
            rows, k = active[take], best[take]
            scores[rows] -= 2.0 * u[rows, k][:, None] * item[:, k].T
            u[rows, k] = -u[rows, k]
            flips += len(rows)
            active = rows
        user[s:e] = u
    return flips


def _item_flip_gains(user: torch.Tensor, item: torch.Tensor, obj: Objective) -> tuple[torch.Tensor, float]:
    """Exact loss change (summed over users) of flipping each bit of each item alone ((I, bits),
    float64), and the total loss now (from the same pass over the users)."""
    n_items, bits = item.shape
    g_plus = torch.zeros(n_items, dtype=torch.float64)
    d_sum = torch.zeros(n_items, dtype=torch.float64)
    d_u = torch.zeros(n_items, bits, dtype=torch.float64)
    temperature = obj.temperature
    up, down = np.exp(2.0 / temperature) - 1.0, np.exp(-2.0 / temperature) - 1.0
    total = 0.0
    for s in obj.batches(user.shape[0]):
        e = min(user.shape[0], s + obj.batch_users)
        logp = torch.log_softmax((mask_(user[s:e] @ item.T, obj.train[s:e]) / temperature).double(), dim=1)
        total += float(obj.rows_loss(logp, s, e).sum())
        p = logp.exp()
        w = torch.zeros_like(p)
        w.scatter_add_(1, obj.targets[s:e].clamp(min=0), obj.weights[s:e].double())
        # per (user, item): the change when the score falls by 2 (user agrees on the bit) or rises by 2
        g_down = 2.0 * w / temperature + torch.log1p(p * down)
        g_up = -2.0 * w / temperature + torch.log1p(p * up)
        g_plus += g_up.sum(0)
        diff = g_down - g_up
        d_sum += diff.sum(0)
        d_u += diff.T @ user[s:e].double()
    # agree indicator (1 + b_uk b_ik) / 2 summed against diff
    return g_plus[:, None] + d_sum[:, None] / 2 + item.double() * d_u / 2, total


def refine_items(user: torch.Tensor, item: torch.Tensor, obj: Objective, tries: int = 4) -> int:
    """One round of simultaneous best-bit flips of the items, kept only if the total loss falls."""
    gain, before = _item_flip_gains(user, item, obj)
    best = gain.argmin(1)
    value = gain.gather(1, best[:, None])[:, 0]
    order = torch.argsort(value)
    n = int((value < -1e-9).sum())
    for _ in range(tries):
        if n == 0:
            return 0
        rows = order[:n]
        k = best[rows]
        item[rows, k] = -item[rows, k]
        after = float(obj.loss(user, item).sum())
        if after < before - 1e-9:
            return n
        item[rows, k] = -item[rows, k]  # undo: the joint change overshot
        n //= 2
    return 0


def refine_codes(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    targets: np.ndarray,
    train: sp.csr_matrix,
    *,
    temperature: float,
    decay: float,
    rounds: int = 2,
    batch_users: int = 256,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, RefineStats]:
    """Refine ±1 codes ((U, bits), (I, bits)) for ``rounds`` rounds of user then item flips.

    ``targets`` is :func:`hashgnn.codes.distill.teacher_top_r`'s (U, R) array, ``temperature`` and
    ``decay`` the distillation's. Returns new ±1 float32 arrays (the inputs are not changed).
    """
    import time

    from hashgnn.errors import ConfigError
    from hashgnn.progress import progress_bar

    if rounds < 0:
        raise ConfigError(f"distill.refine_rounds must be >= 0, got {rounds}")
    if temperature <= 0 or decay <= 0:
        raise ConfigError(f"temperature and decay must be > 0, got {temperature} and {decay}")
    start = time.perf_counter()
    u = torch.tensor(np.asarray(user_codes, np.float32))
    i = torch.tensor(np.asarray(item_codes, np.float32))
    obj = Objective.of(targets, train, temperature, decay, batch_users)
    before = float(obj.loss(u, i).mean())
    uf = itf = 0
    bar = progress_bar(rounds, "refine codes", "round", progress)
    for _ in range(rounds):
        a = refine_users(u, i, obj)
        b = refine_items(u, i, obj)
        uf, itf = uf + a, itf + b
        bar.update(1)
        if a == 0 and b == 0:
            break
    bar.close()
    after = float(obj.loss(u, i).mean())
    stats = RefineStats(before, after, uf, itf, time.perf_counter() - start)
    return u.numpy(), i.numpy(), stats
