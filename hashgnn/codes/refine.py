"""Discrete refinement of ±1 codes: greedy bit flips that lower the distillation loss exactly.

:mod:`hashgnn.codes.distill` trains codes through the straight-through sign, whose gradient is that
of a real vector, not of the served ±1 code, so the trained codes stop short of a minimum of the loss
they are served with. This module takes the ±1 codes themselves and flips bits, one at a time, where
the flip lowers that loss (the discrete coordinate descent of Discrete Collaborative Filtering, Zhang
et al., SIGIR 2016, here on the listwise distillation loss)::

    loss_u = - sum_r w_r log softmax_i( <b_u, b_i> / T )[t_r]     (seen items masked)

With ``distill.positive_weight`` the loss has a second term, the user's own training items against a
softmax over all items (:class:`Objective`); the gains below are computed term by term, each with
its own normaliser, and added.

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

from hashgnn.arrays import repeat_rows
from hashgnn.codes.distill import rank_weights
from hashgnn.index.topk import mask_


@dataclass
class RefineStats:
    """What :func:`refine_codes` did: the loss before and after, flips made, seconds."""

    loss_before: float
    loss_after: float
    user_flips: int
    item_flips: int
    seconds: float


def _rows_dot(w: sp.csr_matrix, dense: torch.Tensor) -> torch.Tensor:
    """``sum_i w[u, i] dense[u, i]`` for every row u of the sparse ``w`` ((b,), float64, on ``dense``'s device)."""
    dev = dense.device
    counts = np.diff(w.indptr)
    row = torch.from_numpy(repeat_rows(counts)).to(dev)
    col = torch.from_numpy(w.indices.astype(np.int64)).to(dev)
    val = dense[row, col].double() * torch.from_numpy(w.data).to(dev)
    return torch.zeros(w.shape[0], dtype=torch.float64, device=dev).index_add_(0, row, val)


def _sparse_times(w: sp.csr_matrix, dense: torch.Tensor) -> torch.Tensor:
    """``w @ dense`` (float64) on ``dense``'s device: scipy on the CPU (the order of sums the CPU
    results were made with), :func:`_torch_sparse_times` elsewhere."""
    if dense.device.type == "cpu":
        return torch.from_numpy(np.asarray(w @ dense.double().numpy()))
    return _torch_sparse_times(w, dense)


def _torch_sparse_times(w: sp.csr_matrix, dense: torch.Tensor) -> torch.Tensor:
    """``w @ dense`` (float64) as a torch sparse CSR product on ``dense``'s device (no copy to the CPU)."""
    csr = torch.sparse_csr_tensor(
        torch.from_numpy(w.indptr.astype(np.int64)),
        torch.from_numpy(w.indices.astype(np.int64)),
        torch.from_numpy(np.asarray(w.data, np.float64)),
        size=w.shape,
    ).to(dense.device)
    return csr @ dense.double()


def _level_slots(raw: torch.Tensor, seen: sp.csr_matrix, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's slot in a per-user (b, 2, 2 bits + 1) table (its row; seen or not; its score's
    level) as int64 (b, I), and the table's counts (float64): the histogram of every user's scores.

    ``raw`` holds the scores of ±1 codes, integers in ``[-bits, bits]``; it is not changed."""
    b, dev, levels = raw.shape[0], raw.device, 2 * bits + 1
    idx = raw.long()  # exact: the scores are integers
    idx += (torch.arange(b, device=dev) * (2 * levels) + bits).unsqueeze(1)
    counts = np.diff(seen.indptr)
    if seen.nnz:
        row = torch.from_numpy(repeat_rows(counts)).to(dev)
        idx[row, torch.from_numpy(seen.indices.astype(np.int64)).to(dev)] += levels
    hist = torch.bincount(idx.view(-1), minlength=2 * levels * b).view(b, 2, levels).double()
    return idx, hist


def _level_exp(bits: int, temperature: float, device: torch.device) -> torch.Tensor:
    """``exp((v - bits) / T)`` for the scores v = -bits..bits: shifted by the largest, so nothing
    overflows, and nothing underflows while 2 bits / T < 700."""
    return torch.exp((torch.arange(2 * bits + 1, dtype=torch.float64, device=device) - 2 * bits) / temperature)


def _normalisers(hist: torch.Tensor, e_lv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's softmax normaliser (shifted as :func:`_level_exp`) over the unseen items and over all."""
    z_un = hist[:, 0] @ e_lv
    return z_un, z_un + hist[:, 1] @ e_lv


def _term_rows_loss(
    w: sp.csr_matrix, share: torch.Tensor, raw: torch.Tensor, z: torch.Tensor, bits: int, temperature: float
) -> torch.Tensor:
    """One term's per-user loss ((b,), float64) from the scores ``raw`` and the shifted normaliser
    ``z`` of its softmax: ``share_u log Z_u - <w_u, raw_u> / T``."""
    # a user with every item seen has z_un = 0 and no targets (share 0)
    return share[:, 0] * (torch.log(z.clamp(min=1e-300)) + bits / temperature) - _rows_dot(w, raw) / temperature


@dataclass(frozen=True)
class Term:
    """One listwise term of the loss: target weights per user ((U, I), sparse) against a softmax over
    the unseen items (``masked``) or over all items."""

    weights: sp.csr_matrix
    masked: bool

    def rows(self, s: int, e: int, device: torch.device | None = None) -> tuple[sp.csr_matrix, torch.Tensor]:
        """Users ``s:e``'s weights and their sums ((e - s, 1), float64 on ``device``: each row's share
        of the loss)."""
        w = self.weights[s:e]
        return w, torch.from_numpy(np.asarray(w.sum(axis=1), np.float64)).to(device or "cpu")


@dataclass(frozen=True)
class Objective:
    """The loss the refinement lowers, summed over its terms, on the scores ``<b_u, b_i> / T``::

        loss_u = sum_terms [ -sum_i W_ui s_ui / T + c_u log Z_u ],   c_u = sum_i W_ui

    The distillation term's W holds the teacher's top items with their rank weights (rows sum to 1)
    and its Z runs over the unseen items; ``distill.positive_weight`` p adds a term with ``p / n_u`` on
    each of the user's n_u training items and Z over all items (hashgnn/codes/distill.py trains both).
    """

    terms: tuple[Term, ...]
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
        positive_weight: float = 0.0,
    ) -> Objective:
        """The objective of :func:`hashgnn.codes.distill.teacher_top_r`'s ``targets`` on ``train``."""
        t = torch.as_tensor(np.asarray(targets, np.int64))
        train = sp.csr_matrix(train)
        n_users, n_items = train.shape
        w = rank_weights(t, decay).double().numpy()
        keep = t.numpy() >= 0
        rows = repeat_rows(keep.sum(1))
        distill = sp.csr_matrix((w[keep], (rows, t.numpy()[keep])), shape=(n_users, n_items))
        terms = [Term(distill, masked=True)]
        if positive_weight > 0:
            own = sp.csr_matrix(train, dtype=np.float64, copy=True)
            own.sum_duplicates()
            counts = np.diff(own.indptr)
            own.data = np.repeat(positive_weight / np.maximum(counts, 1), counts)
            terms.append(Term(own, masked=False))
        return cls(tuple(terms), train, temperature, batch_users)

    def batches(self, n_users: int) -> range:
        return range(0, n_users, self.batch_users)

    def query(self, item: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """``sum_terms W[s:e] @ item``: the weighted target codes of users ``s:e`` ((e - s, bits))."""
        q = torch.zeros(e - s, item.shape[1], dtype=torch.float64, device=item.device)
        for t in self.terms:
            q = q + _sparse_times(t.weights[s:e], item)
        return q

    def scores(self, user: torch.Tensor, item: torch.Tensor, s: int, e: int) -> dict[bool, torch.Tensor]:
        """Users ``s:e``'s scores ``<b_u, b_i>``: masked (seen items -inf) and, if a term needs it, all."""
        raw = user[s:e] @ item.T
        out = {True: mask_(raw.clone() if self.unmasked else raw, self.train[s:e])}
        if self.unmasked:
            out[False] = raw
        return out

    @property
    def unmasked(self) -> bool:
        return any(not t.masked for t in self.terms)

    def loss(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Per-user loss of ±1 codes ((U,), float64), from each user's histogram of scores
        (:func:`_level_slots`): ``log Z_u`` needs only how many items sit at each of the 2 bits + 1
        scores, and the target terms are sparse."""
        bits, dev = item.shape[1], user.device
        e_lv = _level_exp(bits, self.temperature, dev)
        out = torch.empty(user.shape[0], dtype=torch.float64, device=dev)
        for s in self.batches(user.shape[0]):
            e = min(user.shape[0], s + self.batch_users)
            raw = user[s:e] @ item.T
            z_un, z_all = _normalisers(_level_slots(raw, self.train[s:e], bits)[1], e_lv)
            rows = torch.zeros(e - s, dtype=torch.float64, device=dev)
            for t in self.terms:
                w, share = t.rows(s, e, dev)
                rows += _term_rows_loss(w, share, raw, z_un if t.masked else z_all, bits, self.temperature)
            out[s:e] = rows
        return out


def distill_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    targets: torch.Tensor,
    train: sp.csr_matrix,
    temperature: float,
    decay: float,
    batch_users: int = 512,
    positive_weight: float = 0.0,
) -> torch.Tensor:
    """Per-user distillation loss of ±1 codes (float64 (U,)), the objective the refinement lowers."""
    obj = Objective.of(targets, train, temperature, decay, batch_users, positive_weight)
    return obj.loss(user, item)


def _user_flip_gains(
    u: torch.Tensor,
    item: torch.Tensor,
    scores: dict[bool, torch.Tensor],
    q: torch.Tensor,
    c: list[torch.Tensor],
    obj: Objective,
) -> torch.Tensor:
    """Loss change of flipping each bit of each user in ``u`` ((b, bits), float64; negative is better).

    ``scores`` are :meth:`Objective.scores` of these users, ``q`` their :meth:`Objective.query` and
    ``c[j]`` their rows' sums in term j ((b, 1)).
    """
    temperature = obj.temperature
    gain = 2.0 * u.double() * q / temperature  # -sum_i W_ui s_ui / T moves by +2 b_uk q_k / T
    for term, share in zip(obj.terms, c, strict=True):
        sc = scores[term.masked]
        top = sc.max(1, keepdim=True).values
        ex = torch.exp((sc - top) / temperature).double()  # seen items (masked): exp(-inf) = 0
        z = ex.sum(1, keepdim=True)
        agree = ((z + u.double() * (ex @ item.double())) / 2).clamp(min=0.0)  # mass that loses 2 per flip
        z_new = agree * np.exp(-2.0 / temperature) + (z - agree).clamp(min=0.0) * np.exp(2.0 / temperature)
        gain = gain + share * torch.log(z_new / z)
    return gain


def refine_users(user: torch.Tensor, item: torch.Tensor, obj: Objective) -> int:
    """Greedy bit flips of every user's code in place (item codes fixed); returns the flips made."""
    bits, flips = user.shape[1], 0
    item64 = item.double()  # the gains' product with the items is float64; convert once, not per round
    for s in obj.batches(user.shape[0]):
        e = min(user.shape[0], s + obj.batch_users)
        u = user[s:e].clone()
        q = obj.query(item, s, e)
        c = [t.rows(s, e, user.device)[1] for t in obj.terms]
        scores = obj.scores(user, item, s, e)
        active = torch.arange(e - s, device=user.device)
        for _ in range(bits):  # each round flips at most one bit per user
            if len(active) == e - s:  # every user of the batch: no copy of their score rows
                gain = _user_flip_gains(u, item64, scores, q, c, obj)
            else:
                view = {m: sc[active] for m, sc in scores.items()}
                gain = _user_flip_gains(u[active], item64, view, q[active], [x[active] for x in c], obj)
            best = gain.argmin(1)
            take = gain.gather(1, best[:, None])[:, 0] < -1e-9
            if not bool(take.any()):
                break
            rows, k = active[take], best[take]
            for sc in scores.values():
                sc[rows] -= 2.0 * u[rows, k][:, None] * item[:, k].T
            u[rows, k] = -u[rows, k]
            flips += len(rows)
            active = rows
        user[s:e] = u
    return flips


def _item_flip_gains(user: torch.Tensor, item: torch.Tensor, obj: Objective) -> tuple[torch.Tensor, float]:
    """Exact loss change (summed over users) of flipping each bit of each item alone ((I, bits),
    float64), and the total loss now (from the same pass over the users).

    The score of ±1 codes is an integer in ``[-bits, bits]``, so every function of it that the gains
    need (its softmax probability, and the two ``log1p`` terms of the flip) takes one of ``2 bits + 1``
    values per user and side (seen or unseen item): they are tabulated per user from a histogram of the
    user's scores and gathered, instead of computed for each (user, item) pair. The target weights'
    share of the gains is sparse and added once, outside the pass over users.
    """
    n_items, bits = item.shape
    dev = item.device
    temperature = obj.temperature
    levels = 2 * bits + 1
    e_lv = _level_exp(bits, temperature, dev)
    up, down = np.exp(2.0 / temperature) - 1.0, np.exp(-2.0 / temperature) - 1.0
    g_plus = torch.zeros(n_items, dtype=torch.float64, device=dev)
    d_sum = torch.zeros(n_items, dtype=torch.float64, device=dev)
    d_u = torch.zeros(n_items, bits, dtype=torch.float64, device=dev)
    total = 0.0
    for s in obj.batches(user.shape[0]):
        e = min(user.shape[0], s + obj.batch_users)
        b = e - s
        raw = user[s:e] @ item.T  # integers in [-bits, bits], exact in float32
        idx, hist = _level_slots(raw, obj.train[s:e], bits)
        z_un, z_all = _normalisers(hist, e_lv)
        diff_tab = torch.zeros(b, 2, levels, dtype=torch.float64, device=dev)
        up_tab = torch.zeros(b, 2, levels, dtype=torch.float64, device=dev)
        for term in obj.terms:
            w_rows, share = term.rows(s, e, dev)
            z = z_un if term.masked else z_all
            total += float(_term_rows_loss(w_rows, share, raw, z, bits, temperature).sum())
            inv = torch.where(z > 0, 1.0 / z.clamp(min=1e-300), 0.0)  # z = 0: no items on that side
            p = e_lv.unsqueeze(0) * inv.unsqueeze(1)  # (b, levels): the probability of an item at each score
            t_down, t_up = torch.log1p(p * down), torch.log1p(p * up)
            sides = [0] if term.masked else [0, 1]  # a masked term has no mass on seen items
            for side in sides:
                diff_tab[:, side] += share * (t_down - t_up)
                up_tab[:, side] += share * t_up
        diff = diff_tab.view(-1).take(idx)  # (b, I): the change when the score falls by 2 minus when it rises
        g_plus += up_tab.view(-1).take(idx).sum(0)
        d_sum += diff.sum(0)
        d_u += diff.T @ user[s:e].double()
    # the target weights' part: -2 w / T when the score rises, +2 w / T when it falls
    w_all = sum((t.weights for t in obj.terms[1:]), obj.terms[0].weights).tocsr()
    w_col = torch.from_numpy(np.asarray(w_all.sum(axis=0), np.float64).ravel()).to(dev)
    g_plus -= 2.0 * w_col / temperature
    d_sum += 4.0 * w_col / temperature
    d_u += 4.0 * _sparse_times(w_all.T.tocsr(), user).to(dev) / temperature
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
    positive_weight: float = 0.0,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray, RefineStats]:
    """Refine ±1 codes ((U, bits), (I, bits)) for ``rounds`` rounds of user then item flips.

    ``targets`` is :func:`hashgnn.codes.distill.teacher_top_r`'s (U, R) array, ``temperature`` and
    ``decay`` (and ``positive_weight``) the distillation's. Returns new ±1 float32 arrays (the inputs are
    not changed). ``device`` holds the codes and the (users, items) score blocks (e.g. ``"cuda"``).
    """
    import time

    from hashgnn.errors import ConfigError
    from hashgnn.progress import progress_bar

    if rounds < 0:
        raise ConfigError(f"distill.refine_rounds must be >= 0, got {rounds}")
    if temperature <= 0 or decay <= 0:
        raise ConfigError(f"temperature and decay must be > 0, got {temperature} and {decay}")
    start = time.perf_counter()
    dev = torch.device(device)
    u = torch.tensor(np.asarray(user_codes, np.float32), device=dev)
    i = torch.tensor(np.asarray(item_codes, np.float32), device=dev)
    obj = Objective.of(targets, train, temperature, decay, batch_users, positive_weight)
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
    return u.cpu().numpy(), i.cpu().numpy(), stats
