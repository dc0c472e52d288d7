"""Synthetic power-law bipartite interaction graphs, for testing at sizes no public data set has.

``synth_graph(n_users, n_items, n_edges, seed)`` draws ``n_edges`` distinct (user, item) pairs whose
endpoints follow Zipf-like popularity: node ``k`` of a seeded random order of a side is drawn with
probability proportional to ``(k + 1) ** -exponent``, so a few users and items have many edges and
most have few, as in real interaction logs. ``write_synth`` writes them as a table (``.csv``,
``.tsv``, ``.parquet``: columns ``user``, ``item``) or as a folder of ``train.txt`` / ``test.txt``
in the one-line-per-user format (split per user like a table, :func:`hashgnn.data.split.split_per_user`).

Everything is vectorised numpy over int32 / int64 arrays (no per-edge Python objects): endpoints by
inverse-CDF lookup (``searchsorted``), duplicates removed with one ``unique`` over ``user * n_items +
item`` keys per round, the missing edges redrawn in the next round. Memory is a few arrays of
``n_edges`` int64 (about 8 bytes x 4 per edge at the peak).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hashgnn.arrays import unique_ints
from hashgnn.data.table import table_kind
from hashgnn.errors import ConfigError

MAX_ROUNDS = 30


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -float(exponent)
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return cdf


def synth_graph(
    n_users: int,
    n_items: int,
    n_edges: int,
    seed: int = 0,
    user_exponent: float = 0.5,
    item_exponent: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_edges`` distinct (user, item) pairs with power-law degrees, sorted by user then item.

    Returns two int32 arrays (user and item indices in ``0..n-1``). Exponent 0 gives uniform
    endpoints; larger exponents concentrate the edges on fewer nodes. If the power law cannot supply
    enough distinct pairs within :data:`MAX_ROUNDS` rounds (a tiny graph asked to be nearly complete),
    the remaining edges are drawn uniformly among the pairs not yet taken.

    Raises:
        ConfigError: a size below 1, more edges than user-item pairs, or a negative exponent.
    """
    if min(n_users, n_items, n_edges) < 1:
        raise ConfigError(f"--users, --items and --edges must be at least 1, got {n_users}, {n_items}, {n_edges}")
    if n_edges > n_users * n_items:
        raise ConfigError(f"--edges {n_edges} exceeds the {n_users * n_items} possible user-item pairs")
    if max(n_users, n_items) >= 2**31:
        raise ConfigError("--users and --items must be below 2^31 (int32 indices)")
    if user_exponent < 0 or item_exponent < 0:
        raise ConfigError(f"exponents must be at least 0, got {user_exponent} and {item_exponent}")
    rng = np.random.default_rng(seed)
    # Popularity rank -> node id, so that popular nodes are spread over the id space.
    user_of_rank = rng.permutation(n_users).astype(np.int32)
    item_of_rank = rng.permutation(n_items).astype(np.int32)
    ucdf = _zipf_cdf(n_users, user_exponent)
    icdf = _zipf_cdf(n_items, item_exponent)
    keys = np.empty(0, dtype=np.int64)
    for _ in range(MAX_ROUNDS):
        need = n_edges - len(keys)
        if need <= 0:
            break
        draw = int(need * 1.05) + 1024
        u = user_of_rank[np.minimum(np.searchsorted(ucdf, rng.random(draw)), n_users - 1)].astype(np.int64)
        i = item_of_rank[np.minimum(np.searchsorted(icdf, rng.random(draw)), n_items - 1)]
        u *= n_items
        u += i
        keys = unique_ints(np.concatenate([keys, u]))
        del u, i
    else:
        keys = _fill_uniform(keys, n_users * n_items, n_edges, rng)
    if len(keys) > n_edges:  # the last round's surplus, dropped at random
        drop = rng.choice(len(keys), len(keys) - n_edges, replace=False)
        keep = np.ones(len(keys), dtype=bool)
        keep[drop] = False
        keys = keys[keep]
    users = (keys // n_items).astype(np.int32)
    items = (keys % n_items).astype(np.int32)
    return users, items


def _fill_uniform(keys: np.ndarray, n_pairs: int, n_edges: int, rng: np.random.Generator) -> np.ndarray:
    """Add uniformly drawn pairs not yet in ``keys`` until there are ``n_edges``."""
    while len(keys) < n_edges:
        need = n_edges - len(keys)
        extra = rng.integers(0, n_pairs, size=need * 2 + 16, dtype=np.int64)
        keys = unique_ints(np.concatenate([keys, extra]))
    return keys


def write_synth(
    out: str | Path,
    users: np.ndarray,
    items: np.ndarray,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> list[Path]:
    """Write the pairs to ``out``: a table file by its suffix, otherwise a folder of train/test txt.

    Tables hold every pair (``hashgnn train --dataset out.csv`` splits them, ``--test-fraction``);
    the txt folder is split here (``test_fraction`` of each user's pairs, seeded) because the format
    is pre-split. Returns the files written. Writing goes through pyarrow's writers, vectorised.
    """
    import pyarrow as pa

    out = Path(out)
    kind = table_kind(out)
    users = np.ascontiguousarray(users, dtype=np.int32)
    items = np.ascontiguousarray(items, dtype=np.int32)
    if kind is not None:
        if out.suffix.lower() in (".gz", ".bz2", ".xz", ".zip"):
            raise ConfigError(f"--out {out}: write an uncompressed .csv, .tsv or .parquet (compress it afterwards)")
        table = pa.table({"user": users, "item": items})
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.part")
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pacsv

            sep = "\t" if out.suffix.lower() in (".tsv", ".tab") else ","
            pacsv.write_csv(table, tmp, pacsv.WriteOptions(delimiter=sep, quoting_style="none"))
        tmp.replace(out)
        return [out]
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; give a .csv/.tsv/.parquet file or a folder")
    from hashgnn.data.split import split_per_user

    is_test = split_per_user(users, int(users.max()) + 1, "random", test_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, mask in (("train.txt", ~is_test), ("test.txt", is_test)):
        path = out / name
        _write_user_lines(path, users[mask], items[mask])
        written.append(path)
    return written


def _write_user_lines(path: Path, users: np.ndarray, items: np.ndarray) -> None:
    """One line per user, ``user item item ...``, for pairs sorted by user (vectorised with pyarrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    listed, starts = np.unique(users, return_index=True)
    offsets = np.append(starts, len(users)).astype(np.int64)
    item_text = pc.cast(pa.array(items), pa.string())
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), item_text)
    lines = pc.binary_join_element_wise(pc.cast(pa.array(listed), pa.string()), pc.binary_join(lists, " "), " ")
    tmp = path.with_name(f".{path.name}.part")
    pacsv.write_csv(pa.table({"line": lines}), tmp, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    tmp.replace(path)
