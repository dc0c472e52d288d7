"""Every method trains on music_toy; method-specific behaviour (phases, loss parts, shared guidance
draws), determinism of train_epoch, the NaN guard, attributes through build_model."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hashgnn.config import DataConfig, ModelConfig, TrainConfig
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.methods import METHODS as REGISTRY
from hashgnn.model import METHODS, NodeAttributes, build_model
from hashgnn.train.loop import build_optimizer, train_epoch

TINY_MODEL = {
    "bits": 16,
    "id_dim": 12,
    "input_dim": 10,
    "hidden_dim": 10,
    "user_fanouts": [4, 2],
    "item_fanouts": [4],
    "lightgcn_dim": 12,
    "lightgcn_layers": 2,
    "mf_dim": 12,
}
TINY_TRAIN = TrainConfig(batch_size=2048, negatives=3, epochs=2, pretrain_epochs=1, threads=1)


@pytest.fixture(scope="module")
def music_toy(mirror: Path) -> sp.csr_matrix:
    from hashgnn.data import load_interactions

    return load_interactions(DataConfig(dataset="music_toy", valid_fraction=0.0)).train


def _run(train: sp.csr_matrix, tc: TrainConfig = TINY_TRAIN, epochs: int = 1, seed: int = 3, **model_kw):
    cfg = ModelConfig(**{**TINY_MODEL, **model_kw})
    model = build_model(cfg, train, "cpu", train_cfg=tc, seed=seed)
    opt = build_optimizer(model, tc)
    gen = torch.Generator().manual_seed(seed)
    stats = []
    for epoch in range(epochs):
        beta = model.on_epoch_start(epoch)
        stats.append(train_epoch(model, opt, train, tc, epoch, gen, beta=beta, progress=False))
    return model, stats, gen


# mf has no graph encoder, so it runs once; fitted methods have no network (tests/test_fitted.py)
CASES = [
    (m, e)
    for m in METHODS
    for e in ("sage", "lightgcn")
    if REGISTRY[m].fit is None and not (m == "mf" and e == "lightgcn")
]


@pytest.mark.parametrize(("method", "encoder"), CASES)
def test_every_method_trains_one_epoch(music_toy: sp.csr_matrix, method: str, encoder: str) -> None:
    model, stats, gen = _run(music_toy, method=method, encoder=encoder)
    s = stats[0]
    assert np.isfinite(s["loss"]) and s["batches"] == np.ceil(music_toy.nnz / TINY_TRAIN.batch_size)
    zu, zi = model.embed(gen)
    width = {"plain": 10 if encoder == "sage" else 12, "mf": 12}.get(method, 16)
    assert zu.shape == (music_toy.shape[0], width) and zi.shape == (music_toy.shape[1], width)
    assert bool(torch.isfinite(zu).all() and torch.isfinite(zi).all())
    assert model.training  # embed evaluates in eval mode and restores the mode it found
    # the losses each method uses
    if method in ("plain", "mf"):
        assert "recon" not in s and "rank" in s
    elif method == "hashgnn_nr":
        assert "rank" not in s and "recon" in s
    else:
        assert "recon" in s and "rank" in s


def test_hashgnn_sp_freezes_the_encoder_after_pretraining(music_toy: sp.csr_matrix) -> None:
    tc = dataclasses.replace(TINY_TRAIN, pretrain_epochs=1)
    cfg = ModelConfig(**TINY_MODEL, method="hashgnn_sp", encoder="sage", beta_schedule="constant", beta_value=0.5)
    model = build_model(cfg, music_toy, "cpu", train_cfg=tc, seed=0)
    opt = build_optimizer(model, tc)
    gen = torch.Generator().manual_seed(0)
    hash_before = model.user_hash.proj.weight.detach().clone()
    assert model.on_epoch_start(0) == 0.0 and not model.encoder_frozen
    train_epoch(model, opt, music_toy, tc, 0, gen, progress=False)
    assert torch.equal(model.user_hash.proj.weight, hash_before)  # stage 1 trains the encoder only
    enc_before = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    assert model.on_epoch_start(1) == 0.5 and model.encoder_frozen
    train_epoch(model, opt, music_toy, tc, 1, gen, progress=False)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k
    assert not torch.equal(model.user_hash.proj.weight, hash_before)


def test_schedules_per_method(music_toy: sp.csr_matrix) -> None:
    def model_for(method: str, **kw):
        return build_model(
            ModelConfig(**{**TINY_MODEL, **kw}, method=method, encoder="lightgcn"),
            music_toy,
            train_cfg=dataclasses.replace(TINY_TRAIN, epochs=5),
            seed=0,
        )

    m = model_for("hashgnn")
    assert [m.on_epoch_start(e) for e in range(4)] == pytest.approx([0, 0, 0.02, 0.02])
    assert model_for("hash_ste").on_epoch_start(0) == 1.0
    assert model_for("continuous").on_epoch_start(50) == 0.0
    hn = model_for("hashnet")
    hn.on_epoch_start(3)
    assert hn.schedule_state()["scale"] == pytest.approx(2.0)  # (1 + 1.0 * 3) ** 0.5
    gm = model_for("hash_gumbel")
    taus = []
    for e in range(5):
        gm.on_epoch_start(e)
        taus.append(gm.schedule_state()["tau"])
    assert taus[0] == pytest.approx(1.0) and taus[3] == pytest.approx(0.05)  # last soft epoch
    assert all(a > b for a, b in itertools.pairwise(taus[:4]))
    assert gm.on_epoch_start(4) == 1.0  # final epoch: hard bits, straight through


def test_node_guidance_draw_is_shared_by_user_and_positive(music_toy: sp.csr_matrix) -> None:
    cfg = ModelConfig(**TINY_MODEL, method="hashgnn", encoder="lightgcn")
    model = build_model(cfg, music_toy, seed=0)
    b = 400
    hu, hp, hn = torch.randn(b, 12), torch.randn(b, 12), torch.randn(b * 3, 12)
    vu, vp, vn = model.guided(hu, hp, hn, 0.5, torch.Generator().manual_seed(0))
    is_code = lambda v: (v.abs() == 1).all(1)  # noqa: E731  (tanh outputs are never exactly +-1)
    assert torch.equal(is_code(vu), is_code(vp))
    frac_u, frac_n = float(is_code(vu).float().mean()), float(is_code(vn).float().mean())
    assert abs(frac_u - 0.5) < 5 * (0.25 / b) ** 0.5 and abs(frac_n - 0.5) < 5 * (0.25 / (3 * b)) ** 0.5


@pytest.mark.parametrize("encoder", ["sage", "lightgcn"])
def test_train_epoch_is_deterministic(music_toy: sp.csr_matrix, encoder: str) -> None:
    kw = {"method": "hashgnn", "encoder": encoder, "beta_schedule": "constant", "beta_value": 0.4, "guidance": "bit"}
    _, a, ga = _run(music_toy, epochs=2, **kw)
    _, b, gb = _run(music_toy, epochs=2, **kw)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "edges_per_s")} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    assert torch.equal(ga.get_state(), gb.get_state())


def test_nan_loss_raises_before_the_optimiser_step(music_toy: sp.csr_matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(**TINY_MODEL, method="hashgnn", encoder="lightgcn")
    model = build_model(cfg, music_toy, train_cfg=TINY_TRAIN, seed=0)
    opt = build_optimizer(model, TINY_TRAIN)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    orig = model.loss

    def nan_loss(*a, **k):
        loss, parts = orig(*a, **k)
        return loss * float("nan"), parts

    monkeypatch.setattr(model, "loss", nan_loss)
    with pytest.raises(HashgnnError, match="nan at epoch 4 batch 0"):
        train_epoch(model, opt, music_toy, TINY_TRAIN, 4, torch.Generator().manual_seed(0), progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_attributes_flow_through_build_model(music_toy: sp.csr_matrix) -> None:
    n_users, n_items = music_toy.shape
    g = torch.Generator().manual_seed(0)
    ua = NodeAttributes(
        categorical=torch.randint(0, 5, (n_users, 2), generator=g), numeric=torch.randn(n_users, 3, generator=g)
    )
    ia = NodeAttributes(numeric=torch.randn(n_items, 2, generator=g))
    cfg = ModelConfig(**TINY_MODEL, method="hashgnn", encoder="sage")
    tc = dataclasses.replace(TINY_TRAIN, batch_size=4096)
    model = build_model(cfg, music_toy, user_attrs=ua, item_attrs=ia, train_cfg=tc, seed=0)
    opt = build_optimizer(model, tc)
    before = model.encoder.user_input.cat_embs[0].weight.detach().clone()
    stats = train_epoch(model, opt, music_toy, tc, 0, torch.Generator().manual_seed(1), progress=False)
    assert np.isfinite(stats["loss"])
    assert not torch.equal(model.encoder.user_input.cat_embs[0].weight, before)
    with pytest.raises(ConfigError, match="sage"):
        build_model(dataclasses.replace(cfg, encoder="lightgcn"), music_toy, user_attrs=ua)


def test_bad_configs_are_clear_errors(music_toy: sp.csr_matrix) -> None:
    for kw, msg in [
        ({"method": "nope"}, "unknown method"),
        ({"bits": 4}, "between 8 and 256"),
        ({"encoder": "gat"}, "unknown encoder"),
        ({"guidance": "row"}, "guidance"),
        ({"beta_schedule": "cos"}, "schedule"),
        ({"user_fanouts": [0]}, "fan-outs"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            build_model(ModelConfig(**{**TINY_MODEL, **kw}), music_toy)


def test_build_model_seed_gives_identical_weights_and_spares_the_global_rng(music_toy: sp.csr_matrix) -> None:
    cfg = ModelConfig(**TINY_MODEL, method="lsh", encoder="sage")
    state = torch.get_rng_state()
    a = build_model(cfg, music_toy, seed=5).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    b = build_model(cfg, music_toy, seed=5).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "hyperplanes" in a


def test_continuous_weight_adds_the_objective_on_z(music_toy: sp.csr_matrix) -> None:
    """With beta = 1 the codes' loss alone gives z gradient only through the STE; the kept
    continuous term adds exactly ``weight * (recon_weight * recon(z) + rank(z))``."""
    from hashgnn.model.losses import ranking_loss, reconstruction_loss

    cfg = ModelConfig(**TINY_MODEL, method="hash_ste", encoder="lightgcn")
    users, pos = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3])
    neg = torch.tensor([[5, 6], [7, 8], [9, 10], [11, 12]])
    losses = {}
    for w in (0.0, 0.5):
        tc = dataclasses.replace(TINY_TRAIN, continuous_weight=w)
        model = build_model(cfg, music_toy, train_cfg=tc, seed=0)
        beta = model.on_epoch_start(0)
        losses[w], parts = model.loss(users, pos, neg, beta, generator=torch.Generator().manual_seed(0))
        assert ("continuous" in parts) == (w > 0)
    hu, hi = model.encoder(users, torch.cat([pos, neg.reshape(-1)]), torch.Generator())
    zu, zi = model.user_hash(hu), model.item_hash(hi)
    s_pos = (zu * zi[:4]).sum(1)
    s_neg = torch.einsum("bd,bnd->bn", zu, zi[4:].reshape(4, 2, -1))
    expected = TINY_TRAIN.recon_weight * reconstruction_loss(s_pos, s_neg) + ranking_loss(s_pos, s_neg)
    assert (losses[0.5] - losses[0.0]).item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    assert parts["continuous"] == pytest.approx(expected.item(), rel=1e-5)
