"""``Run``: a training run's folder, the one place that knows its files.

Layout (every name is a constant of :class:`Run`; the checkpoint files are
:mod:`hashgnn.train.checkpoint`'s)::

    config.yaml          the resolved RunConfig (repeat the run with `hashgnn train --config`)
    metrics.jsonl        one JSON row per epoch: losses, beta, seconds, validation metrics
    checkpoint.json      names the newest checkpoint folder ckpt-EEEE/ (model, optimiser, generator, state)
    best.safetensors     weights of the epoch with the best validation Recall@20
    model.safetensors    the weights the artifacts were exported from
    codes.json           header of the code artifacts: bits, counts, bit order, format_version
    user_codes.npy       uint8 (U, ceil(K/8))  packed codes, numpy.packbits big-endian, 1 = +1; sign(z_user)
                         unless codes.json's code_source says otherwise (spectral methods)
    item_codes.npy       uint8 (I, ceil(K/8))
    user_z.npy           float32 (U, D)        served continuous vectors (D = K except plain / mf)
    item_z.npy           float32 (I, D)
    user_ids.npy         original ids of the users (int64 or unicode; absent if ids are 0..U-1)
    item_ids.npy         likewise for items
    item_order.npy       int64 (I,) the tie order of served rankings, most popular item first (absent: ties
                         to the lower item index; runs from before it existed)
    final_metrics.json   test metrics in every retrieval mode, timings
    training.png         loss and validation Recall@20 against epochs

``Run.load(path)`` validates every artifact it finds (config, code header, each ``.npy`` header
against its file size, shapes and dtypes against each other and the config, the metrics, the weights'
header) and raises :class:`hashgnn.io.ArtifactError` naming the file and what to do. Machine-specific
settings (data mirror, cache folder, device, threads) are never taken from the folder: they come from
the arguments of :meth:`Run.load` or the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hashgnn.config import RunConfig
from hashgnn.errors import ConfigError, HashgnnError
from hashgnn.io import ArtifactError, read_json, read_npy, write_json, write_npy
from hashgnn.methods import ALL_MODES, get_method

if TYPE_CHECKING:
    import torch

    from hashgnn.codes.artifacts import RunCodes
    from hashgnn.data import Interactions
    from hashgnn.index.recommend import Recommendations

CODES_FORMAT_VERSION = 1
# An eval-time generator per purpose, so evaluation never touches the training stream.
VALID_SALT, EXPORT_SALT = 1, 2


def _retrain(path: Path) -> str:
    return (
        f"re-export the artifacts from the run's checkpoint with `hashgnn train --resume {path}`, "
        f"or train again with `hashgnn train --config {path / Run.CONFIG} --out NEW_FOLDER`"
    )


class Run:
    """A run folder: its config, codes, vectors, metrics and weights, and the ways to serve them.

    Create one with :meth:`Run.load` (a finished run, validated) or ``Run(path)`` (any folder, e.g.
    while training writes it). Arrays are read once and cached.
    """

    CONFIG = "config.yaml"
    METRICS_LOG = "metrics.jsonl"
    BEST_WEIGHTS = "best.safetensors"
    WEIGHTS = "model.safetensors"
    CODES_HEADER = "codes.json"
    USER_CODES = "user_codes.npy"
    ITEM_CODES = "item_codes.npy"
    USER_Z = "user_z.npy"
    ITEM_Z = "item_z.npy"
    USER_IDS = "user_ids.npy"
    ITEM_IDS = "item_ids.npy"
    ITEM_ORDER = "item_order.npy"
    FINAL_METRICS = "final_metrics.json"
    PLOT = "training.png"
    FEATURES = "features.json"  # the fitted attribute encoders (hashgnn.data.features)
    ATTRIBUTES = "attributes.safetensors"  # the encoded attribute tables the network was trained on
    ENVIRONMENT = "environment.json"  # one record per start or resume: commit, machine (hashgnn.environment)
    # written into a run folder by the experiment runner (hashgnn.experiment)
    RUNNER_RECORD = "experiment.json"
    RUNNER_ERROR = "experiment_error.txt"
    SETTINGS_CACHE = "settings_metrics.json"
    FILES = (
        CONFIG,
        METRICS_LOG,
        BEST_WEIGHTS,
        WEIGHTS,
        CODES_HEADER,
        USER_CODES,
        ITEM_CODES,
        USER_Z,
        ITEM_Z,
        USER_IDS,
        ITEM_IDS,
        ITEM_ORDER,
        FINAL_METRICS,
        PLOT,
        FEATURES,
        ATTRIBUTES,
        ENVIRONMENT,
    )

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._config: RunConfig | None = None
        self._codes: RunCodes | None = None
        self._data: Interactions | None = None
        self._machine: dict[str, Any] = {}
        self._folder: Any = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of one of the folder's files (a ``Run.*`` constant)."""
        return self.path / name

    # ------------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        mirror: str | None = None,
        cache_dir: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> Run:
        """Open a finished run and validate every artifact in it.

        ``mirror``, ``cache_dir``, ``device`` and ``threads`` replace the folder's values (None: the
        defaults, i.e. ``$HASHGNN_DATA_MIRROR``, ``$HASHGNN_CACHE``, ``auto`` and the library's).
        """
        run = cls(path)
        if not run.path.is_dir():
            raise HashgnnError(f"{run.path}: no such run folder")
        if not run.file(cls.CONFIG).exists():
            raise HashgnnError(f"{run.path}: no {cls.CONFIG}, so this is not a hashgnn run folder")
        run._machine = {"mirror": mirror, "cache_dir": cache_dir, "device": device, "threads": threads}
        run.config  # noqa: B018  (validates config.yaml)
        run.codes  # noqa: B018  (validates the header and every array)
        if run.file(cls.FINAL_METRICS).exists():
            run.metrics  # noqa: B018
        if run.file(cls.WEIGHTS).exists():
            run._check_weights(run.file(cls.WEIGHTS))
        return run

    @property
    def config(self) -> RunConfig:
        """The run's RunConfig, with the machine-specific fields from :meth:`load`'s arguments."""
        if self._config is None:
            p = self.file(self.CONFIG)
            try:
                cfg = RunConfig.load(p)
            except ConfigError as e:
                msg = str(e)
                raise ArtifactError(
                    p,
                    msg[len(str(p)) + 2 :] if msg.startswith(str(p)) else msg,
                    f"repair or replace {p.name} (it is the run's YAML config)",
                ) from None
            except (OSError, UnicodeDecodeError) as e:
                raise ArtifactError(p, f"unreadable ({e})") from None
            m = self._machine
            self._config = cfg.on_this_machine(m.get("mirror"), m.get("cache_dir"), m.get("device"), m.get("threads"))
        return self._config

    @property
    def method(self) -> str:
        """The run's training method."""
        return self.config.model.method

    @property
    def metrics(self) -> dict[str, Any]:
        """``final_metrics.json``: test metrics per mode, the baseline, timings."""
        p = self.file(self.FINAL_METRICS)
        m = read_json(p, "the run's final metrics", _retrain(self.path))
        if not isinstance(m, dict) or not isinstance(m.get("test"), dict):
            raise ArtifactError(
                p, "expected a JSON object with a 'test' mapping of metrics per retrieval mode", _retrain(self.path)
            )
        return m

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl``, one per trained epoch."""
        p = self.file(self.METRICS_LOG)
        rows = []
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ArtifactError(p, f"line {i} is not valid JSON ({e.msg})") from None
        return rows

    @property
    def codes(self) -> RunCodes:
        """Codes and vectors of every user and item, validated against each other and the config."""
        if self._codes is None:
            self._codes = self._read_codes()
        return self._codes

    @property
    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The served continuous vectors ``(user_z, item_z)``."""
        return self.codes.user_z, self.codes.item_z

    def _read_codes(self) -> RunCodes:
        from hashgnn.codes.artifacts import RunCodes

        fix = _retrain(self.path)
        hp = self.file(self.CODES_HEADER)
        if not hp.exists():
            raise ArtifactError(
                self.path,
                f"no {self.CODES_HEADER}, so the run has not exported its codes (is it a finished hashgnn run folder?)",
                f"finish it with `hashgnn train --resume {self.path}`",
            )
        header = read_json(hp, "the header of the code artifacts", fix)
        if not isinstance(header, dict):
            raise ArtifactError(hp, "expected a JSON object", fix)
        if "format_version" not in header and "bits" not in header:
            raise ArtifactError(hp, "not a code header (no format_version, no bits)", fix)
        version = header.get("format_version")
        if version != CODES_FORMAT_VERSION:
            raise ArtifactError(
                hp,
                f"format_version {version!r}; this hashgnn reads format_version {CODES_FORMAT_VERSION}",
                "use the hashgnn release that wrote the run, or " + fix,
            )
        try:
            bits, n_users, n_items = (int(header[k]) for k in ("bits", "n_users", "n_items"))
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(hp, "needs integer fields bits, n_users and n_items", fix) from None
        nbytes = (bits + 7) // 8

        def arr(name: str, kinds: str, shape: tuple[int | None, ...]) -> np.ndarray:
            p = self.file(name)
            a = read_npy(p, kinds, len(shape), fix)
            want_dtype = {"u": np.uint8, "f": np.float32}.get(kinds)
            if want_dtype is not None and a.dtype != want_dtype:
                raise ArtifactError(p, f"has dtype {a.dtype}, expected {np.dtype(want_dtype)}", fix)
            for got, want in zip(a.shape, shape, strict=True):  # read_npy checked ndim
                if want is not None and got != want:
                    raise ArtifactError(
                        p,
                        f"has shape {a.shape}, but {self.CODES_HEADER} and {self.CONFIG} "
                        f"say {tuple('any' if s is None else s for s in shape)}",
                        fix,
                    )
            return a

        uc = arr(self.USER_CODES, "u", (n_users, nbytes))
        ic = arr(self.ITEM_CODES, "u", (n_items, nbytes))
        uz = arr(self.USER_Z, "f", (n_users, None))
        iz = arr(self.ITEM_Z, "f", (n_items, uz.shape[1]))
        source = header.get("code_source", "sign")
        if not isinstance(source, str):
            raise ArtifactError(hp, f"code_source must be a string, got {source!r}", fix)
        if source == "sign" and uz.shape[1] != bits:
            raise ArtifactError(
                self.file(self.USER_Z),
                f"has {uz.shape[1]} columns but {self.CODES_HEADER} says "
                f"{bits} bits (the codes are the signs of these vectors)",
                fix,
            )
        cfg = self.config.model if self.file(self.CONFIG).exists() else None
        if cfg is not None and get_method(cfg.method).serves != "h" and bits != cfg.bits:
            raise ArtifactError(hp, f"says {bits} bits but {self.CONFIG} trains {cfg.bits}-bit codes", fix)
        ids = {}
        for name, n in ((self.USER_IDS, n_users), (self.ITEM_IDS, n_items)):
            ids[name] = arr(name, "iuU", (n,)) if self.file(name).exists() else None
        order = None
        if self.file(self.ITEM_ORDER).exists():
            order = arr(self.ITEM_ORDER, "i", (n_items,)).astype(np.int64)
            if not np.array_equal(np.sort(order), np.arange(n_items)):
                raise ArtifactError(self.file(self.ITEM_ORDER), f"is not a permutation of the {n_items} items", fix)
        return RunCodes(bits, uc, ic, uz, iz, ids[self.USER_IDS], ids[self.ITEM_IDS], source, order)

    @staticmethod
    def _check_weights(path: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types for every kind of damage
            raise ArtifactError(
                path,
                f"not a readable safetensors file ({e})",
                "re-export it with `hashgnn train --resume` on the run folder",
            ) from None

    # ------------------------------------------------------------------------------- writing
    def save_codes(self, codes: RunCodes) -> None:
        """Write the code artifacts, array by array, then the header (each atomically)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_npy(self.file(self.USER_CODES), np.ascontiguousarray(codes.user_codes, dtype=np.uint8))
        write_npy(self.file(self.ITEM_CODES), np.ascontiguousarray(codes.item_codes, dtype=np.uint8))
        write_npy(self.file(self.USER_Z), np.ascontiguousarray(codes.user_z, dtype=np.float32))
        write_npy(self.file(self.ITEM_Z), np.ascontiguousarray(codes.item_z, dtype=np.float32))
        if codes.item_order is not None:
            write_npy(self.file(self.ITEM_ORDER), np.ascontiguousarray(codes.item_order, dtype=np.int64))
        else:
            self.file(self.ITEM_ORDER).unlink(missing_ok=True)
        for name, ids in ((self.USER_IDS, codes.user_ids), (self.ITEM_IDS, codes.item_ids)):
            if ids is not None:
                ids = np.asarray(ids)
                write_npy(self.file(name), ids.astype(str) if ids.dtype == object else ids)
        write_json(
            self.file(self.CODES_HEADER),
            {
                "format_version": CODES_FORMAT_VERSION,
                "bits": int(codes.bits),
                "n_users": codes.n_users,
                "n_items": codes.n_items,
                "bytes_per_code": int(codes.user_codes.shape[1]),
                "bit_order": "numpy.packbits big-endian",
                "bit_meaning": "1 = +1, 0 = -1",
                "has_ids": codes.user_ids is not None,
                "code_source": codes.code_source,
                "ties": "popularity" if codes.item_order is not None else "id",
            },
        )
        self._codes = None

    @property
    def environment(self) -> list[dict[str, Any]]:
        """Where and at which commit the run was trained: one record per start or resume, oldest first.

        Empty for run folders written before hashgnn recorded it.
        """
        p = self.file(self.ENVIRONMENT)
        if not p.exists():
            return []
        fix = f"delete {p.name} (it only documents the run) and try again"
        records = read_json(p, "environment records", fix)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ArtifactError(p, "is not a list of records", fix)
        return records

    def record_environment(self, event: str, extended: dict[str, Any] | None = None) -> None:
        """Append this process's :func:`hashgnn.environment.provenance` record of ``event``.

        ``extended`` (a resume that raised the budget) is kept in the record: ``{"train.epochs": [old, new]}``.
        """
        from hashgnn.environment import provenance

        record = provenance(event)
        if extended:
            record["extended"] = extended
        write_json(self.file(self.ENVIRONMENT), [*self.environment, record])

    def save_metrics(self, final: dict[str, Any]) -> None:
        """Write ``final_metrics.json``."""
        write_json(self.file(self.FINAL_METRICS), final)

    # ------------------------------------------------------------------------------- data, model
    def data(self) -> Interactions:
        """The run's data set (its full train and test splits), loaded once; counts must match the codes."""
        if self._data is None:
            import warnings

            from hashgnn.data import load_interactions
            from hashgnn.errors import DataWarning

            with warnings.catch_warnings():
                # the warnings about the split were shown when the run trained
                warnings.simplefilter("ignore", DataWarning)
                data = load_interactions(self.config.data, progress=False)
            c = self.codes
            if (c.n_users, c.n_items) != (data.n_users, data.n_items):
                raise HashgnnError(
                    f"{self.path}: codes cover {c.n_users} users / {c.n_items} items but the data "
                    f"set now has {data.n_users} / {data.n_items}; the data changed since training"
                )
            self._data = data
        return self._data

    def model(self, device: str | None = None) -> torch.nn.Module:
        """Rebuild the trained network from ``model.safetensors`` (on the training graph, eval mode).

        The schedule is set to the last trained epoch's, so ``model.embed(generator)`` serves what the
        run exported (with the sage encoder, up to the neighbour samples the generator draws).
        """
        from safetensors.torch import load_file

        from hashgnn.data import carve_validation
        from hashgnn.model import build_model
        from hashgnn.train.run import resolve_device

        cfg = self.config
        if get_method(cfg.model.method).fit is not None:
            raise HashgnnError(
                f"{self.path}: method {cfg.model.method!r} has no network (it is fitted, not trained); "
                "its vectors and codes are the run's artifacts (Run.codes, Run.vectors)"
            )
        dev = resolve_device(device or cfg.train.device)
        data = self.data()
        split = carve_validation(data, cfg.data.valid_fraction, cfg.data.seed) if cfg.data.valid_fraction > 0 else data
        _, attrs = self.attributes()
        model = build_model(
            cfg.model,
            split.train,
            dev,
            user_attrs=attrs.get("user"),
            item_attrs=attrs.get("item"),
            train_cfg=cfg.train,
            seed=cfg.train.seed,
        )
        p = self.file(self.WEIGHTS)
        if not p.exists():
            raise ArtifactError(p, "missing, so the trained network cannot be rebuilt", _retrain(self.path))
        self._check_weights(p)
        try:
            model.load_state_dict(load_file(p, device=str(dev)))
        except RuntimeError as e:
            raise ArtifactError(
                p, f"does not fit the network {self.CONFIG} describes ({e})", _retrain(self.path)
            ) from None
        epochs_run = int(self.metrics.get("epochs_run", 1)) if self.file(self.FINAL_METRICS).exists() else 1
        model.on_epoch_start(max(epochs_run - 1, 0))
        model.eval()
        return model

    def attributes(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's attribute encoders and encoded tables, side -> ``FeatureEncoder`` / ``NodeAttributes``.

        Empty when the run was trained without attributes. ``encoders["item"].transform(features)``
        encodes the attributes of new items (:func:`hashgnn.data.features.read_feature_table`) with
        the vocabularies and standardisation of training.
        """
        from hashgnn.data.features import load_attributes

        return load_attributes(self.path)

    # ------------------------------------------------------------------------------- serving
    def index(self, mode: str = "hamming", candidates: int | None = None, threads: int | None = None) -> Any:
        """An index over the run's items in ``mode``: HammingIndex, HierarchicalIndex or FloatIndex."""
        from hashgnn.index.recommend import build_index

        _check_mode(mode)
        threads = threads if threads is not None else self.config.train.threads
        return build_index(self.codes, mode, candidates or self.config.eval.candidates, threads)

    def recommend(
        self,
        users: Any,
        k: int = 20,
        mode: str = "hamming",
        *,
        candidates: int | None = None,
        exclude_seen: bool = True,
        by_original_id: bool = False,
    ) -> Recommendations:
        """Top-``k`` items of ``users`` (indices, or original ids with ``by_original_id``), seen items excluded."""
        from hashgnn.index.recommend import Recommender

        rec = Recommender(self, mode, candidates, exclude_seen, self.config.train.threads)
        return rec.topk(rec.user_indices(users, by_original_id), k)

    def fold_in(self, items: Any, by_original_id: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Code (packed uint8) and served vector of a user the run never trained on, from the items they
        interacted with (indices, or the data set's ids with ``by_original_id``), with the trained
        encoder and hash layer and no retraining (:mod:`hashgnn.serve.foldin`: lightgcn and sage encoders,
        and spectral_distill)."""
        from hashgnn.serve.foldin import fold_in_for

        if self._folder is None:
            self._folder = fold_in_for(self)
        idx = np.asarray(items).reshape(-1)
        if by_original_id:
            from hashgnn.serve.service import _Ids

            idx = _Ids(self.codes.item_ids, self.codes.n_items, "item").index(idx.tolist())
        else:
            idx = idx.astype(np.int64)
            n = self.codes.n_items
            if ((idx < 0) | (idx >= n)).any():
                raise HashgnnError(f"item indices must be in 0..{n - 1}")
        return self._folder.fold_in(idx)

    def evaluate(
        self, mode: str = "hamming", ks: list[int] | None = None, candidates: int | None = None, progress: bool = False
    ) -> dict[str, float]:
        """Test metrics of the saved codes in ``mode`` (training items masked), as at the end of training."""
        from hashgnn.train.run import evaluate_codes

        _check_mode(mode)
        cfg = self.config
        data = self.data()
        return evaluate_codes(
            self.codes,
            data.train,
            data.test,
            mode,
            list(ks or cfg.eval.ks),
            candidates or cfg.eval.candidates,
            cfg.eval.batch_users,
            progress=progress,
            threads=cfg.train.threads,
        )


def _check_mode(mode: str) -> None:
    if mode not in ALL_MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(ALL_MODES)}")


__all__ = ["ArtifactError", "Run"]
