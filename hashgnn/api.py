"""The notebook-facing entry points: load a data set, train a run; the rest is :class:`hashgnn.run.Run`.

Settings are given flat (``bits=32``, ``epochs=20``, ``dataset="lastfm"``) or as ``"section.key"``
strings (:func:`configure`); each flat name belongs to exactly one of the config dataclasses
(``seed`` is the training seed; the data split's seed is ``split_seed``). The sections of the fitted
methods, ``spectral`` and ``distill``, are only reached as ``"spectral.dim"`` and the like.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hashgnn.config import DataConfig, RunConfig, parse_setting
from hashgnn.errors import ConfigError

if TYPE_CHECKING:
    from hashgnn.data import Interactions
    from hashgnn.run import Run

SECTIONS = ("data", "model", "train", "eval", "spectral", "distill")
# Flat names are looked up here only; the fitted methods' sections are given as "spectral.dim" etc.
FLAT_SECTIONS = ("data", "model", "train", "eval")
ALIASES = {"split_seed": ("data", "seed"), "seed": ("train", "seed")}


def _where(name: str) -> tuple[str, str]:
    """``(section, field)`` of a flat setting name."""
    if name in ALIASES:
        return ALIASES[name]
    if "." in name:
        section, key = name.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {name!r}; sections: {', '.join(SECTIONS)}")
        return section, key
    hits = [s for s in FLAT_SECTIONS if name in {f.name for f in dataclasses.fields(getattr(RunConfig(), s))}]
    if not hits:
        known = sorted({f.name for s in FLAT_SECTIONS for f in dataclasses.fields(getattr(RunConfig(), s))})
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(known)}")
    return hits[0], name


def configure(base: RunConfig | str | Path | None = None, **settings: Any) -> RunConfig:
    """A RunConfig: ``base`` (a RunConfig, a YAML file, or the defaults) with ``settings`` applied.

    Keys are flat field names (``bits``, ``epochs``, ``dataset``) or ``section.key`` (pass those as
    ``**{"model.bits": 32}``); string values are parsed as the field's type. The result is checked
    like a config file (unknown keys and wrong types are a ConfigError).
    """
    if base is None:
        cfg = RunConfig()
    elif isinstance(base, RunConfig):
        cfg = RunConfig.from_dict(base.to_dict())
    else:
        cfg = RunConfig.load(base)
    d = cfg.to_dict()
    for name, value in settings.items():
        section, key = _where(name)
        if key not in d[section]:
            raise ConfigError(f"unknown setting {section}.{key}; known in {section}: {', '.join(d[section])}")
        d[section][key] = parse_setting(type(getattr(cfg, section)), key, value) if isinstance(value, str) else value
    return RunConfig.from_dict(d)


def load_dataset(dataset: str | Path, progress: bool = False, **settings: Any) -> Interactions:
    """Load a registered data set (``hashgnn data list``), a train.txt/test.txt folder or a table file.

    ``settings``: DataConfig fields (``split``, ``test_fraction``, ``user_col``, ...). The result's
    ``meta["data_config"]`` records how it was loaded, so :meth:`Trainer.fit` can take it.
    """
    from hashgnn.data import load_interactions

    cfg = configure(**{f"data.{k}": v for k, v in {**settings, "dataset": str(dataset)}.items()}).data
    data = load_interactions(cfg, progress=progress)
    data.meta["data_config"] = dataclasses.asdict(cfg)
    return data


class Trainer:
    """Train a method into a run folder: ``Trainer(bits=32, epochs=20).fit("lastfm", out="runs/x")``.

    Args:
        config: a RunConfig or a YAML file to start from (default: the defaults).
        progress: show progress bars on stderr.
        settings: config fields, flat or ``section.key`` (see :func:`configure`).
    """

    def __init__(self, config: RunConfig | str | Path | None = None, progress: bool = True, **settings: Any) -> None:
        self.config = configure(config, **settings)
        self.progress = progress

    def fit(
        self,
        dataset: str | Path | Interactions | None = None,
        out: str | Path = "runs/hashgnn",
        overwrite: bool = False,
        tracker: str | None = None,
        tracker_uri: str | None = None,
    ) -> Run:
        """Train on ``dataset`` (a name, path, or what :func:`load_dataset` returned) into ``out``.

        Returns the finished :class:`~hashgnn.run.Run`. A folder that already holds a run is refused
        unless ``overwrite``. In a script started by ``torchrun`` the training is data-parallel
        (docs/SCALING.md); rank 0 writes the folder and every rank returns its Run. ``tracker``
        (``"mlflow"`` | ``"tensorboard"``) also reports config, per-epoch and final metrics there
        (``tracker_uri``: MLflow tracking URI / TensorBoard folder).
        """
        from hashgnn.run import Run
        from hashgnn.train.run import train_run

        cfg = RunConfig.from_dict(self.config.to_dict())
        if dataset is not None:
            if isinstance(dataset, (str, Path)):
                cfg.data = dataclasses.replace(cfg.data, dataset=str(dataset))
            else:
                loaded = getattr(dataset, "meta", {}).get("data_config")
                if loaded is None:
                    raise ConfigError("fit() takes a data set name or path, or what hashgnn.load_dataset returned")
                cfg.data = dataclasses.replace(DataConfig(**loaded), valid_fraction=cfg.data.valid_fraction)
        train_run(cfg, out, progress=self.progress, overwrite=overwrite, tracker=tracker, tracker_uri=tracker_uri)
        return Run.load(
            out,
            mirror=cfg.data.mirror,
            cache_dir=cfg.data.cache_dir,
            device=cfg.train.device,
            threads=cfg.train.threads,
        )


__all__ = ["Trainer", "configure", "load_dataset"]
