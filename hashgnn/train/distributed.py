"""Data-parallel training with ``torch.distributed``: the process group, the edge shards, the seeds.

A run is data-parallel when it is started by ``torchrun`` (or ``hashgnn train --nproc N``, which
starts ``torchrun``): torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address, and :func:`context` joins the process group (gloo on CPU, NCCL on CUDA). Without those
variables, or with a world of one, nothing here changes a run.

What each rank does:

- every rank loads the data and builds the same model (the same initialisation seed; DDP also
  broadcasts rank 0's parameters when it wraps the model);
- every epoch, all ranks draw the same permutation of the training edges from a generator of their
  own seeded by ``(seed, epoch)``, pad it to a multiple of the world size by wrapping around (as
  :class:`torch.utils.data.DistributedSampler` does), and rank ``r`` takes every ``world``-th edge from
  position ``r``: its shard. So the shards of an epoch cover every edge, and none twice but the pad;
- a step takes ``batch_size / world`` edges of the rank's shard; negatives, neighbour samples and
  guidance draws come from the rank's own training generator (:func:`rank_seed`), so ranks never draw
  the same samples; DDP averages the gradients, so a step uses the global batch ``batch_size``;
- rank 0 alone validates, checkpoints (with every rank's generator state) and writes the run folder;
  it broadcasts whether to stop.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from hashgnn.errors import ConfigError, HashgnnError

SHUFFLE_SALT = 424_242
_RANK_SALT = 7_919


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """Whether more than one process trains (a process group is joined)."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, checkpoints and writes the run folder."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun with more than one process in its world."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context(device: torch.device) -> DistContext:
    """Join the process group torchrun set up (once per process), or the one-process context.

    ``device`` picks the backend: NCCL for CUDA, gloo for CPU. The group is kept for the life of the
    process (a second call returns the same context), so a suite may train several runs in it.
    """
    if not launched_by_torchrun():
        return DistContext()
    import torch.distributed as dist

    if not dist.is_available():  # pragma: no cover - every torch wheel we install has it
        raise HashgnnError("this PyTorch build has no torch.distributed; train with one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        # Rank 0 validates while the others wait in a collective; big validations need more than the
        # default 30 minutes.
        minutes = float(os.environ.get("HASHGNN_DIST_TIMEOUT_MINUTES", "180"))
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=minutes))
        # Leaving the group to the interpreter's teardown lets gloo's worker threads outlive it and
        # abort the process ("terminate called without an active exception", exit -6): one such rank
        # made torchrun kill rank 0 before it had printed its result (CI, 2026-12-06; pytorch issue
        # 190489). Destroy it while the interpreter is whole.
        atexit.register(_destroy_group)
    elif dist.get_backend() != backend:
        raise HashgnnError(f"the process group uses {dist.get_backend()}, but this run's device needs {backend}")
    return DistContext(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=backend,
    )


def _destroy_group() -> None:
    """Destroy the default process group at exit, if it is still there (a no-op otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA runs with several processes, else ``device``."""
    if device.type != "cuda" or not ctx.active:
        return device
    if ctx.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {ctx.local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
            "start at most that many processes per node, or train on --device cpu"
        )
    torch.cuda.set_device(ctx.local_rank)
    return torch.device("cuda", ctx.local_rank)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s training generator; rank 0 keeps the run's seed."""
    if rank == 0:
        return int(seed)
    return (int(seed) * 1_000_003 + _RANK_SALT * rank) % (2**63)


def local_batch(batch_size: int, world: int) -> int:
    """Edges per step on each rank so that a step uses the global ``batch_size``."""
    if batch_size % world:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {world} training processes; the global "
            f"batch is split evenly, so pick a multiple of {world} (e.g. {batch_size - batch_size % world or world})"
        )
    return batch_size // world


def shard_permutation(n_edges: int, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s edges of ``epoch``: a shard of a permutation shared by all ranks (int64, CPU).

    Every rank gets ``ceil(n_edges / world)`` edges; the permutation is padded with its own first
    entries to a multiple of ``world`` (DistributedSampler's rule), so shard sizes are equal and every
    step of every rank has edges.
    """
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + SHUFFLE_SALT + int(epoch)) % (2**63))
    dtype = torch.int32 if n_edges < 2**31 else torch.int64
    perm = torch.randperm(n_edges, generator=g, dtype=dtype)
    total = -(-n_edges // world) * world
    if total > n_edges:
        perm = torch.cat([perm, perm[: total - n_edges]])
    return perm[rank::world].long()


def all_mean(values: dict[str, float], weight: float, ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Weighted means of per-rank means (``weight`` = this rank's count) over all ranks."""
    if not ctx.active or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}


def broadcast_flag(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. whether to stop after this epoch)."""
    if not ctx.active:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_generator_states(generator: torch.Generator, ctx: DistContext, device: torch.device) -> list[torch.Tensor]:
    """Every rank's generator state, in rank order (on every rank; CPU uint8 tensors)."""
    state = generator.get_state()
    if not ctx.active:
        return [state]
    import torch.distributed as dist

    local = state.to(device)
    out = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op with one process)."""
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


class LossModule(torch.nn.Module):
    """The model with ``forward = loss``, so DistributedDataParallel sees the step's computation."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        loss = self.model.loss
        assert callable(loss)
        return loss(*args, **kwargs)


def wrap(
    model: torch.nn.Module, ctx: DistContext, device: torch.device, staged: bool = False
) -> torch.nn.Module | None:
    """A DistributedDataParallel wrapper of ``model``'s loss, or None with one process.

    ``staged``: the method trains in stages that leave parameters out of a step (the hash layer
    before it is switched on, a frozen encoder after), which DDP accepts only with
    ``find_unused_parameters`` (an extra traversal of the autograd graph per step, so only then).
    """
    if not ctx.active:
        return None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(LossModule(model), device_ids=ids, find_unused_parameters=staged)
