"""The one registry of training methods: what each puts into its losses, what it serves, its schedule.

Everything that lists methods reads :data:`METHODS` (config choices, CLI help, the experiment
runner and its suites, the report's groups, ``build_model``). Adding a method is one entry here and
one model class (docs/ARCHITECTURE.md, "Add a method"). This module imports neither torch nor numpy,
so the config and the CLI can read it cheaply; the model class is imported when a model is built.

The schedule of a method is a pure function of the epoch, :meth:`Method.schedule`, returning a
:class:`Schedule`; a run resumed at epoch e calls it with e and is in exactly the state it was.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hashgnn.config import ModelConfig, TrainConfig

Stage = Literal["continuous", "hash"]
Role = Literal["method", "ablation", "baseline", "continuous", "improved"]

# The three retrieval modes, in the order runs evaluate and tables print them.
MODES: tuple[str, ...] = ("hamming", "hierarchical", "continuous")
Mode = Literal[MODES]  # type: ignore[valid-type]
# The modes that search by codes (the paper's two retrieval settings).
CODE_MODES: tuple[str, ...] = tuple(m for m in MODES if m != "continuous")
# Modes only a run with query vectors against its item codes serves (distill.query_weight > 0):
# "weighted", the query's signs and quantised magnitudes by weighted Hamming distance
# (hashgnn.index.WeightedHammingIndex). Evaluated and served beside MODES where a run has them.
QUERY_MODES: tuple[str, ...] = ("weighted",)
ALL_MODES: tuple[str, ...] = MODES + QUERY_MODES

# Model fields every method reads (the encoder and code length); Method.knobs lists the others.
SHARED_KNOBS = (
    "encoder",
    "bits",
    "id_dim",
    "input_dim",
    "hidden_dim",
    "user_fanouts",
    "item_fanouts",
    "lightgcn_layers",
    "lightgcn_dim",
)
GUIDANCE_KNOBS = ("guidance", "ste_clip", "beta_schedule", "beta_epochs", "beta_value", "beta_step", "beta_hold")


@dataclass(frozen=True)
class Schedule:
    """The state a method's schedule sets for one epoch (0-based); a pure function of the epoch.

    Attributes:
        epoch: the epoch.
        beta: probability that the code (not ``z``) enters the losses (guidance).
        stage: ``continuous`` trains on the encoder output (no hash layer), ``hash`` on hashed vectors.
        encoder_frozen: only the hash layers train (hashgnn_sp's second stage).
        scale: hashnet's ``tanh(scale * a)`` continuation.
        tau: hash_gumbel's temperature.
        hard: hash_gumbel's final epochs with hard bits.
    """

    epoch: int
    beta: float = 0.0
    stage: Stage = "hash"
    encoder_frozen: bool = False
    scale: float = 1.0
    tau: float = 0.0
    hard: bool = False


def _beta(epoch: int, c: ModelConfig) -> float:
    from hashgnn.model.guidance import beta_at

    return beta_at(epoch, c.beta_schedule, c.beta_step, c.beta_hold, c.beta_epochs, c.beta_value)


def guided(epoch: int, c: ModelConfig, t: TrainConfig) -> Schedule:
    """hashgnn, hashgnn_nr: beta by the configured schedule."""
    return Schedule(epoch, beta=_beta(epoch, c))


def always_codes(epoch: int, c: ModelConfig, t: TrainConfig) -> Schedule:
    """hash_ste: the code throughout (beta = 1)."""
    return Schedule(epoch, beta=1.0)


def never_codes(epoch: int, c: ModelConfig, t: TrainConfig) -> Schedule:
    """continuous: z throughout (beta = 0)."""
    return Schedule(epoch)


def two_stage(epoch: int, c: ModelConfig, t: TrainConfig) -> Schedule:
    """hashgnn_sp: ``pretrain_epochs`` on the encoder output, then the frozen encoder's hash layers
    trained as hashgnn with the schedule restarted."""
    if epoch < t.pretrain_epochs:
        return Schedule(epoch, stage="continuous")
    return Schedule(epoch, beta=_beta(epoch - t.pretrain_epochs, c), encoder_frozen=True)


def encoder_only(epoch: int, c: ModelConfig, t: TrainConfig) -> Schedule:
    """plain, mf, lsh: the encoder output throughout."""
    return Schedule(epoch, stage="continuous")


def continuation(epoch: int, c: ModelConfig, t: TrainConfig) -> Schedule:
    """hashnet: ``scale = (1 + gamma epoch) ** power``."""
    return Schedule(epoch, scale=float((1.0 + c.hashnet_gamma * epoch) ** c.hashnet_power))


def annealed(epoch: int, c: ModelConfig, t: TrainConfig) -> Schedule:
    """hash_gumbel: tau from gumbel_tau0 down to gumbel_tau_min (geometric) over the soft epochs,
    then ``gumbel_hard_epochs`` with hard bits (beta = 1)."""
    soft_epochs = max(t.epochs - c.gumbel_hard_epochs, 1)
    if c.gumbel_hard_epochs > 0 and epoch >= t.epochs - c.gumbel_hard_epochs:
        return Schedule(epoch, beta=1.0, tau=c.gumbel_tau_min, hard=True)
    frac = min(epoch / max(soft_epochs - 1, 1), 1.0)
    return Schedule(epoch, tau=float(c.gumbel_tau0 * (c.gumbel_tau_min / c.gumbel_tau0) ** frac))


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: the ``ModelConfig.method`` value.
        role: its group in reports: the method (the paper's, as the authors built it), an ablation
            of it, a hashing baseline, a continuous model (served by inner product), or an improved
            recipe of this project's (not the paper's; every table names it as such).
        summary: what enters its losses, one line.
        serves: the served vector ``z`` (codes are ``sign(z)``), as a formula.
        model: ``module:Class`` of its network (a :class:`hashgnn.model.base.HashModel`).
        schedule_fn: the epoch -> :class:`Schedule` function.
        hashing: trained towards binary codes, so served (and early-stopped) in Hamming space.
        hash_layer: has the two hash layers ``user_hash`` / ``item_hash``.
        reconstruction, ranking: whether each loss can enter (TrainConfig's flags can drop them).
        continuous_term: ``TrainConfig.continuous_weight`` applies (the losses on z beside the codes').
        encoder: the encoder it always uses (None: ``ModelConfig.encoder``).
        knobs: the ModelConfig / TrainConfig fields it reads beyond :data:`SHARED_KNOBS` (a fitted
            method also reads its own config sections, ``spectral`` and ``distill``).
        logged: the Schedule fields written to metrics.jsonl besides beta.
        fit: ``module:function`` of a fit without a network (hashgnn/train/fitted.py's ``FitFn``);
            None for the methods the epoch trainer trains. ``model`` and the schedule are unused then.
    """

    name: str
    role: Role
    summary: str
    serves: str
    model: str
    schedule_fn: Callable[[int, ModelConfig, TrainConfig], Schedule]
    hashing: bool = True
    hash_layer: bool = True
    reconstruction: bool = True
    ranking: bool = True
    continuous_term: bool = False
    encoder: str | None = None
    knobs: tuple[str, ...] = ()
    logged: tuple[str, ...] = field(default=())
    fit: str | None = None

    @property
    def serving_mode(self) -> str:
        """The retrieval mode the method is served (and validated) with."""
        return "hamming" if self.hashing else "continuous"

    def schedule(self, epoch: int, model_cfg: ModelConfig, train_cfg: TrainConfig) -> Schedule:
        """The schedule state of ``epoch`` (0-based)."""
        return self.schedule_fn(epoch, model_cfg, train_cfg)

    def phase(self, epoch: int, model_cfg: ModelConfig, train_cfg: TrainConfig) -> tuple[Stage, bool]:
        """What trains in ``epoch``: ``(stage, encoder_frozen)`` of its schedule state."""
        s = self.schedule(epoch, model_cfg, train_cfg)
        return s.stage, s.encoder_frozen

    def is_staged(self, model_cfg: ModelConfig, train_cfg: TrainConfig) -> bool:
        """Whether the phase changes within ``train_cfg.epochs`` (hashgnn_sp's two stages)."""
        epochs = range(max(int(train_cfg.epochs), 1))
        return len({self.phase(e, model_cfg, train_cfg) for e in epochs}) > 1

    def fit_function(self) -> Any:
        """The fit function (imports numpy, torch); an error for trained methods."""
        if self.fit is None:
            raise ValueError(f"method {self.name!r} is trained by the epoch trainer, not fitted")
        module, fn = self.fit.split(":")
        return getattr(importlib.import_module(module), fn)

    def model_class(self) -> Any:
        """The network class (imports torch)."""
        module, cls = self.model.split(":")
        return getattr(importlib.import_module(module), cls)


_HASHGNN = "hashgnn.model.hashgnn:HashGNN"
_REGISTRY: tuple[Method, ...] = (
    Method(
        "hashgnn",
        "method",
        "guided mix of z = tanh(hash(h)) and sign(z) (STE), beta by schedule",
        "z",
        _HASHGNN,
        guided,
        continuous_term=True,
        knobs=GUIDANCE_KNOBS,
    ),
    Method(
        "hash_ste",
        "ablation",
        "sign(z) with STE throughout (beta = 1)",
        "z",
        _HASHGNN,
        always_codes,
        continuous_term=True,
        knobs=("ste_clip",),
    ),
    Method(
        "hashgnn_nr",
        "ablation",
        "as hashgnn, without the ranking loss",
        "z",
        _HASHGNN,
        guided,
        ranking=False,
        continuous_term=True,
        knobs=GUIDANCE_KNOBS,
    ),
    Method(
        "hashgnn_sp",
        "ablation",
        "epochs < pretrain_epochs: encoder output h; then the encoder is frozen "
        "and the hash layer trained as hashgnn (schedule restarts)",
        "z",
        _HASHGNN,
        two_stage,
        continuous_term=True,
        knobs=GUIDANCE_KNOBS + ("pretrain_epochs",),
    ),
    Method(
        "continuous",
        "continuous",
        "z only (beta = 0): the continuous counterpart of hashgnn",
        "z",
        _HASHGNN,
        never_codes,
        hashing=False,
    ),
    Method(
        "plain",
        "continuous",
        "encoder output h, no hash layer (lightgcn: LightGCN itself); ranking + L2",
        "h",
        "hashgnn.model.baselines:Plain",
        encoder_only,
        hashing=False,
        hash_layer=False,
        reconstruction=False,
    ),
    Method(
        "mf",
        "continuous",
        "BPR matrix factorisation embeddings; ranking + L2",
        "h",
        "hashgnn.model.baselines:Plain",
        encoder_only,
        hashing=False,
        hash_layer=False,
        reconstruction=False,
        encoder="mf",
        knobs=("mf_dim",),
    ),
    Method(
        "lsh",
        "baseline",
        "encoder output h (trained as hashgnn_sp's first stage); served h R with R a "
        "fixed N(0, 1) (d x K) matrix of random hyperplanes",
        "h R",
        "hashgnn.model.baselines:LSH",
        encoder_only,
        hash_layer=False,
    ),
    Method(
        "hashnet",
        "baseline",
        "tanh(scale * a), a = W h + b, scale = (1 + gamma epoch) ** power",
        "tanh(scale a)",
        "hashgnn.model.baselines:HashNet",
        continuation,
        knobs=("hashnet_gamma", "hashnet_power"),
        logged=("scale",),
    ),
    Method(
        "hash_gumbel",
        "baseline",
        "each bit a two-way Gumbel-softmax tanh((a + L) / (2 tau)), L logistic "
        "noise, tau annealed geometrically; the last gumbel_hard_epochs use hard bits sign(a + L) with "
        "the soft gradient (straight-through)",
        "tanh(a)",
        "hashgnn.model.baselines:HashGumbel",
        annealed,
        knobs=("gumbel_tau0", "gumbel_tau_min", "gumbel_hard_epochs"),
        logged=("tau",),
    ),
    Method(
        "spectral",
        "continuous",
        "no training: truncated SVD of the normalised interaction matrix, filtered (SVD-GCN-S / GF-CF "
        "family); codes hashed from it by PCA + ITQ plus popularity bits",
        "U_K sqrt(f(s)), V_K sqrt(f(s)) d_i^gamma",
        "",
        encoder_only,
        hashing=False,
        hash_layer=False,
        reconstruction=False,
        ranking=False,
        encoder="none",
        fit="hashgnn.train.fitted:fit_spectral",
    ),
    Method(
        "spectral_distill",
        "improved",
        "codes of free per-node parameters, started from spectral's ITQ codes and trained through the "
        "straight-through sign on the served Hamming score to rank the spectral teacher's top items "
        "(listwise, rank-weighted: BiGeaR-style distillation); re-ranked by the teacher's vectors",
        "sign(x), teacher vectors",
        "",
        encoder_only,
        hash_layer=False,
        reconstruction=False,
        encoder="none",
        knobs=("epochs", "eval_every", "patience"),
        fit="hashgnn.train.fitted:fit_spectral_distill",
    ),
)

METHODS: dict[str, Method] = {m.name: m for m in _REGISTRY}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
ENCODERS: tuple[str, ...] = ("sage", "lightgcn")


def get_method(name: str) -> Method:
    """The registered method ``name``, or a ConfigError listing the known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        from hashgnn.errors import ConfigError

        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}") from None


def names(role: Role | None = None, hashing: bool | None = None) -> tuple[str, ...]:
    """Method names, in registry order, filtered by role and/or by being a hashing method."""
    return tuple(
        m.name for m in _REGISTRY if (role is None or m.role == role) and (hashing is None or m.hashing == hashing)
    )


def serving_mode(method: str) -> str:
    """The retrieval mode a method's model is served with: codes for hashing methods."""
    return get_method(method).serving_mode


def train_defaults(cfg: ModelConfig) -> dict[str, Any]:
    """TrainConfig values that reproduce a method's reference setting (apply where not set).

    ``plain`` with lightgcn and ``mf`` follow LightGCN-PyTorch (batch 2048, one negative, lr 1e-3,
    L2 1e-4); the HashGNN methods follow the authors' code (batch 256, 10 negatives, lr 1e-3), except
    that with the lightgcn encoder, whose every batch propagates over the whole graph, batches are
    LightGCN's 2048 edges (8x fewer propagations per epoch).
    """
    m = get_method(cfg.method)
    if m.encoder == "mf" or (not m.hash_layer and not m.hashing and cfg.encoder == "lightgcn"):
        return {
            "batch_size": 2048,
            "negatives": 1,
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "ranking_loss": "bpr",
            "use_reconstruction": False,
        }
    batch = 2048 if cfg.encoder == "lightgcn" else 256
    return {"batch_size": batch, "negatives": 10, "lr": 1e-3, "weight_decay": 0.0, "ranking_loss": "bpr"}


__all__ = [
    "CODE_MODES",
    "ENCODERS",
    "METHODS",
    "METHOD_NAMES",
    "MODES",
    "Method",
    "Mode",
    "Schedule",
    "get_method",
    "names",
    "serving_mode",
    "train_defaults",
]
