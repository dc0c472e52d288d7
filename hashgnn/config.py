"""Typed configuration, one dataclass per concern, saved with every run as YAML.

A run folder's ``config.yaml`` holds a :class:`RunConfig`; ``RunConfig.load(path)`` rebuilds it, so a
run can be repeated from its folder alone. Unknown keys are an error (a typo must not be silently
ignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from hashgnn.errors import ConfigError
from hashgnn.methods import ENCODERS, METHOD_NAMES, MODES, Mode

# Literal types built from the registry, so the choices are written once (hashgnn/methods.py).
MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]
EncoderName = Literal[ENCODERS]  # type: ignore[valid-type]

T = TypeVar("T")

# Fields that say where or how fast a run executes, not what it computes. They come from the
# command line and the environment of the machine at hand, never from a run folder (which may come
# from someone else): a saved config.yaml holds their defaults.
EXECUTION_FIELDS = (("data", "mirror"), ("data", "cache_dir"), ("train", "device"), ("train", "threads"))
MAX_YAML_BYTES = 1 << 20  # config and suite files are small; a larger one is refused before parsing


@dataclass
class DataConfig:
    """Which interaction data to load and how to split it."""

    dataset: str = "ml-1m"  # a registered name, a folder with train.txt/test.txt, or a table file
    mirror: str | None = None  # folder or file:// / http(s):// base URL; default $HASHGNN_DATA_MIRROR
    cache_dir: str | None = None  # default $HASHGNN_CACHE or the per-user cache folder
    user_col: str = "user"
    item_col: str = "item"
    rating_col: str | None = None
    min_rating: float | None = None  # a rating >= this is a positive interaction
    time_col: str | None = None
    sep: str | None = None  # None: by extension (.csv ',', .tsv '\t')
    split: str = "random"  # random | temporal | loo (tables only; txt data sets come split)
    test_fraction: float = 0.2
    valid_fraction: float = 0.1  # carved per user from train, for early stopping (0 disables)
    seed: int = 2020
    strict: bool = False  # error (not a warning) on test users/items unseen in train
    user_features: str | None = None  # a table of user attributes (first column or user_id: the id)
    item_features: str | None = None  # a table of item attributes (first column or item_id: the id)
    atomic_features: bool = True  # a RecBole .inter: use the .user / .item files beside it


@dataclass
class ModelConfig:
    """The network: encoder, hash layer and guidance."""

    method: MethodName = "hashgnn"  # one of hashgnn.methods.METHODS
    encoder: EncoderName = "sage"
    bits: int = 32
    id_dim: int = 120  # ID embedding width (authors' code)
    input_dim: int = 68  # dense layer after the ID embedding
    hidden_dim: int = 68  # GraphSAGE width per depth
    user_fanouts: list[int] = field(default_factory=lambda: [10, 5])
    item_fanouts: list[int] = field(default_factory=lambda: [10])
    lightgcn_layers: int = 3
    lightgcn_dim: int = 64
    ste_clip: bool = False  # clip the STE gradient to |z| <= 1 (the authors' code does not)
    guidance: str = "node"  # node | bit
    beta_schedule: str = "staircase"  # staircase | linear | constant
    beta_epochs: int = 100  # linear: epochs to reach 1
    beta_value: float = 1.0  # constant: the value
    beta_step: float = 0.02  # staircase: step
    beta_hold: int = 2  # staircase: epochs each step is held
    mf_dim: int = 64  # mf: embedding width
    hashnet_gamma: float = 1.0  # hashnet: scale of tanh(scale * x) is (1 + gamma * epoch) ** power
    hashnet_power: float = 0.5
    gumbel_tau0: float = 1.0  # hash_gumbel: temperature at epoch 0, annealed geometrically ...
    gumbel_tau_min: float = 0.05  # ... to this value at the last soft epoch
    gumbel_hard_epochs: int = 1  # hash_gumbel: final epochs trained straight-through with hard bits


@dataclass
class SpectralConfig:
    """The training-free spectral model (``spectral``, and the teacher of ``spectral_distill``).

    Vectors from a truncated SVD of the normalised interaction matrix, filtered by
    ``f(s) = s^power exp(beta s)`` with an item-degree prior ``d_i^gamma`` (``filter: exp``), or by
    the blur-and-sharpen filter of BSPM (``filter: bspm``: ``sharpen``, ``ideal_weight``,
    ``ideal_dim``, ``out_dim``; beta, gamma and power are then unused) in embedding form
    (hashgnn/model/spectral.py), and codes hashed from them without training: PCA + ITQ of the
    leading ``code_dim`` dims plus ``popularity_bits`` popularity bits, ``ModelConfig.bits`` in all
    (hashgnn/codes/itq.py).
    """

    dim: int = 256  # singular triplets kept (exp: the width of the served vectors)
    filter: Literal["exp", "bspm"] = "exp"  # the spectral filter (see above)
    sharpen: float = 2.5  # bspm: sharpening time h of the one RK4 step T4(-h P)
    ideal_weight: float = 0.2  # bspm: weight of the ideal low-pass term
    ideal_dim: int = 448  # bspm: triplets of the ideal low-pass term (<= dim)
    out_dim: int | None = None  # bspm: served width after balance_embeddings (None: dim + ideal_dim)
    alpha: float = 0.0  # degree renormalisation of the matrix (0: D_u^-1/2 R D_i^-1/2)
    beta: float = 0.0  # filter exp(beta s)
    gamma: float = 0.5  # item-degree exponent
    power: float = 0.0  # filter s^power
    power_iters: int = 2  # randomised SVD power iterations
    code_dim: int | None = 64  # hash the leading code_dim dims (None: all)
    itq_iters: int = 50  # ITQ iterations (0: a random rotation)
    popularity_bits: int = 16  # of ModelConfig.bits, this many encode item popularity

    @property
    def triplets(self) -> int:
        """Singular triplets the filter needs computed."""
        return max(self.dim, self.ideal_dim) if self.filter == "bspm" else self.dim


@dataclass
class DistillConfig:
    """Codes trained to rank like the spectral teacher (``spectral_distill``).

    Free per-node code parameters, initialised from the teacher's ITQ projection, are trained through
    the straight-through sign on the served score (the Hamming similarity ``<b_u, b_i>``) with a
    listwise loss: the teacher's ``top_r`` unseen items of each user are the targets, weighted
    ``exp(-rank / decay)`` (BiGeaR's ranking-aware distillation), against a softmax over all the
    user's unseen items at ``temperature``; ``positive_weight`` adds the user's own training items as
    targets against a softmax over all items. Epochs, early stopping and the seed are TrainConfig's.
    """

    top_r: int = 100  # teacher items per user used as targets
    decay: float = 20.0  # lambda of the rank weights exp(-r / lambda)
    temperature: float = 4.0  # softmax temperature on the +-1 inner product (range [-bits, bits])
    lr: float = 0.01  # Adam learning rate of the code parameters
    batch_users: int = 1024  # users per step (each step scores them against every item)
    # sign's backward: identity, zero where |x| > 1 (clip), or exp(-x^2 / 2) (gauss)
    ste: Literal["identity", "clip", "gauss"] = "identity"
    schedule: Literal["constant", "cosine"] = "constant"  # learning rate over TrainConfig.epochs
    ema: float = 0.0  # serve the signs of a per-step moving average of the parameters (0: off)
    # weight of a second listwise term whose targets are the user's own training items (0: off)
    positive_weight: float = 0.0
    # penalties on the item codes' STE signs (hashgnn.codes.distill.bit_penalty): every bit splits the
    # items in half (balance), bits pairwise uncorrelated (decorrelation). 0: off
    balance_weight: float = 0.0
    decorrelation_weight: float = 0.0
    # epochs of an unquantised student of the same loss trained first; the codes then start from its
    # own PCA + ITQ instead of the teacher's (hashgnn.codes.distill.continuous_start). 0: off
    student_epochs: int = 0
    # after training: rounds of greedy bit flips of the ±1 codes that lower this loss exactly
    # (user flips, then item flips; hashgnn/codes/refine.py). 0: off, the codes as trained
    refine_rounds: int = 0
    # > 0: also train a real query vector per user against the item codes (the asymmetric score
    # <q_u, +-1 code>) with this weight, and keep it as the run's continuous user vector, with the
    # item codes as the items' (continuous mode = asymmetric scan, hierarchical = Hamming candidates
    # re-ranked by it; the teacher's vectors are not kept). 0: off
    query_weight: float = 0.0
    # > 0 (with query_weight): epochs of training the query vectors alone, by the same loss, against
    # the final item codes (after the refinement, whose flipped bits the queries were not trained
    # against; hashgnn.codes.distill.refit_queries). 0: off, the queries as trained
    query_refit_epochs: int = 0


@dataclass
class TrainConfig:
    """Optimisation, sampling, validation and checkpointing."""

    epochs: int = 20
    batch_size: int = 256  # positive edges per batch
    lr: float = 1e-3
    negatives: int = 10
    ranking_loss: str = "bpr"  # bpr | margin
    margin: float = 1.0
    recon_weight: float = 0.1  # lambda in lambda * reconstruction + ranking
    continuous_weight: float = (
        0.0  # hashing methods: weight of the same losses on z kept beside the codes' (0: the authors')
    )
    use_ranking: bool = True
    use_reconstruction: bool = True
    weight_decay: float = 0.0
    seed: int = 12345
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    eval_every: int = 1
    patience: int = 0  # validations without improvement before stopping, counted in the last stage (0: never)
    max_minutes: float | None = None  # stop after the epoch whose training time passes this budget
    pretrain_epochs: int = 10  # hashgnn_sp / lsh: epochs of the continuous stage


@dataclass
class EvalConfig:
    """Test-time retrieval and metrics."""

    ks: list[int] = field(default_factory=lambda: [20, 50, 100])
    candidates: int = 500  # C of hierarchical search
    batch_users: int = 1024
    modes: list[Mode] = field(default_factory=lambda: list(MODES))
    # How served rankings order equal scores (Hamming has bits + 1 levels): the more popular item in
    # training first, or the lower item id (docs/EVALUATION.md, "Ties").
    ties: Literal["popularity", "id"] = "popularity"


@dataclass
class RunConfig:
    """Everything a run needs; saved as ``config.yaml`` in the run folder.

    ``spectral`` and ``distill`` are read only by the methods of those names (hashgnn/methods.py).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write YAML atomically (temp file + rename)."""
        from hashgnn.io import write_yaml

        write_yaml(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return _build(cls, d, "config")

    def portable(self) -> RunConfig:
        """A copy with the execution fields (:data:`EXECUTION_FIELDS`) at their defaults, as saved."""
        d = self.to_dict()
        defaults = RunConfig().to_dict()
        for sec, key in EXECUTION_FIELDS:
            d[sec][key] = defaults[sec][key]
        return RunConfig.from_dict(d)

    def on_this_machine(
        self,
        mirror: str | None = None,
        cache_dir: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> RunConfig:
        """A copy whose execution fields are the given ones (defaults where None), whatever ``self`` says.

        Used on every config read from a run folder: a received folder must not choose where data
        is read from or cached.
        """
        d = self.portable().to_dict()
        d["data"].update(mirror=mirror, cache_dir=cache_dir)
        d["train"].update(device=device or "auto", threads=threads)
        return RunConfig.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            d = load_yaml(path) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping with sections data/model/train/eval (and spectral/distill)")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _build(cls: type[T], d: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from a (possibly partial) mapping, checking keys and nesting."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v or {}, f"{where}.{k}")  # type: ignore[arg-type]
        else:
            kwargs[k] = _checked(t, v, f"{where}.{k}")
    return cls(**kwargs)


def parse_setting(cls: type, key: str, text: str) -> Any:
    """The value of field ``key`` of config dataclass ``cls`` written as ``text`` (a flag or ``--set``).

    Text fields keep the text (``null`` / ``none`` is None where the field allows it); the others
    are read as YAML (``32``, ``1e-3``, ``true``, ``[20, 50]``).
    """
    hints = get_type_hints(cls)
    if key not in hints:
        raise ConfigError(f"unknown setting {key!r}; known: {', '.join(hints)}")
    t = hints[key]
    args = [a for a in get_args(t) if a is not type(None)]
    optional = type(None) in get_args(t)
    if optional and text.strip().lower() in ("null", "none", "~", ""):
        return None
    textual = t is str or (args and all(a is str for a in args)) or get_origin(t) is Literal
    if textual:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: cannot read {text!r} ({e})") from None
    scalar = [a for a in (args or [t]) if a in (int, float, bool)]
    if float in scalar and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads 1e-3 as text
            value = float(value)
    if (scalar and not (isinstance(value, tuple(scalar)) or (float in scalar and isinstance(value, int)))) or (
        scalar and bool not in scalar and isinstance(value, bool)
    ):
        raise ConfigError(f"{key}: expected {' or '.join(a.__name__ for a in scalar)}, got {text!r}")
    return value


def _type_name(t: Any) -> str:
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if typing.get_origin(t) is list:
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], str(args[0]))}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(t, str(t))


def _checked(t: Any, v: Any, where: str) -> Any:
    """``v`` as a value of type ``t`` (int -> float widening only), or a ConfigError naming the field."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _checked(a, v, where)
                except ConfigError:
                    pass
    elif origin is typing.Literal:
        if v in args:
            return v
        raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(str, args))}")
    elif origin is list:
        if isinstance(v, list):
            return [_checked(args[0], x, f"{where}[{i}]") for i, x in enumerate(v)]
    elif t is bool:
        if isinstance(v, bool):
            return v
    elif t is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    elif t is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    elif t is str:
        if isinstance(v, str):
            return v
    else:  # a field type this checker does not know: a bug in the config classes
        raise AssertionError(f"{where}: unsupported field type {t!r}")
    raise ConfigError(f"{where}: expected {_type_name(t)}, got {v!r}")


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases: ``*name`` references can grow a tiny file exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed here; write the values out", mark
            )
        return super().compose_node(parent, index)


def load_yaml(path: Path) -> Any:
    """Parse a small YAML file safely: no aliases, at most :data:`MAX_YAML_BYTES`, errors name the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {size} bytes; a hashgnn YAML file is at most {MAX_YAML_BYTES} bytes")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8 expected)") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None


def override(cfg: T, **values: Any) -> T:
    """Return a copy of dataclass ``cfg`` with the non-None ``values`` replaced."""
    return dataclasses.replace(cfg, **{k: v for k, v in values.items() if v is not None})  # type: ignore[type-var]
