"""Hash layer and the straight-through estimator (STE) of ``sign``.

``z = tanh(W x + b)`` per node type gives the continuous code; the binary code is ``h = sign(z)``
with sign(0) = +1 (:func:`hashgnn.codes.packing.sign`). ``sign`` has zero gradient almost
everywhere, so the STE passes the gradient through unchanged (the authors' code overrides the
gradient of ``tf.sign`` with ``Identity`` and does not clip). The clipped variant multiplies the
gradient by ``1[|z| <= 1]``; note that for ``z = tanh(.)`` this is always 1, so clipping only
matters for inputs that can leave [-1, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hashgnn.codes.packing import sign
from hashgnn.model.inputs import dense


class STESign(torch.autograd.Function):
    """``sign`` forward (sign(0) = +1); identity backward, optionally zeroed where ``|z| > 1``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, clip: bool = False) -> torch.Tensor:
        ctx.clip = clip
        if clip:
            ctx.save_for_backward(z)
        return sign(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        if ctx.clip:
            (z,) = ctx.saved_tensors
            return grad * (z.abs() <= 1).to(grad.dtype), None
        return grad, None


def ste_sign(z: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """Binary code ``sign(z)`` in {-1, +1} with the straight-through gradient."""
    return STESign.apply(z, clip)


class HashLayer(nn.Module):
    """Dense layer to ``bits`` units with tanh: ``z = tanh(scale * (W x + b))``.

    Args:
        in_dim: width of the encoder output.
        bits: code length K (any value from 8 to 256 is supported by the rest of the pipeline).

    ``tf.layers.dense`` defaults, as the authors' ``u_proj`` / ``i_proj``: Glorot kernel, zero bias.
    ``scale`` is 1 except for the ``hashnet`` baseline's continuation ``tanh(beta x)``.
    """

    def __init__(self, in_dim: int, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.proj = dense(in_dim, bits)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation ``W x + b``."""
        return self.proj(x)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Continuous code ``z`` in (-1, 1)^K."""
        a = self.proj(x)
        return torch.tanh(a if scale == 1.0 else scale * a)
