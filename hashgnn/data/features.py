"""Node attributes: read from a table, aligned to the node indices, encoded for the input encoder.

Attributes of users or items come from a RecBole ``.user`` / ``.item`` file (typed columns) or any
table (CSV/TSV/Parquet; a column is numeric when every value parses as a number, else a token). One
column is the node id; every other column is an attribute:

- ``token`` (a category): a vocabulary of the values seen, code ``1..V`` and ``0`` for a missing or
  unseen value; the input encoder learns an embedding per column
  (:class:`hashgnn.model.inputs.InputEncoder`);
- ``token_seq`` (a set of categories, space-separated, e.g. genres): multi-hot over its
  :data:`MAX_SEQ_TOKENS` most frequent tokens, entering as 0/1 numeric columns;
- ``float``: standardised with the mean and standard deviation over the nodes that have a value;
  a missing value becomes the mean (0 after standardising);
- ``float_seq``: not used (a warning says so).

The fitted :class:`FeatureEncoder` (vocabularies, means, standard deviations) is plain JSON, saved with
the run (``features.json``), so that the attributes of new nodes are encoded exactly as in training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hashgnn.errors import DataError, DataWarning

FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")
MAX_SEQ_TOKENS = 64  # multi-hot width of a token_seq column (its most frequent tokens)
MAX_VOCAB = 100_000  # a token column with more values keeps the most frequent ones


@dataclass
class NodeFeatures:
    """Raw attribute columns of one node type, one row per node index.

    ``columns[name]`` has one entry per node: strings for ``token`` / ``token_seq`` columns ("" when
    the node has no value), float64 for ``float`` columns (NaN when missing).
    """

    side: str
    source: str
    columns: dict[str, np.ndarray]
    types: dict[str, str]
    n_nodes: int
    n_matched: int  # nodes with a row in the source

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (``hashgnn data info``)."""
        return {
            "source": self.source,
            "columns": {k: self.types[k] for k in self.columns},
            "nodes_with_a_row": self.n_matched,
            "nodes": self.n_nodes,
        }


def align_features(
    side: str,
    source: str | Path,
    frame: pd.DataFrame,
    types: dict[str, str],
    id_col: str,
    node_ids: np.ndarray | None,
    n_nodes: int,
) -> NodeFeatures:
    """Put the rows of ``frame`` (all string columns) in node index order by their ``id_col``.

    ``node_ids`` are the data set's original ids (index ``k`` has id ``node_ids[k]``), or None when
    the ids are the indices. Rows of unknown ids are ignored, nodes without a row get missing values,
    a repeated id keeps its first row; each is counted in a :class:`DataWarning`.
    """
    if id_col not in frame.columns:
        raise DataError(f"has no id column {id_col!r}; columns found: {list(frame.columns)}", source, 1)
    keys = frame[id_col].astype(str).str.strip().to_numpy()
    known = np.arange(n_nodes).astype(str) if node_ids is None else np.asarray(node_ids).astype(str)
    pos = pd.Index(known).get_indexer(keys)
    first = ~pd.Series(keys).duplicated().to_numpy()
    n_dup = int((~first).sum())
    use = (pos >= 0) & first
    n_unknown = int(((pos < 0) & first).sum())
    if n_dup or n_unknown:
        warnings.warn(
            f"{source}: {n_unknown} row(s) with {side} ids that are not in the interactions were ignored"
            + (f", and {n_dup} repeated id(s) kept their first row" if n_dup else ""),
            DataWarning,
            stacklevel=3,
        )
    rows, at = np.flatnonzero(use), pos[use]
    columns: dict[str, np.ndarray] = {}
    kept_types: dict[str, str] = {}
    for name, kind in types.items():
        if name == id_col:
            continue
        if kind == "float_seq":
            warnings.warn(
                f"{source}: column {name!r} (float_seq) is not used as an attribute", DataWarning, stacklevel=3
            )
            continue
        col = frame[name].to_numpy()
        if kind == "float":
            values = np.full(n_nodes, np.nan)
            values[at] = pd.to_numeric(pd.Series(col[rows]), errors="coerce").to_numpy(dtype=np.float64)
        else:
            values = np.full(n_nodes, "", dtype=object)
            values[at] = pd.Series(col[rows]).astype(str).str.strip().to_numpy()
        columns[name], kept_types[name] = values, kind
    return NodeFeatures(side, str(source), columns, kept_types, n_nodes, len(at))


def read_feature_table(
    path: str | Path, side: str, id_col: str | None, node_ids: np.ndarray | None, n_nodes: int
) -> NodeFeatures:
    """Attributes from a RecBole ``.user`` / ``.item`` file or a CSV/TSV/Parquet table.

    ``id_col`` None: ``user_id`` / ``item_id`` when the file has it, else the first column.
    """
    from hashgnn.data.recbole import ATOMIC_SUFFIXES, read_atomic
    from hashgnn.data.table import read_frame

    path = Path(path).expanduser()
    if path.suffix.lower() in ATOMIC_SUFFIXES:
        atomic = read_atomic(path)
        frame, types = atomic.frame, atomic.types
    else:
        frame = read_frame(path)
        types = {}
        for name in frame.columns:
            s = frame[name].astype(str).str.strip()
            nums = pd.to_numeric(s.replace("", np.nan), errors="coerce")
            types[name] = "float" if nums.notna().sum() == (s != "").sum() and (s != "").any() else "token"
    if id_col is None:
        default = f"{side}_id"
        id_col = default if default in frame.columns else str(frame.columns[0])
    if frame.empty:
        raise DataError("has no rows; expected one row of attributes per node", path)
    return align_features(side, path, frame, types, id_col, node_ids, n_nodes)


def _token_pairs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node, token) pairs of a space-separated token_seq column, each pair once (set semantics)."""
    s = pd.Series(values).astype(str).str.split().explode()
    s = s[s.notna() & (s != "")]
    pairs = pd.DataFrame({"row": s.index.to_numpy(dtype=np.int64), "tok": s.to_numpy(dtype=str)}).drop_duplicates()
    return pairs["row"].to_numpy(), pairs["tok"].to_numpy(dtype=str)


@dataclass
class ColumnEncoder:
    """How one attribute column becomes model input (plain JSON)."""

    name: str
    kind: str  # category | multi_hot | numeric
    vocab: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def width(self) -> int:
        """Numeric columns this column adds (0 for a category, which adds one code column)."""
        return len(self.vocab) if self.kind == "multi_hot" else (1 if self.kind == "numeric" else 0)


@dataclass
class FeatureEncoder:
    """Fitted encoders of one node type's attribute columns; ``transform`` gives :class:`NodeAttributes`."""

    side: str
    columns: list[ColumnEncoder]

    @classmethod
    def fit(cls, features: NodeFeatures) -> FeatureEncoder:
        """Vocabularies and standardisation from ``features`` (every node's row, no interactions)."""
        cols: list[ColumnEncoder] = []
        for name, kind in features.types.items():
            values = features.columns[name]
            if kind == "token":
                counts = pd.Series(values[values != ""]).value_counts(sort=True)
                vocab = sorted(map(str, counts.index[:MAX_VOCAB]))
                if vocab:
                    cols.append(ColumnEncoder(name, "category", vocab))
            elif kind == "token_seq":
                _, tokens = _token_pairs(values)
                counts = pd.Series(tokens).value_counts(sort=True)
                vocab = sorted(map(str, counts.index[:MAX_SEQ_TOKENS]))
                if vocab:
                    cols.append(ColumnEncoder(name, "multi_hot", vocab))
            else:
                v = values.astype(np.float64)
                ok = np.isfinite(v)
                if ok.any():
                    mean, std = float(v[ok].mean()), float(v[ok].std())
                    cols.append(ColumnEncoder(name, "numeric", mean=mean, std=std if std > 0 else 1.0))
        return cls(features.side, cols)

    def transform(self, features: NodeFeatures) -> Any:
        """The encoded table: ``NodeAttributes(categorical (n, c) int64, numeric (n, d) float32)``,
        or None when no column is left to encode."""
        import torch

        from hashgnn.model.inputs import NodeAttributes

        n = features.n_nodes
        cats, nums, cards = [], [], []
        for c in self.columns:
            if c.name not in features.columns:
                raise DataError(f"has no attribute column {c.name!r}, which the run was trained with", features.source)
            values = features.columns[c.name]
            if c.kind == "category":
                codes = pd.Index(c.vocab).get_indexer(pd.Series(values).astype(str)) + 1  # -1 (unseen) -> 0
                cats.append(codes.astype(np.int64))
                cards.append(len(c.vocab) + 1)
            elif c.kind == "multi_hot":
                rows, tokens = _token_pairs(values)
                col = pd.Index(c.vocab).get_indexer(tokens)
                hot = np.zeros((n, len(c.vocab)), dtype=np.float32)
                hot[rows[col >= 0], col[col >= 0]] = 1.0
                nums.append(hot)
            else:
                v = np.asarray(values, dtype=np.float64)
                z = np.where(np.isfinite(v), (v - c.mean) / c.std, 0.0)
                nums.append(z.astype(np.float32)[:, None])
        if not (cats or nums):
            return None
        return NodeAttributes(
            categorical=torch.from_numpy(np.stack(cats, axis=1)) if cats else None,
            numeric=torch.from_numpy(np.concatenate(nums, axis=1)) if nums else None,
            cardinalities=cards or None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``features.json`` of a run)."""
        return {"side": self.side, "columns": [vars(c).copy() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        """Inverse of :meth:`to_dict`; a malformed dict raises ``KeyError`` / ``TypeError``."""
        return cls(str(d["side"]), [ColumnEncoder(**c) for c in d["columns"]])


__all__ = ["FEATURE_TYPES", "ColumnEncoder", "FeatureEncoder", "NodeFeatures", "align_features", "read_feature_table"]


def attributes_for_model(
    data: Any, method: str, encoder: str, saved: dict[str, FeatureEncoder] | None = None
) -> tuple[dict[str, FeatureEncoder], dict[str, Any]]:
    """Fitted encoders and encoded tables (side -> NodeAttributes) of ``data``'s node attributes.

    ``saved`` (a resumed run's encoders) are used instead of fitting new ones, so a run encodes its
    attributes one way throughout. Attributes feed the sage encoder's input layer only: with another
    encoder (or mf) they are left out, with a :class:`DataWarning` saying so.
    """
    from hashgnn.methods import get_method

    sides = {s: f for s, f in (("user", data.user_features), ("item", data.item_features)) if f is not None}
    if not sides:
        return {}, {}
    if encoder != "sage" or get_method(method).encoder == "mf":
        warnings.warn(
            f"{', '.join(f.source for f in sides.values())}: node attributes are not used by method "
            f"{method} with the {encoder} encoder (only the sage encoder's input layer reads them)",
            DataWarning,
            stacklevel=2,
        )
        return {}, {}
    encoders: dict[str, FeatureEncoder] = {}
    attrs: dict[str, Any] = {}
    for side, feats in sides.items():
        enc = (saved or {}).get(side) or FeatureEncoder.fit(feats)
        table = enc.transform(feats)
        if table is not None:
            encoders[side], attrs[side] = enc, table
    return encoders, attrs


def save_attributes(folder: Path, encoders: dict[str, FeatureEncoder], attrs: dict[str, Any]) -> None:
    """Write ``features.json`` (the encoders) and ``attributes.safetensors`` (the encoded tables)."""
    from hashgnn.io import write_json, write_safetensors
    from hashgnn.run import Run

    tensors = {}
    for side, a in attrs.items():
        if a.categorical is not None:
            tensors[f"{side}.categorical"] = a.categorical
        if a.numeric is not None:
            tensors[f"{side}.numeric"] = a.numeric
    write_safetensors(folder / Run.ATTRIBUTES, tensors)
    write_json(
        folder / Run.FEATURES,
        {
            "format": 1,
            "sides": {
                side: {**enc.to_dict(), "cardinalities": attrs[side].cardinalities} for side, enc in encoders.items()
            },
        },
    )


def load_attributes(folder: Path) -> tuple[dict[str, FeatureEncoder], dict[str, Any]]:
    """Inverse of :func:`save_attributes`; ``({}, {})`` when the run has no attributes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hashgnn.io import ArtifactError, read_json
    from hashgnn.model.inputs import NodeAttributes
    from hashgnn.run import Run

    path = folder / Run.FEATURES
    if not path.exists():
        return {}, {}
    meta = read_json(path, "attribute encoders")
    try:
        encoders = {side: FeatureEncoder.from_dict(d) for side, d in meta["sides"].items()}
        cards = {side: d.get("cardinalities") for side, d in meta["sides"].items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(path, f"not the attribute encoders of a run ({e})", "train the run again") from None
    try:
        tensors = load_file(folder / Run.ATTRIBUTES)
    except (OSError, SafetensorError) as e:
        raise ArtifactError(folder / Run.ATTRIBUTES, f"unreadable ({e})", "train the run again") from None
    attrs = {
        side: NodeAttributes(
            categorical=tensors.get(f"{side}.categorical"),
            numeric=tensors.get(f"{side}.numeric"),
            cardinalities=cards[side],
        )
        for side in encoders
    }
    return encoders, attrs
