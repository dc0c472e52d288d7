"""Model building blocks: STE, hash layer, guidance mixing and schedules, losses on hand-computed
examples, the input encoder with attributes."""

from __future__ import annotations

import math

import pytest
import torch

from hashgnn.errors import ConfigError
from hashgnn.model import HashLayer, InputEncoder, NodeAttributes, ste_sign
from hashgnn.model.guidance import beta_at, code_mask, mix
from hashgnn.model.losses import bpr_loss, l2_penalty, margin_loss, ranking_loss, reconstruction_loss


# ----------------------------------------------------------------------------------------------- STE
def test_ste_forward_is_sign_with_zero_to_plus_one() -> None:
    z = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0])
    assert ste_sign(z).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


def test_ste_gradient_is_the_identity() -> None:
    z = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (ste_sign(z) * w).sum().backward()
    assert z.grad is not None and z.grad.tolist() == w.tolist()


def test_clipped_ste_gradient_is_zero_outside_unit_interval() -> None:
    z = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], requires_grad=True)
    w = torch.arange(1.0, 8.0)
    (ste_sign(z, clip=True) * w).sum().backward()
    expected = [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]
    assert z.grad is not None and z.grad.tolist() == expected


@pytest.mark.parametrize("bits", [8, 13, 64, 256])
def test_hash_layer_gives_k_dims_in_open_unit_interval(bits: int) -> None:
    torch.manual_seed(0)
    layer = HashLayer(20, bits)
    z = layer(torch.randn(7, 20))
    assert z.shape == (7, bits) and bool((z.abs() < 1).all())
    assert torch.allclose(layer(torch.ones(2, 20), scale=3.0), torch.tanh(3.0 * layer.logits(torch.ones(2, 20))))


# ------------------------------------------------------------------------------------------ guidance
def test_staircase_schedule_matches_the_authors_list() -> None:
    got = [beta_at(e, "staircase") for e in range(8)]
    assert got == pytest.approx([0.0, 0.0, 0.02, 0.02, 0.04, 0.04, 0.06, 0.06])
    assert beta_at(100, "staircase") == pytest.approx(1.0)
    assert beta_at(500, "staircase") == 1.0  # held at 1 (the code's list would fall back to 0)


def test_linear_and_constant_schedules() -> None:
    assert [beta_at(e, "linear", epochs=4) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert beta_at(3, "constant", value=0.5) == 0.5
    with pytest.raises(ConfigError):
        beta_at(0, "cosine")


@pytest.mark.parametrize("granularity", ["node", "bit"])
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_code_mask_hits_the_expected_fraction(granularity: str, beta: float) -> None:
    rows, bits = 20000, 16
    mask = code_mask((rows,), bits, beta, granularity, torch.Generator().manual_seed(42), torch.device("cpu"))
    z = torch.zeros(rows, bits)
    code = torch.ones(rows, bits)
    mixed = mix(z, code, mask)
    assert mixed.shape == (rows, bits)
    if granularity == "node":
        # one draw per row: a row is all code or all continuous
        assert bool(((mixed == 0).all(1) | (mixed == 1).all(1)).all())
        n = rows
        frac = float(mixed[:, 0].mean())
    else:
        n = rows * bits
        frac = float(mixed.mean())
    sd = math.sqrt(beta * (1 - beta) / n)
    assert abs(frac - beta) <= 5 * sd + 1e-12


def test_mix_node_granularity_shares_draws_across_bits_but_not_rows() -> None:
    mask = code_mask((1000,), 8, 0.5, "node", torch.Generator().manual_seed(0), torch.device("cpu"))
    assert isinstance(mask, torch.Tensor) and mask.shape == (1000, 1)
    assert 0 < int(mask.sum()) < 1000


# -------------------------------------------------------------------------------------------- losses
S_POS = torch.tensor([2.0, -1.0])
S_NEG = torch.tensor([[0.0, 1.0, -3.0], [0.5, -1.0, 2.0]])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_reconstruction_loss_by_hand() -> None:
    terms = [_softplus(-2.0), _softplus(1.0)]  # positives: -log sigmoid(s)
    terms += [_softplus(v) for v in [0.0, 1.0, -3.0, 0.5, -1.0, 2.0]]  # negatives: -log(1 - sigmoid(s))
    assert float(reconstruction_loss(S_POS, S_NEG)) == pytest.approx(sum(terms) / 8, rel=1e-6)


def test_bpr_loss_by_hand() -> None:
    diffs = [2 - 0, 2 - 1, 2 + 3, -1 - 0.5, -1 + 1, -1 - 2]
    expected = sum(_softplus(-d) for d in diffs) / 6
    assert float(bpr_loss(S_POS, S_NEG)) == pytest.approx(expected, rel=1e-6)
    assert float(ranking_loss(S_POS, S_NEG, "bpr")) == pytest.approx(expected, rel=1e-6)


def test_margin_loss_by_hand() -> None:
    # relu(1 - s_pos + s_neg): [1-2+0, 1-2+1, 1-2-3, 1+1+0.5, 1+1-1, 1+1+2] -> [0, 0, 0, 2.5, 1, 4]
    assert float(margin_loss(S_POS, S_NEG, 1.0)) == pytest.approx(7.5 / 6)
    assert float(ranking_loss(S_POS, S_NEG, "margin", 1.0)) == pytest.approx(7.5 / 6)
    with pytest.raises(ConfigError):
        ranking_loss(S_POS, S_NEG, "hinge")


def test_l2_penalty_by_hand() -> None:
    a = torch.tensor([[1.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert float(l2_penalty(a, b, batch_size=2)) == pytest.approx(0.5 * (5 + 9 + 1) / 2)


# -------------------------------------------------------------------------------------------- inputs
def _attrs(n: int = 12, seed: int = 0) -> NodeAttributes:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, 3, (n,), generator=g), torch.randint(0, 25, (n,), generator=g)], 1)
    num = torch.randn(n, 4, generator=g)
    return NodeAttributes(categorical=cat, numeric=num)


def test_input_encoder_with_attributes_is_wide_and_deep() -> None:
    torch.manual_seed(0)
    attrs = _attrs()
    enc = InputEncoder(12, 6, 5, attrs)
    # width: id 6 + cat widths (3 categories -> 4, 25 -> 8) + 4 numeric
    assert enc.dense.in_features == 6 + 4 + 8 + 4
    ids = torch.tensor([[0, 3], [11, 3]])
    out = enc(ids)
    assert out.shape == (2, 2, 5)
    # the encoder is exactly leaky_relu(W [id || cat0 || cat1 || num] + b), slope 0.2
    x = torch.cat(
        [
            enc.id_emb.weight[3],
            enc.cat_embs[0].weight[attrs.categorical[3, 0]],
            enc.cat_embs[1].weight[attrs.categorical[3, 1]],
            attrs.numeric[3],
        ]
    )
    ref = torch.nn.functional.leaky_relu(enc.dense(x), 0.2)
    assert torch.allclose(out[0, 1], ref, atol=1e-6)
    out.sum().backward()
    assert enc.cat_embs[1].weight.grad is not None and enc.cat_embs[1].weight.grad.abs().sum() > 0
    # attributes are inputs, not weights: they stay out of the state dict
    assert not any("categorical" in k or "numeric" in k for k in enc.state_dict())


def test_input_encoder_attributes_only_and_bad_tables() -> None:
    enc = InputEncoder(12, 0, 5, _attrs())
    assert enc(torch.arange(12)).shape == (12, 5)
    with pytest.raises(ConfigError, match="rows"):
        InputEncoder(13, 6, 5, _attrs())
    with pytest.raises(ConfigError):
        InputEncoder(12, 0, 5, None)
    with pytest.raises(ConfigError, match="negative"):
        InputEncoder(2, 4, 5, NodeAttributes(categorical=torch.tensor([[0], [-1]])))
    # explicit cardinalities must cover every code
    with pytest.raises(ConfigError, match="cardinalities"):
        InputEncoder(2, 4, 5, NodeAttributes(categorical=torch.tensor([[0], [5]]), cardinalities=[3]))
    out = InputEncoder(2, 4, 5, NodeAttributes(numeric=torch.ones(2, 3)))(torch.tensor([1]))
    assert out.shape == (1, 5) and bool(torch.isfinite(out).all())
