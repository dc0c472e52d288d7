"""The project's one exact, deterministic top-k of a score block: score descending, ties to the lower index.

Used by every float ranking: :class:`hashgnn.index.FloatIndex` (torch backend, what runs serve and
are evaluated with), the evaluator's score blocks and the hierarchical scorer's candidates.

``torch.topk`` returns the right values but, among equal scores, an unspecified choice and order of
indices (and Hamming scores take only ``bits + 1`` distinct values, so ties are the rule there). The
fix below stays vectorised and touches the full block only a few times:

1. ``torch.topk`` of k + 1 gives the k-th largest value ``t`` of each row. Every item scored above
   ``t`` is certainly in the top k; the remaining ``k - #(> t)`` slots go to items scored exactly ``t``.
2. Only where the (k+1)-th value also equals ``t`` did topk choose among tied items; those rows are
   redone: ``nonzero`` of ``== t`` lists their tied items row-major (so by ascending index), and the
   first free-slot-many of each row fill the slots that topk gave to tied items.
3. The k winners of every row are put in order by a stable sort on score after a sort on index.

Items scored ``-inf`` (masked) are never returned: their slots hold ``-1``. NaN scores are an error.
Working memory beyond the block: the (rows, k + 1) top-k, and for the rows being repaired, a chunk
of at most ``repair_entries`` (default 2**22) scores at a time, 5 bytes per score (a float copy and a
bool mask) plus about 50 bytes per tied score: 21 MB, and about 230 MB in the degenerate worst case
where every score of the chunk ties.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.arrays import repeat_rows
from hashgnn.errors import HashgnnError


def mask_(scores: torch.Tensor, exclude_rows: sp.csr_matrix) -> torch.Tensor:
    """Set ``scores[b, i] = -inf`` in place for every item i in CSR row b of ``exclude_rows``."""
    if exclude_rows.nnz:
        lengths = np.diff(exclude_rows.indptr)
        rows = torch.from_numpy(repeat_rows(lengths))
        cols = torch.from_numpy(exclude_rows.indices.astype(np.int64))
        scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
    return scores


def _repair_ties(scores: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor, rows: torch.Tensor) -> None:
    """Redo ``idx[rows]`` in place: the slots of items equal to the k-th value go to the lowest indices."""
    kk = idx.shape[1]
    thr = vals[rows, kk - 1]
    n_gt = (vals[rows] > thr.unsqueeze(1)).sum(dim=1)  # these items and their slots 0..n_gt-1 are right
    r, c = (scores[rows] == thr.unsqueeze(1)).nonzero(as_tuple=True)  # tied items, row-major
    counts = torch.bincount(r, minlength=len(rows))  # >= 2 per repaired row, never 0
    rank = torch.arange(len(r), device=r.device) - (torch.cumsum(counts, 0) - counts)[r]
    keep = rank < (kk - n_gt)[r]
    idx[rows[r[keep]], (n_gt[r] + rank)[keep]] = c[keep]


def topk_desc(scores: torch.Tensor, k: int, repair_entries: int = 1 << 22) -> torch.Tensor:
    """Indices (B, k) int64 of the k best items per row, by (score desc, index asc); ``-1`` pads.

    Rows with fewer than k items scored above ``-inf`` (or fewer than k items at all) end in ``-1``.
    The result stays on the device of ``scores``. Rows whose k-th and (k+1)-th values tie are
    repaired a chunk of about ``repair_entries`` scores at a time, which bounds the extra memory.
    """
    if scores.ndim != 2:
        raise ValueError(f"expected a 2-D score block, got shape {tuple(scores.shape)}")
    b, n = scores.shape
    out = torch.full((b, k), -1, dtype=torch.int64, device=scores.device)
    kk = min(k, n)
    if b == 0 or kk == 0:
        return out

    # one value past the k-th tells whether the row's choice among tied items was arbitrary
    extra = 1 if kk < n else 0
    vals, idx = torch.topk(scores, kk + extra, dim=1, largest=True, sorted=True)
    # topk ranks NaN above everything, so a NaN anywhere in a row shows up in its top values
    if torch.isnan(vals).any():
        raise HashgnnError("the scorer returned NaN scores; check the model or embeddings (a diverged run?)")
    if extra:
        # (a tie at -inf needs no repair: those slots become -1 anyway)
        tie = (vals[:, kk] == vals[:, kk - 1]) & (vals[:, kk - 1] > float("-inf"))
        redo = tie.nonzero().squeeze(1)
        vals, idx = vals[:, :kk], idx[:, :kk].contiguous()
        chunk = max(1, repair_entries // n)
        for s in range(0, redo.numel(), chunk):
            _repair_ties(scores, idx, vals, redo[s : s + chunk])

    idx, _ = idx.sort(dim=1)
    vals = scores.gather(1, idx)
    order = vals.sort(dim=1, descending=True, stable=True).indices
    idx = idx.gather(1, order)
    vals = vals.gather(1, order)
    idx[vals == float("-inf")] = -1
    out[:, :kk] = idx
    return out
