"""Fold a new user into a trained run: code and vector from the items they interacted with, no retraining.

The trained network of the run folder (:meth:`hashgnn.run.Run.model`) encodes a user who was not in
the training graph from a list of item indices, then its hash layer (``model.serve``) gives the
served vector ``z`` and the code ``sign(z)``:

- **lightgcn**: one propagation of those items' layer outputs with the model's normalisation,
  ``E_u^(k) = sum_i (d_u d_i)^-1/2 E_i^(k-1)`` for ``k = 1..K`` (``d_i`` the item's training degree,
  ``d_u`` the number of given items), and the output the mean of ``E_u^(0) .. E_u^(K)``. For a trained
  user, with its own items and its own ``E_u^(0)``, this is exactly its exported vector (tested).
- **sage**: the user tower of the sampler: ``user_fanouts[0]`` of the given items drawn as
  :func:`hashgnn.graph.sampling.sample_neighbors` draws a user's items, their training neighbours
  sampled from the graph, and the tower's aggregators (again exact for a trained user, with the
  same generator state).

A new user has no trained ID embedding: ``E_u^(0)`` is the mean of the trained users' ID embeddings
(the best guess of an unknown user's embedding under the training distribution). Items' outputs are
those of the training graph (one extra user changes them negligibly). Encoders with nothing to
propagate (``mf``) raise :class:`FoldInUnsupported`; to support another encoder, add a function
``fold_<encoder>`` and an entry in ``FoldIn._FOLDERS``.

``spectral_distill`` runs have no network: :class:`SpectralFoldIn` gives the teacher's vector in closed
form (the SVD's own fold-in) and the code by the objective that trained every user's code.
:func:`fold_in_for` picks the folder of a run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from hashgnn.arrays import unique_ints
from hashgnn.errors import HashgnnError

if TYPE_CHECKING:
    from hashgnn.codes.itq import HashProjection


class FoldInUnsupported(HashgnnError):
    """The run's method or encoder cannot encode a user it has not trained on."""


class FoldIn:
    """Encodes users from item lists with a run's trained network (built once, reused per request).

    Args:
        run: a :class:`hashgnn.run.Run` with ``model.safetensors`` and its data set available.
        device: torch device for the network (default: the run's, usually the CPU).
        seed: seed of the sage encoder's neighbour samples; every call restarts from it, so the same
            items always give the same code.
    """

    def __init__(self, run: Any, device: str | None = None, seed: int | None = None) -> None:
        from hashgnn.methods import get_method

        cfg = run.config
        spec = get_method(cfg.model.method)
        encoder = spec.encoder or cfg.model.encoder
        if encoder not in self._FOLDERS:
            raise FoldInUnsupported(
                f"method {cfg.model.method!r} uses the {encoder!r} encoder, which has no graph to fold a new "
                f"user into (fold-in works with the {' and '.join(self._FOLDERS)} encoders and the spectral_distill "
                "method); retrain with the "
                "user's interactions instead"
            )
        self.encoder_name = encoder
        self.model = run.model(device)
        self.bits = int(run.codes.bits)
        self.seed = int(cfg.train.seed if seed is None else seed)
        self._lock = threading.Lock()  # the sage generator and torch's state are per call
        self._prepare: dict[str, Any] = {}
        if encoder == "lightgcn":
            self._prepare_lightgcn()
        else:
            self._prepare_sage()

    # --------------------------------------------------------------------------- preparation
    def _prepare_lightgcn(self) -> None:
        enc = self.model.encoder
        g = enc.graph
        with torch.no_grad():
            from hashgnn.model.lightgcn import spmm

            adj = g.norm_adj()
            x = enc.embedding.weight
            layers = [x[g.n_users :]]  # items' E^(0) .. E^(K-1): what a user's layer k sums
            for _ in range(enc.layers - 1):
                x = spmm(adj, x)
                layers.append(x[g.n_users :])
            self._prepare["item_layers"] = [t.contiguous() for t in layers]
            self._prepare["item_deg"] = g.item_degree().to(torch.float32)
            self._prepare["ego_mean"] = enc.embedding.weight[: g.n_users].mean(dim=0)

    def _prepare_sage(self) -> None:
        enc = self.model.encoder
        with torch.no_grad():
            if enc.user_input.id_emb is not None:
                self._prepare["ego_mean"] = enc.user_input.id_emb.weight.mean(dim=0)

    # --------------------------------------------------------------------------- folding
    def encode(self, items: np.ndarray, ego: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output ``h`` (1, d) of a user who interacted with ``items`` (item indices, >= 1).

        ``ego`` replaces the new user's layer-0 embedding (tests pass a trained user's own to check
        that its exported vector comes back)."""
        items_t = torch.as_tensor(unique_ints(np.asarray(items, dtype=np.int64)), device=self.model.graph.device)
        if items_t.numel() == 0:
            raise HashgnnError("a new user needs at least one item to be folded in")
        with self._lock, torch.no_grad():
            return self._FOLDERS[self.encoder_name](self, items_t, ego)

    def fold_in(self, items: np.ndarray, ego: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(code, z)`` of a new user from its item indices: packed uint8 (ceil(K/8),) and float32 (D,)."""
        from hashgnn.codes.packing import pack_codes

        h = self.encode(items, ego)
        with torch.no_grad():
            z = self.model.serve(h, "user").detach().cpu().numpy().astype(np.float32)
        return pack_codes(z)[0], z[0]

    def _fold_lightgcn(self, items: torch.Tensor, ego: torch.Tensor | None) -> torch.Tensor:
        p = self._prepare
        x0 = p["ego_mean"] if ego is None else ego.reshape(-1)
        # sym. normalisation of the new user's row: 1 / sqrt(d_u * d_i); items unseen in training have
        # degree 0 and, as in norm_adj, contribute nothing
        di = p["item_deg"][items]
        w = torch.where(di > 0, (di * items.numel()).clamp(min=1).rsqrt(), torch.zeros_like(di))
        acc = x0.clone()
        for layer in p["item_layers"]:
            acc = acc + w @ layer[items]
        return (acc / (len(p["item_layers"]) + 1)).unsqueeze(0)

    def _fold_sage(self, items: torch.Tensor, ego: torch.Tensor | None) -> torch.Tensor:
        from hashgnn.graph.sampling import sample_neighbors
        from hashgnn.model.inputs import LEAKY_SLOPE

        enc = self.model.encoder
        g = enc.graph
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        fan = enc.user_fanouts
        # hop 1: the given items, drawn as the sampler draws a user's items (a one-row CSR of them)
        indptr = torch.tensor([0, items.numel()], dtype=torch.long, device=items.device)
        hops = [torch.zeros(1, dtype=torch.long, device=items.device)]
        if fan:
            hops.append(sample_neighbors(indptr, items, hops[0], fan[0], gen).reshape(-1))
        is_user = True  # hop 1 holds items, so hop 2 samples their users, and so on
        for f in fan[1:]:
            is_user = not is_user
            ip, ind = (g.user_indptr, g.user_indices) if is_user else (g.item_indptr, g.item_indices)
            hops.append(sample_neighbors(ip, ind, hops[-1], f, gen).reshape(-1))
        # encode: hop 0 is the new user (its ego embedding), then alternating items / users
        ui = enc.user_input
        if ego is not None or "ego_mean" in self._prepare:
            e0 = (self._prepare["ego_mean"] if ego is None else ego.reshape(-1)).unsqueeze(0)
            parts = [e0]
            if ui.categorical is not None or ui.numeric is not None:
                raise FoldInUnsupported("fold-in of users with attribute columns is not supported")
            h0 = torch.nn.functional.leaky_relu(ui.dense(parts[0]), LEAKY_SLOPE)
        else:
            raise FoldInUnsupported("the user encoder has no ID embedding and no attributes to start from")
        h = [h0]
        for k in range(1, len(hops)):
            inp = enc.item_input if k % 2 == 1 else enc.user_input
            h.append(inp(hops[k].clamp(min=0)))
        return enc._aggregate(h, hops, fan, enc.user_aggs)

    _FOLDERS: ClassVar[dict[str, Callable[[FoldIn, torch.Tensor, torch.Tensor | None], torch.Tensor]]] = {
        "lightgcn": _fold_lightgcn,
        "sage": _fold_sage,
    }


class SpectralFoldIn:
    """Folds a new user into a ``spectral_distill`` run, whose user codes are free parameters.

    - **Vector**: the SVD's fold-in. The teacher's vectors are ``p_u = U[u] w`` and
      ``q_i = V[i] w d_i^gamma`` with ``R~ = U diag(s) V^T`` the normalised matrix
      (:mod:`hashgnn.model.spectral`), and ``U = R~ V diag(1/s)``; so a user with items ``I`` gets
      ``p = (|I| + alpha)^-1/2 sum_{i in I} (d_i + alpha)^-1/2 q_i d_i^-gamma / s``. A run does not save
      ``s``; it is recovered from the trained users, ``s_k = <R~ V w, p>_k / ||p_k||^2`` (exact for an
      exact SVD; for a trained user's own items the fold-in gives back its vector to the accuracy of
      the randomised SVD, tested).
    - With ``spectral.filter: bspm`` the vector is ``r M T_u`` instead (:meth:`_bspm_map`): the
      filter is linear in the user's row, and the map is rebuilt by repeating the seeded fit.
    - **Code**: as in training, the teacher's ``distill.top_r`` best unseen items are the targets of
      the listwise loss against the run's (frozen) item codes. The code starts at the sign of the
      targets' rank-weighted sum of codes (plus the user's own items' with ``distill.positive_weight``:
      the maximiser of the loss's target terms) and takes greedy
      bit flips that lower the loss until none does (:func:`hashgnn.codes.refine.refine_users`).
    - **Query runs** (``distill.query_weight`` > 0), whose continuous vectors are query vectors against
      the item codes: the teacher's vectors are not in the folder, so the seeded teacher fit is
      repeated on the training split (as for ``bspm``) for the targets; the code is folded in as
      above, and the query vector is trained as ``distill_codes`` trains every user's: from the
      teacher vector's PCA + ITQ projection (:class:`hashgnn.codes.itq.HashProjection`, refit), with
      ``epochs_run`` Adam steps (``distill.lr``; one per epoch, the gradient steps a user's row gets
      in training) on the same listwise loss against the frozen item codes, averaged with
      ``distill.ema`` when set (:func:`fold_in_query`). Training's steps also move a row between its
      own batches (Adam's momentum) and against item codes that were still changing, so a trained
      user's own query is not given back exactly (nor its start, for a run trained with
      ``distill.student_epochs`` > 0, which starts the codes from a continuous student).
    """

    def __init__(self, run: Any) -> None:
        from hashgnn.codes.packing import unpack_codes
        from hashgnn.model.spectral import normalized_matrix

        cfg = run.config
        s, d, c = cfg.spectral, cfg.distill, run.codes
        ones = sp.csr_matrix(run.data().train, dtype=np.float32)
        ones.data[:] = 1.0
        # A query run keeps query vectors and +-1 item codes, not the teacher's vectors: refit it.
        self.query_steps = int(run.metrics.get("epochs_run", 0)) if d.query_weight > 0 else 0
        self.lr, self.ema = d.lr, d.ema
        self.item_z = c.item_z
        self.item_codes = torch.from_numpy(unpack_codes(c.item_codes, c.bits))
        self.top_r, self.temperature, self.decay = int(min(d.top_r, c.n_items)), d.temperature, d.decay
        self.positive_weight = d.positive_weight
        self.projection: HashProjection | None = None
        if s.filter == "bspm":
            teacher_users, teacher_items = self._bspm_map(run, ones)
            if d.query_weight > 0:
                self._query_start(run, teacher_users, teacher_items)
            return
        user_z, item_z = c.user_z, c.item_z
        if d.query_weight > 0:
            from hashgnn.model.spectral import embed_factors, spectral_factors

            f = spectral_factors(ones, s.triplets, alpha=s.alpha, power_iters=s.power_iters, seed=cfg.train.seed)
            user_z, item_z = embed_factors(f, s.dim, beta=s.beta, gamma=s.gamma, power=s.power)
            self._query_start(run, user_z, item_z)
        degree = np.asarray(ones.sum(axis=0)).ravel()
        vw = item_z / np.power(np.maximum(degree, 1.0), s.gamma)[:, None].astype(np.float32)  # V w
        a = normalized_matrix(ones, s.alpha).astype(np.float32) @ vw  # U diag(s) w
        den = np.einsum("uk,uk->k", user_z, user_z, dtype=np.float64)
        sing = np.einsum("uk,uk->k", a, user_z, dtype=np.float64) / np.where(den > 0, den, 1.0)
        inv_s = np.where(sing > 0, 1.0 / np.where(sing > 0, sing, 1.0), 0.0)  # w_k = 0: the column stays 0
        di = degree + s.alpha
        col = np.where(di > 0, 1.0 / np.sqrt(np.where(di > 0, di, 1.0)), 0.0)
        self.map = (vw * col[:, None] * inv_s[None, :]).astype(np.float32)  # row i: item i's share of p
        self.singular_values = sing
        self.alpha: float | None = float(s.alpha)

    def _query_start(self, run: Any, user_z: np.ndarray, item_z: np.ndarray) -> None:
        """A query run's refit teacher: its item vectors rank the targets, and the PCA + ITQ map of
        its vectors gives a new user's query the start every trained user's query had."""
        from hashgnn.codes.itq import HashProjection

        s, bits = run.config.spectral, run.codes.bits
        self.item_z = item_z
        self.projection = HashProjection.fit(
            user_z, item_z, bits, s.code_dim, s.popularity_bits, s.itq_iters, run.config.train.seed
        )

    def _bspm_map(self, run: Any, ones: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """The ``bspm`` filter's map: its vectors are linear in the user's row, ``p = r M T_u``.

        ``M`` (:func:`hashgnn.model.spectral.bspm_user_map`) and the balancing ``T_u``
        (:func:`hashgnn.model.spectral.bspm_vectors`) cannot be read back from the saved vectors, so
        the seeded fit is repeated on the run's training split (the same SVD: seconds on Last.fm and
        ml-1m, minutes on gowalla, once at start-up). Returns the refit teacher's user and item
        vectors.
        """
        from hashgnn.model.spectral import bspm_user_map, bspm_vectors, spectral_factors

        cfg = run.config
        s = cfg.spectral
        f = spectral_factors(ones, s.triplets, alpha=s.alpha, power_iters=s.power_iters, seed=cfg.train.seed)
        users, items, tu = bspm_vectors(ones, f, s.dim, s.sharpen, s.ideal_weight, s.ideal_dim, s.out_dim)
        self.map = (bspm_user_map(f, s.dim, s.sharpen, s.ideal_weight, s.ideal_dim) @ tu).astype(np.float32)
        self.singular_values = f.s
        self.alpha = None  # no per-user normalisation
        return users, items

    def vector(self, items: np.ndarray) -> np.ndarray:
        """The teacher's vector (float32 (D,)) of a user with item indices ``items`` (unique)."""
        total = self.map[items].sum(axis=0, dtype=np.float64)
        return (total if self.alpha is None else total / np.sqrt(len(items) + self.alpha)).astype(np.float32)

    def fold_in(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(code, z)`` of a new user from its item indices: packed uint8 (ceil(K/8),) and float32 (D,)
        (for a query run, ``z`` is the query vector against the item codes, (K,))."""
        from hashgnn.codes.distill import teacher_top_r
        from hashgnn.codes.packing import pack_codes, sign
        from hashgnn.codes.refine import Objective, refine_users

        items = unique_ints(np.asarray(items, dtype=np.int64))
        if items.size == 0:
            raise HashgnnError("a new user needs at least one item to be folded in")
        z = self.vector(items)
        seen = sp.csr_matrix((np.ones(items.size, np.float32), items, [0, items.size]), shape=(1, len(self.item_z)))
        targets = teacher_top_r(z[None], self.item_z, seen, self.top_r)
        obj = Objective.of(targets, seen, self.temperature, self.decay, positive_weight=self.positive_weight)
        code = sign(obj.query(self.item_codes, 0, 1).float())
        if bool((targets[0] >= 0).any()):  # a user who has every item has nothing left to rank
            refine_users(code, self.item_codes, obj)
        if self.projection is not None:
            z = fold_in_query(
                self.projection.user_start(z[None])[0],
                self.item_codes.numpy(),
                targets[0],
                items,
                steps=self.query_steps,
                temperature=self.temperature,
                decay=self.decay,
                lr=self.lr,
                ema=self.ema,
                positive_weight=self.positive_weight,
            )
        return pack_codes(code)[0], z


def fold_in_query(
    start: np.ndarray,
    item_codes: np.ndarray,
    targets: np.ndarray,
    seen: np.ndarray,
    *,
    steps: int,
    temperature: float,
    decay: float,
    lr: float,
    ema: float = 0.0,
    positive_weight: float = 0.0,
) -> np.ndarray:
    """One user's query vector against frozen +-1 ``item_codes`` (n_items, K), trained as
    :func:`hashgnn.codes.distill.distill_codes` trains the query vectors (``query_weight`` > 0): from
    ``start`` (K,), ``steps`` Adam steps at ``lr`` (torch's defaults otherwise) of
    :func:`hashgnn.codes.distill.listwise_loss` for the user's ``targets`` (the teacher's items best
    first, -1 padded; weights exp(-rank / decay)) and own items ``seen`` (sorted indices, with
    ``positive_weight``), served as the ``ema`` average when ``ema`` > 0. Returns float32 (K,).

    The loss's gradient is written out (softmax minus target weights) instead of taken by autograd:
    one user against a few thousand items is so small that autograd's overhead was 30x the work.
    ``tests/test_serve.py`` checks the result against autograd and ``torch.optim.Adam``.
    """
    items = np.asarray(item_codes, np.float32)  # no copy of the folder's codes per user
    x = np.asarray(start, np.float32).reshape(-1).copy()
    avg = x.copy()
    t = np.asarray(targets, np.int64).reshape(-1)
    valid = t >= 0
    w = np.where(valid, np.exp(-np.arange(len(t), dtype=np.float32) / np.float32(decay)), np.float32(0.0))
    w = w / max(float(w.sum()), 1e-12)
    own = np.asarray(seen, np.int64)
    unseen = np.ones(len(items), bool)
    unseen[own] = False
    # d(loss)/d(raw) = sum(w) softmax_unseen(raw) - w at the targets
    #                  + positive_weight (softmax(raw) - 1/|own| at the own items)
    hit = np.zeros(len(items), np.float32)
    np.add.at(hit, t[valid], w[valid])
    if len(own) and positive_weight > 0:
        hit[own] += positive_weight / len(own)
    target_mass = float(w.sum()) if unseen.any() else 0.0
    m, v = np.zeros_like(x), np.zeros_like(x)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        raw = items @ x / temperature
        g_raw = -hit
        if target_mass > 0:
            e = np.where(unseen, np.exp(raw - raw[unseen].max()), 0.0)
            g_raw = g_raw + target_mass * e / e.sum()
        if len(own) and positive_weight > 0:
            e = np.exp(raw - raw.max())
            g_raw = g_raw + positive_weight * e / e.sum()
        g = items.T @ g_raw / temperature
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - (lr / (1 - b1**step)) * m / (np.sqrt(v) / np.sqrt(1 - b2**step) + eps)
        if ema > 0:
            avg = ema * avg + (1.0 - ema) * x
    return (avg if ema > 0 else x).astype(np.float32)


def fold_in_for(run: Any) -> FoldIn | SpectralFoldIn:
    """The folder of a run: :class:`SpectralFoldIn` for ``spectral_distill``, else :class:`FoldIn`
    (which raises :class:`FoldInUnsupported` for methods without a graph encoder)."""
    return SpectralFoldIn(run) if run.config.model.method == "spectral_distill" else FoldIn(run)
