"""A suite: a grid of runs (methods x data sets x code lengths x seeds x variants) read from YAML.

A suite file holds a partial :class:`~hashgnn.config.RunConfig` (``base``), the grid, optional
config patches per data set, per method and per named variant, the retrieval settings to report and
what the report should draw. Every key is checked (a typo is an error naming the file and line) and
every grid point is turned into a full ``RunConfig`` when the suite is loaded, so a bad value fails
before any training starts. See docs/EXPERIMENTS.md for the format.

Precedence of the patches, lowest first: ``base``, ``dataset_overrides[dataset]``,
``overrides[method]``, ``variants[variant]``, then the grid values themselves (data set, method,
bits, seed). The string ``${bits}`` anywhere in a patch is replaced by the grid point's code length
(``mf_dim: ${bits}`` gives MF vectors as wide as the codes it is compared with).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hashgnn.config import EXECUTION_FIELDS, RunConfig, load_yaml
from hashgnn.errors import ConfigError
from hashgnn.methods import METHOD_NAMES, MODES

# A method outside the registry (hashgnn.methods) is a typo and fails on load.
KNOWN_METHODS = METHOD_NAMES
PLOTS = ("bits", "curves", "qps")
METRIC_NAMES = ("recall", "ndcg", "ndcg_legacy", "precision", "hit")
# Names become folder names under --out: letters, digits, '_', '.', '-', with a letter or digit first
# (so never '.', '..' or a hidden name).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*$")
_BITS = "${bits}"

_TOP_KEYS = ("name", "description", "base", "grid", "variants", "overrides", "dataset_overrides", "settings", "report")
_GRID_KEYS = ("methods", "datasets", "bits", "seeds")
_SETTING_KEYS = ("name", "mode", "candidates", "metrics", "title")
_REPORT_KEYS = ("title", "primary", "plots", "claims", "qps_methods", "qps_k")


@dataclass(frozen=True)
class Setting:
    """One retrieval setting of the report: a mode (and C for hierarchical) and the metrics to show."""

    name: str
    mode: str
    metrics: tuple[str, ...]
    candidates: int | None = None  # hierarchical C; None: the run's eval.candidates
    title: str = ""

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``Hierarchical (C = 500)``."""
        if self.title:
            return self.title
        if self.mode == "hierarchical":
            return f"Hierarchical (C = {self.candidates})" if self.candidates else "Hierarchical"
        return {"hamming": "Hamming ranking", "continuous": "Continuous (inner product)"}[self.mode]


@dataclass(frozen=True)
class ReportSpec:
    """What the report shows for a suite."""

    title: str = ""
    primary: str = "recall@20"  # the metric that picks the best row, states claims and is plotted
    plots: tuple[str, ...] = ()
    claims: bool = False  # place the paper's claims next to the measurements (needs hashgnn + others)
    qps_methods: tuple[str, ...] = ("hashgnn", "continuous")
    qps_k: int = 20


@dataclass(frozen=True)
class GridPoint:
    """One run of a suite."""

    dataset: str
    method: str
    variant: str | None
    bits: int
    seed: int
    config: RunConfig

    @property
    def label(self) -> str:
        """``method`` or ``method-variant``: a row of the report."""
        return f"{self.method}-{self.variant}" if self.variant else self.method

    @property
    def run_id(self) -> str:
        """The run's folder relative to the suite's output folder."""
        return f"{_slug(self.dataset)}/{self.label}/bits{self.bits}/seed{self.seed}"


@dataclass
class Suite:
    """A loaded suite file. ``points()`` lists its grid in a fixed order."""

    name: str
    path: Path
    description: str
    base: dict[str, Any]
    methods: list[str]
    datasets: list[str]
    bits: list[int]
    seeds: list[int]
    variants: dict[str, dict[str, Any]]
    overrides: dict[str, dict[str, Any]]
    dataset_overrides: dict[str, dict[str, Any]]
    settings: list[Setting]
    report: ReportSpec
    _points: list[GridPoint] = field(default_factory=list, repr=False)

    def points(self) -> list[GridPoint]:
        """Every grid point: data sets, then methods, variants, bits and seeds (the order runs are made)."""
        return list(self._points)

    @property
    def variant_names(self) -> list[str | None]:
        """The variant names, or ``[None]`` when the suite has none."""
        return list(self.variants) or [None]


def _slug(s: str) -> str:
    """A folder-safe name for a data set given as a name or a path."""
    stem = Path(s).stem if ("/" in s or "." in s) and not _NAME.match(s) else s
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".")
    return slug if re.search(r"[A-Za-z0-9]", slug) else "data"


def _key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Line (1-based) of every mapping key and sequence item, by its path in the document."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


class _Loc:
    """Makes errors that name the suite file and the line of the offending key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _key_lines(text)

    def error(self, where: tuple[Any, ...], message: str) -> ConfigError:
        line = None
        for n in range(len(where), 0, -1):
            if where[:n] in self.lines:
                line = self.lines[where[:n]]
                break
        at = f"{self.path}, line {line}" if line else f"{self.path}"
        return ConfigError(f"{at}: {message}")


def _check_keys(loc: _Loc, d: Any, known: tuple[str, ...], where: tuple[Any, ...], what: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise loc.error(where, f"{what} must be a mapping, got {type(d).__name__}")
    for k in d:
        if k not in known:
            raise loc.error(where + (k,), f"unknown key {k!r} in {what}; known keys: {', '.join(known)}")
    return d


def _list(loc: _Loc, v: Any, where: tuple[Any, ...], kind: type, what: str, required: bool = True) -> list[Any]:
    if v is None:
        if required:
            raise loc.error(where, f"{what} is required (a list of {kind.__name__} values)")
        return []
    if not isinstance(v, list):
        v = [v]
    if required and not v:
        raise loc.error(where, f"{what} must not be empty")
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, kind):
            raise loc.error(where + (i,), f"{what}: {x!r} is not a {kind.__name__}")
    if len(set(v)) != len(v):
        raise loc.error(where, f"{what} lists a value twice: {v}")
    return list(v)


def _patches(loc: _Loc, d: Any, where: tuple[str, ...], what: str) -> dict[str, dict[str, Any]]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise loc.error(where, f"{what} must map names to config patches (sections data/model/train/eval)")
    out: dict[str, dict[str, Any]] = {}
    for name, patch in d.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise loc.error(
                where + (name,),
                f"{what}: name {name!r} must be letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        patch = patch or {}
        if not isinstance(patch, dict):
            raise loc.error(where + (name,), f"{what}.{name} must be a mapping with sections data/model/train/eval")
        out[name] = patch
    return out


def _check_patch(loc: _Loc, patch: dict[str, Any], where: tuple[Any, ...], what: str) -> None:
    """A (partial) RunConfig mapping: known sections, known keys, each error at its own line."""
    import dataclasses

    sections = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    hints = {n: getattr(RunConfig(), n) for n in sections}
    for sec, values in patch.items():
        if sec not in sections:
            raise loc.error(where + (sec,), f"{what}: unknown section {sec!r}; sections: {', '.join(sections)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise loc.error(where + (sec,), f"{what}.{sec} must be a mapping of {sec} settings")
        known = [f.name for f in dataclasses.fields(hints[sec])]
        for k in values:
            if k not in known:
                raise loc.error(where + (sec, k), f"{what}.{sec}: unknown key {k!r}; known: {', '.join(known)}")


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` updated with ``b``, recursively for nested mappings (neither is modified)."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _substitute(d: Any, bits: int) -> Any:
    if isinstance(d, dict):
        return {k: _substitute(v, bits) for k, v in d.items()}
    if isinstance(d, list):
        return [_substitute(v, bits) for v in d]
    return bits if d == _BITS else d


def _setting(loc: _Loc, s: Any, i: int) -> Setting:
    where = ("settings", i)
    s = _check_keys(loc, s, _SETTING_KEYS, where, f"settings[{i}]")
    mode = s.get("mode")
    if mode not in MODES:
        raise loc.error(where + ("mode",), f"settings[{i}].mode must be one of {', '.join(MODES)}, got {mode!r}")
    name = s.get("name", mode)
    if not isinstance(name, str) or not _NAME.match(name):
        raise loc.error(
            where + ("name",),
            f"settings[{i}].name {name!r} must be letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    cands = s.get("candidates")
    if cands is not None and (isinstance(cands, bool) or not isinstance(cands, int) or cands < 1):
        raise loc.error(where + ("candidates",), f"settings[{i}].candidates must be a positive integer")
    if cands is not None and mode != "hierarchical":
        raise loc.error(where + ("candidates",), f"settings[{i}]: candidates only applies to mode hierarchical")
    metrics = _list(loc, s.get("metrics"), where + ("metrics",), str, f"settings[{i}].metrics")
    for j, m in enumerate(metrics):
        name_k = m.rsplit("@", 1)
        if len(name_k) != 2 or name_k[0] not in METRIC_NAMES or not name_k[1].isdigit() or int(name_k[1]) < 1:
            raise loc.error(
                where + ("metrics", j),
                f"settings[{i}].metrics: {m!r} is not METRIC@K with METRIC one of {', '.join(METRIC_NAMES)}",
            )
    title = s.get("title", "")
    return Setting(name=name, mode=mode, metrics=tuple(metrics), candidates=cands, title=str(title or ""))


def _report(loc: _Loc, r: Any) -> ReportSpec:
    r = _check_keys(loc, r, _REPORT_KEYS, ("report",), "report")
    plots = _list(loc, r.get("plots"), ("report", "plots"), str, "report.plots", required=False)
    for i, p in enumerate(plots):
        if p not in PLOTS:
            raise loc.error(("report", "plots", i), f"report.plots: unknown plot {p!r}; choose from {', '.join(PLOTS)}")
    qm = _list(
        loc, r.get("qps_methods", ["hashgnn", "continuous"]), ("report", "qps_methods"), str, "report.qps_methods"
    )
    primary = r.get("primary", "recall@20")
    qps_k = r.get("qps_k", 20)
    if isinstance(qps_k, bool) or not isinstance(qps_k, int) or qps_k < 1:
        raise loc.error(("report", "qps_k"), "report.qps_k must be a positive integer")
    claims = r.get("claims", False)
    if not isinstance(claims, bool):
        raise loc.error(("report", "claims"), "report.claims must be true or false")
    return ReportSpec(
        title=str(r.get("title", "") or ""),
        primary=str(primary),
        plots=tuple(plots),
        claims=claims,
        qps_methods=tuple(qm),
        qps_k=qps_k,
    )


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; every grid point's RunConfig is built (and so validated) here."""
    path = Path(path)
    try:
        d = load_yaml(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such suite file") from None
    text = path.read_text()
    loc = _Loc(path, text)
    if not isinstance(d, dict):
        raise loc.error((), "a suite file is a mapping with keys " + ", ".join(_TOP_KEYS))
    d = _check_keys(loc, d, _TOP_KEYS, (), "the suite")
    name = d.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise loc.error(
            ("name",), f"name {name!r} must be letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    base = d.get("base") or {}
    if not isinstance(base, dict):
        raise loc.error(("base",), "base must be a RunConfig mapping with sections data/model/train/eval")
    if "grid" not in d:
        raise loc.error((), "the suite needs a grid: mapping with methods, datasets, bits and seeds")
    grid = _check_keys(loc, d["grid"], _GRID_KEYS, ("grid",), "grid")
    methods = _list(loc, grid.get("methods"), ("grid", "methods"), str, "grid.methods")
    for i, m in enumerate(methods):
        if m not in KNOWN_METHODS:
            raise loc.error(
                ("grid", "methods", i), f"grid.methods: unknown method {m!r}; known: {', '.join(KNOWN_METHODS)}"
            )
    datasets = _list(loc, grid.get("datasets"), ("grid", "datasets"), str, "grid.datasets")
    bits = _list(loc, grid.get("bits"), ("grid", "bits"), int, "grid.bits")
    seeds = _list(loc, grid.get("seeds"), ("grid", "seeds"), int, "grid.seeds")
    variants = _patches(loc, d.get("variants"), ("variants",), "variants")
    overrides = _patches(loc, d.get("overrides"), ("overrides",), "overrides")
    for m in overrides:
        if m not in KNOWN_METHODS:
            raise loc.error(("overrides", m), f"overrides: {m!r} is not a method; known: {', '.join(KNOWN_METHODS)}")
    ds_over = _patches(loc, d.get("dataset_overrides"), ("dataset_overrides",), "dataset_overrides")
    for ds in ds_over:
        if ds not in datasets:
            raise loc.error(("dataset_overrides", ds), f"dataset_overrides: {ds!r} is not in grid.datasets {datasets}")
    raw_settings = d.get("settings")
    if not isinstance(raw_settings, list) or not raw_settings:
        raise loc.error(("settings",), "settings must be a non-empty list of {name, mode, metrics[, candidates]}")
    settings = [_setting(loc, s, i) for i, s in enumerate(raw_settings)]
    if len({s.name for s in settings}) != len(settings):
        raise loc.error(("settings",), "settings: two settings share a name")
    _check_patch(loc, base, ("base",), "base")
    for what, patches in (("dataset_overrides", ds_over), ("overrides", overrides), ("variants", variants)):
        for key, patch in patches.items():
            _check_patch(loc, patch, (what, key), f"{what}.{key}")
    report = _report(loc, d.get("report"))
    description = d.get("description", "")
    suite = Suite(
        name=name,
        path=path,
        description=str(description or "").strip(),
        base=base,
        methods=methods,
        datasets=datasets,
        bits=bits,
        seeds=seeds,
        variants=variants,
        overrides=overrides,
        dataset_overrides=ds_over,
        settings=settings,
        report=report,
    )
    suite._points = _expand(suite, loc)
    _check_metrics(suite, loc)
    return suite


def point_dict(suite: Suite, dataset: str, method: str, variant: str | None, bits: int, seed: int) -> dict[str, Any]:
    """The merged config mapping of one grid point (see the module docstring for the precedence)."""
    d = copy.deepcopy(suite.base)
    for patch in (
        suite.dataset_overrides.get(dataset),
        suite.overrides.get(method),
        suite.variants.get(variant) if variant else None,
    ):
        if patch:
            d = deep_merge(d, patch)
    d = _substitute(d, bits)
    d = deep_merge(
        d, {"data": {"dataset": dataset}, "model": {"method": method, "bits": bits}, "train": {"seed": seed}}
    )
    return d


def _expand(suite: Suite, loc: _Loc) -> list[GridPoint]:
    points = []
    for ds in suite.datasets:
        for m in suite.methods:
            for v in suite.variant_names:
                for k in suite.bits:
                    for s in suite.seeds:
                        d = point_dict(suite, ds, m, v, k, s)
                        try:
                            cfg = RunConfig.from_dict(d)
                        except ConfigError as e:
                            where = _blame(suite, ds, m, v)
                            raise loc.error(
                                where, f"the config of {ds}/{m}{'-' + v if v else ''}/bits{k} is invalid: {e}"
                            ) from None
                        except TypeError as e:  # a section given as a scalar
                            raise loc.error(("base",), f"a config section is malformed: {e}") from None
                        points.append(GridPoint(ds, m, v, k, s, cfg))
    return points


def _blame(suite: Suite, ds: str, m: str, v: str | None) -> tuple[str, ...]:
    """The most specific part of the file that contributed to a grid point's config."""
    if v:
        return ("variants", v)
    if m in suite.overrides:
        return ("overrides", m)
    if ds in suite.dataset_overrides:
        return ("dataset_overrides", ds)
    return ("base",)


def _check_metrics(suite: Suite, loc: _Loc) -> None:
    """Every reported metric's K must be one the runs evaluate (ndcg_legacy's depth is max(eval.ks))."""
    for i, s in enumerate(suite.settings):
        for p in suite._points:
            ks = p.config.eval.ks
            for m in s.metrics:
                if int(m.rsplit("@", 1)[1]) not in ks:
                    raise loc.error(
                        ("settings", i, "metrics"),
                        f"settings[{i}] reports {m}, but the runs evaluate "
                        f"eval.ks = {ks}; add the cut-off to base.eval.ks",
                    )
    if suite.report.primary not in {m for s in suite.settings for m in s.metrics}:
        raise loc.error(
            ("report", "primary"), f"report.primary {suite.report.primary!r} is not among the settings' metrics"
        )


def comparable(cfg: RunConfig) -> dict[str, Any]:
    """The config without execution-only fields, for deciding whether a run folder is this grid point."""
    from hashgnn.data import absolute_dataset

    d = cfg.to_dict()
    for sec, key in EXECUTION_FIELDS:
        d[sec].pop(key, None)
    d["data"]["dataset"] = absolute_dataset(d["data"]["dataset"])
    return d


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """``section.key: a != b`` for every comparable field that differs."""
    da, db = comparable(a), comparable(b)
    out = []
    for sec in da:
        for k in da[sec]:
            if da[sec][k] != db[sec].get(k):
                out.append(f"{sec}.{k}: {da[sec][k]!r} != {db[sec].get(k)!r}")
    return out
