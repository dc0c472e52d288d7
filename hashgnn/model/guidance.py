"""Guidance: mix codes and continuous vectors with probability ``beta`` of using the code.

Plain STE from the first step trains poorly, so HashGNN starts from the continuous network and
moves towards codes: a Bernoulli(beta) variable decides whether ``sign(z)`` (with STE) or ``z``
enters the losses, and beta grows with the epochs.

* Granularity ``node`` (the authors' code, default): one draw per row. The code draws one value per
  (user, positive item) pair, shared by the user and the item, and separate draws for negatives.
* Granularity ``bit`` (the paper's "dropout" reading): one draw per element.
* Schedules, by epoch (0-based): ``staircase`` 0, 0, 0.02, 0.02, 0.04, ... (step 0.02 held two
  epochs, capped at 1; the code's list ends after 1.0 and then falls back to 0, which is not kept
  here: beta stays 1), ``linear`` ``min(1, epoch / beta_epochs)``, ``constant`` ``beta_value``.
"""

from __future__ import annotations

import torch

from hashgnn.errors import ConfigError
from hashgnn.graph.sampling import uniform

SCHEDULES = ("staircase", "linear", "constant")
GRANULARITIES = ("node", "bit")


def beta_at(
    epoch: int, schedule: str = "staircase", step: float = 0.02, hold: int = 2, epochs: int = 100, value: float = 1.0
) -> float:
    """The probability of using the code in ``epoch`` (0-based) under ``schedule``."""
    if schedule == "staircase":
        if hold < 1 or step < 0:
            raise ConfigError(f"staircase schedule needs beta_hold >= 1 and beta_step >= 0, got {hold}, {step}")
        return float(min(1.0, round(step * (epoch // hold), 10)))
    if schedule == "linear":
        if epochs < 1:
            raise ConfigError(f"linear schedule needs beta_epochs >= 1, got {epochs}")
        return float(min(1.0, epoch / epochs))
    if schedule == "constant":
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"constant beta must lie in [0, 1], got {value}")
        return float(value)
    raise ConfigError(f"unknown beta schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def code_mask(
    rows: tuple[int, ...],
    bits: int,
    beta: float,
    granularity: str,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor | bool:
    """Where to use the code: a bool tensor of shape ``(*rows, 1)`` (node) or ``(*rows, bits)`` (bit).

    Each entry is True with probability ``beta``, drawn from ``generator``. For beta 0 or 1 no draw is
    made and a plain bool is returned (False / True).
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown guidance granularity {granularity!r}; choose node or bit")
    if beta <= 0.0:
        return False
    if beta >= 1.0:
        return True
    shape = (*rows, 1 if granularity == "node" else bits)
    return uniform(shape, generator, device) < beta


def mix(z: torch.Tensor, code: torch.Tensor, mask: torch.Tensor | bool) -> torch.Tensor:
    """``code`` where ``mask`` else ``z`` (mask broadcast over the last dimension for ``node``)."""
    if mask is True:
        return code
    if mask is False:
        return z
    return torch.where(mask, code, z)
