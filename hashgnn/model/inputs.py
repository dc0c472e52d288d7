"""Per-node-type input encoder: ID embedding (+ optional attributes) -> dense layer -> leaky ReLU.

This is the authors' ``WideNDeepEncoder``: a learned ID embedding (120 dims in their code), the
embeddings of any categorical attribute columns and the numeric attribute columns are concatenated
and passed through one dense layer (68 units, leaky ReLU). Users and items each have their own
encoder. Initialisation follows TensorFlow 1's defaults that their code relies on: Glorot-uniform
embedding tables and dense kernels, zero dense bias; TensorFlow's leaky ReLU slope is 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from hashgnn.errors import ConfigError

LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default alpha, which the authors' code uses


@dataclass
class NodeAttributes:
    """Attribute table of one node type, one row per node (row ``i`` belongs to node ``i``).

    Attributes:
        categorical: (n, c) int64 category codes ``0..cardinality-1`` per column, or None.
        numeric: (n, d) float32 numeric columns, or None. They enter the network as they are, so
            standardise them first (the authors' code scales each column to mean 0, sd 1).
        cardinalities: categories per categorical column; None infers ``max + 1`` per column.
    """

    categorical: torch.Tensor | None = None
    numeric: torch.Tensor | None = None
    cardinalities: list[int] | None = None

    def n_rows(self) -> int | None:
        """Rows of the table, or None when it holds no column."""
        for t in (self.categorical, self.numeric):
            if t is not None:
                return int(t.shape[0])
        return None


def category_embedding_size(n_categories: int) -> int:
    """Embedding width of a categorical column, by its number of categories (the authors' rule)."""
    if n_categories < 20:
        return 4
    if n_categories < 1000:
        return 8
    if n_categories < 10000:
        return 16
    return 32


def glorot_(t: torch.Tensor) -> torch.Tensor:
    """Glorot-uniform init of a 2-D tensor in place, TensorFlow's fan convention (rows, cols)."""
    bound = (6.0 / (t.shape[0] + t.shape[1])) ** 0.5
    with torch.no_grad():
        return t.uniform_(-bound, bound)


def dense(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    """A ``tf.layers.dense``-like linear layer: Glorot-uniform kernel, zero bias."""
    lin = nn.Linear(in_dim, out_dim, bias=bias)
    glorot_(lin.weight)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


class InputEncoder(nn.Module):
    """``leaky_relu(W [id_emb(v) || cat_emb_1(v) || ... || numeric(v)] + b)`` for nodes ``v``.

    Args:
        n_nodes: nodes of this type.
        id_dim: ID embedding width (0 drops the ID embedding; then attributes are required).
        out_dim: dense layer width.
        attrs: optional attribute table (the paper's "wide and deep" input for attributed data).
    """

    def __init__(self, n_nodes: int, id_dim: int, out_dim: int, attrs: NodeAttributes | None = None) -> None:
        super().__init__()
        self.n_nodes, self.id_dim, self.out_dim = n_nodes, id_dim, out_dim
        width = 0
        self.id_emb: nn.Embedding | None = None
        if id_dim > 0:
            self.id_emb = nn.Embedding(n_nodes, id_dim)
            glorot_(self.id_emb.weight)
            width += id_dim
        self.cat_embs = nn.ModuleList()
        self.register_buffer("categorical", None, persistent=False)
        self.register_buffer("numeric", None, persistent=False)
        if attrs is not None:
            rows = attrs.n_rows()
            if rows is not None and rows != n_nodes:
                raise ConfigError(
                    f"attribute table has {rows} rows but there are {n_nodes} nodes; "
                    "give one row per node, in node index order"
                )
            if attrs.categorical is not None:
                cat = attrs.categorical.long()
                if cat.ndim != 2:
                    raise ConfigError(f"categorical attributes must be (n, c), got shape {tuple(cat.shape)}")
                if bool((cat < 0).any()):
                    raise ConfigError("categorical attributes must be codes 0..cardinality-1; found a negative code")
                cards = attrs.cardinalities or [int(c) + 1 for c in cat.max(dim=0).values.tolist()]
                if len(cards) != cat.shape[1] or any(int(cat[:, j].max()) >= cards[j] for j in range(cat.shape[1])):
                    raise ConfigError("cardinalities must give one count per categorical column, above every code")
                for n_cat in cards:
                    emb = nn.Embedding(n_cat, category_embedding_size(n_cat))
                    glorot_(emb.weight)
                    self.cat_embs.append(emb)
                    width += emb.embedding_dim
                self.categorical = cat
            if attrs.numeric is not None:
                num = attrs.numeric.float()
                if num.ndim != 2:
                    raise ConfigError(f"numeric attributes must be (n, d), got shape {tuple(num.shape)}")
                self.numeric = num
                width += num.shape[1]
        if width == 0:
            raise ConfigError("an input encoder needs an ID embedding (id_dim > 0) or attribute columns")
        self.dense = dense(width, out_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Encode node ids of any shape (valid ids only) to ``(*ids.shape, out_dim)``."""
        parts = []
        if self.id_emb is not None:
            parts.append(self.id_emb(ids))
        if self.categorical is not None:
            cat = self.categorical[ids]
            parts.extend(emb(cat[..., j]) for j, emb in enumerate(self.cat_embs))
        if self.numeric is not None:
            parts.append(self.numeric[ids])
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return F.leaky_relu(self.dense(x), LEAKY_SLOPE)

    def ego(self, ids: torch.Tensor) -> torch.Tensor:
        """The ID embedding rows of ``ids`` (what an L2 penalty on the batch's embeddings acts on)."""
        if self.id_emb is None:
            return torch.zeros((*ids.shape, 0), device=ids.device)
        return self.id_emb(ids)
