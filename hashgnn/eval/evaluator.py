"""The full-ranking evaluator: every test user ranks every item, training items masked.

A *scorer* is any callable ``scorer(users) -> block`` with ``users`` an int64 numpy array and
``block`` a numpy array or torch tensor of shape ``(len(users), n_items)``, higher is better. If the
scorer's signature has a parameter named ``exclude``, it is called as ``scorer(users, exclude=rows)``
with ``rows`` the CSR rows (``train[users]``) of the items that will be masked; a scorer whose result
depends on the mask (the hierarchical scorer picks its candidates among unmasked items) uses it, the
others can ignore it. The evaluator masks those items itself either way.

The evaluator writes ``-inf`` into the returned block at the masked items, so a scorer must return a
block it does not keep (every ready-made scorer returns a fresh one). Torch blocks stay on their
device for masking and top-k; only the (B, K) top lists move to the CPU.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Union

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.arrays import unique_ints
from hashgnn.errors import HashgnnError
from hashgnn.eval.metrics import check_ks, metric_keys, per_user_metrics
from hashgnn.index.topk import mask_, topk_desc

Block = Union[np.ndarray, torch.Tensor]
Scorer = Callable[..., Block]


def _wants_exclude(scorer: Scorer) -> bool:
    try:
        return "exclude" in inspect.signature(scorer).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _as_float_tensor(block: Block) -> torch.Tensor:
    """The block as a writable float32 tensor (on its own device), copying only when needed."""
    if isinstance(block, np.ndarray):
        if not block.flags.writeable or not block.flags.c_contiguous:
            block = np.array(block, order="C", copy=True)
        t = torch.from_numpy(block)
    elif isinstance(block, torch.Tensor):
        t = block.detach()
    else:
        raise HashgnnError(f"a scorer must return a numpy array or a torch tensor, got {type(block).__name__}")
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    if 0 in t.stride():  # an expanded view: writing the mask would hit shared memory
        t = t.contiguous()
    return t


def _rows(matrix: sp.csr_matrix | None, users: np.ndarray, n_items: int) -> sp.csr_matrix:
    if matrix is None:
        return sp.csr_matrix((len(users), n_items), dtype=np.float32)
    return matrix[users]


def _score_top(
    scorer: Scorer,
    users: np.ndarray,
    k: int,
    exclude_rows: sp.csr_matrix,
    n_items: int,
) -> np.ndarray:
    """Top-k item indices (len(users), k) of one user batch, excluded items masked; ``-1`` pads."""
    users = np.asarray(users, dtype=np.int64)
    block = scorer(users, exclude=exclude_rows) if _wants_exclude(scorer) else scorer(users)
    scores = _as_float_tensor(block)
    if tuple(scores.shape) != (len(users), n_items):
        raise HashgnnError(
            f"the scorer returned a block of shape {tuple(scores.shape)}, expected ({len(users)}, {n_items}) "
            "(users x items); do the embeddings or codes match the data set?"
        )
    top = topk_desc(mask_(scores, exclude_rows), k)
    return top.cpu().numpy()


def topk_items(
    scorer: Scorer,
    users: Sequence[int] | np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    n_items: int | None = None,
    batch_users: int = 1024,
) -> np.ndarray:
    """The k best items of every user in ``users``, best first: int64 (len(users), k), ``-1`` pads.

    ``exclude`` (CSR, all users x all items, typically the training matrix) masks each user's row;
    ``n_items`` defaults to ``exclude.shape[1]``, else to the scorer's ``n_items`` attribute (every
    ready-made scorer has one). Ties go to the lower item index. Users are scored ``batch_users`` at
    a time.
    """
    users = np.asarray(users, dtype=np.int64)
    if n_items is None:
        n_items = int(exclude.shape[1]) if exclude is not None else getattr(scorer, "n_items", None)
        if n_items is None:
            raise ValueError("give n_items (or exclude) for a scorer without an n_items attribute")
    out = np.empty((len(users), k), dtype=np.int64)
    for s in range(0, len(users), batch_users):
        ub = users[s : s + batch_users]
        out[s : s + len(ub)] = _score_top(scorer, ub, k, _rows(exclude, ub, n_items), n_items)
    return out


MAX_LIST_BYTES = 2 << 30


def check_cutoffs(ks: Sequence[int] | int, n_items: int, candidates: int | None = None) -> list[int]:
    """User-facing sizes against the data: every K, and C of hierarchical search, at most ``n_items``."""
    ks = check_ks(ks)
    if max(ks) > n_items:
        raise HashgnnError(f"cut-off K must be at most the number of items ({n_items}), got {max(ks)}")
    if candidates is not None and not 1 <= candidates <= n_items:
        raise HashgnnError(
            f"candidates (C of hierarchical search) must be between 1 and the number of items "
            f"({n_items}), got {candidates}"
        )
    return ks


def evaluate(
    scorer: Scorer,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: Sequence[int] | int,
    batch_users: int = 1024,
    progress: bool = True,
    users: Sequence[int] | np.ndarray | None = None,
    legacy_depth: int | None = None,
) -> dict[str, float]:
    """Full-ranking evaluation of ``scorer`` (a score block per user batch) on the test split.

    See :func:`evaluate_ranking` for the protocol; ``scorer`` is any callable
    ``(users) -> (len(users), n_items)`` block, higher is better (module docstring).
    """
    n_items = int(train.shape[1])

    def ranking(ub: np.ndarray, k: int, exclude_rows: sp.csr_matrix) -> np.ndarray:
        return _score_top(scorer, ub, k, exclude_rows, n_items)

    return evaluate_ranking(ranking, train, test, ks, batch_users, progress, users, legacy_depth)


Ranking = Callable[[np.ndarray, int, sp.csr_matrix], np.ndarray]


def evaluate_ranking(
    ranking: Ranking,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: Sequence[int] | int,
    batch_users: int = 1024,
    progress: bool = True,
    users: Sequence[int] | np.ndarray | None = None,
    legacy_depth: int | None = None,
) -> dict[str, float]:
    """Full-ranking evaluation of a ranking function on the test split.

    ``ranking(users, k, exclude_rows)`` returns the (len(users), k) best items of each user, best
    first, ``-1`` padded, never an item of its CSR row in ``exclude_rows`` (e.g.
    :meth:`hashgnn.index.recommend.Retriever.topk`, the code that serves recommendations).
    Every user with at least one test item (among ``users`` if given) ranks all items; the user's
    training items are masked (score ``-inf``) and ties go to the lower item index. Returns
    ``recall@K``, ``ndcg@K``, ``ndcg_legacy@K``, ``precision@K`` and ``hit@K`` for every K in ``ks``
    (averages over the evaluated users; see :mod:`hashgnn.eval.metrics`) and ``n_users``.
    ``legacy_depth`` is the list length from which ``ndcg_legacy`` builds its ideal (default max(ks)).

    Memory: the float32 score block, ``batch_users * n_items * 4`` bytes, plus what the scorer needs
    to make it (the hierarchical scorer holds a second such block), plus the tie-break's work arrays
    for rows whose K-th and (K+1)-th scores tie, handled 2**22 scores at a time: about 21 MB, and up
    to about 230 MB if every score of such a chunk ties (see :mod:`hashgnn.eval.topk`), plus the
    (batch_users, K) lists. Gowalla (40,981 items) with the default 1024 users: a 168 MB block.
    """
    ks = check_ks(ks)
    if batch_users < 1:
        raise HashgnnError(f"batch_users must be at least 1, got {batch_users}")
    if train.shape != test.shape:
        raise HashgnnError(f"train {train.shape} and test {test.shape} must have the same shape (users x items)")
    train = sp.csr_matrix(train)
    test = sp.csr_matrix(test)
    n_items = int(train.shape[1])
    depth = max(ks) if legacy_depth is None else int(legacy_depth)
    if depth < 1:
        raise HashgnnError(f"legacy_depth must be at least 1, got {legacy_depth}")
    list_len = max(*ks, depth)
    # Lists longer than the item count are padded with -1, so K is not bounded by the data here; the
    # (batch_users, K) lists are, before anything is allocated.
    if min(batch_users, test.shape[0]) * list_len * 8 > MAX_LIST_BYTES:
        raise HashgnnError(
            f"cut-off K (or legacy depth) {list_len} with batch_users {batch_users} needs more than "
            f"{MAX_LIST_BYTES >> 30} GiB of ranked lists; the data set has {n_items} items, so K "
            "beyond that only pads the lists"
        )

    candidates = np.arange(test.shape[0], dtype=np.int64) if users is None else unique_ints(np.asarray(users, np.int64))
    if len(candidates) and (candidates[0] < 0 or candidates[-1] >= test.shape[0]):
        raise HashgnnError(f"user indices must lie in [0, {test.shape[0]}), got {candidates[0]}..{candidates[-1]}")
    eval_users = candidates[np.diff(test.indptr)[candidates] > 0]

    sums = dict.fromkeys(metric_keys(ks), 0.0)
    from hashgnn.progress import progress_bar

    bar = progress_bar(len(eval_users), "evaluate", "user", enabled=progress)
    for s in range(0, len(eval_users), batch_users):
        ub = eval_users[s : s + batch_users]
        top = np.asarray(ranking(ub, list_len, train[ub]))
        values, valid = per_user_metrics(top, test[ub], ks, depth)
        for key, v in values.items():
            sums[key] += float(v[valid].sum())
        bar.update(len(ub))
    bar.close()

    n = len(eval_users)
    result: dict[str, float] = {key: (total / n if n else 0.0) for key, total in sums.items()}
    result["n_users"] = n
    return result
