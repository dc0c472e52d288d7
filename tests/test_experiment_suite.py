"""Suite files: strict keys with file and line in errors, grid expansion, patch precedence, the shipped suites."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from hashgnn.errors import ConfigError
from hashgnn.experiment.report import check_claims
from hashgnn.experiment.results import aggregate, stat
from hashgnn.experiment.runner import Selection
from hashgnn.experiment.suite import config_diff, load_suite
from hashgnn.methods import METHOD_NAMES, METHODS

REPO = Path(__file__).resolve().parents[1]

SUITE = """\
name: tiny
base:
  data: {dataset: music_toy}
  model: {id_dim: 16, beta_epochs: 5, mf_dim: "${bits}"}
  train: {epochs: 3, lr: 0.01}
  eval: {ks: [20, 100]}
grid:
  methods: [hashgnn, mf]
  datasets: [music_toy, lastfm]
  bits: [8, 16]
  seeds: [1, 2]
dataset_overrides:
  lastfm: {train: {epochs: 4, lr: 0.02}}
overrides:
  mf: {train: {epochs: 5}, model: {beta_epochs: 6}}
variants:
  a: {model: {beta_epochs: 7}}
  b: {}
settings:
  - {name: hamming, mode: hamming, metrics: [recall@20, ndcg_legacy@100]}
  - {mode: hierarchical, candidates: 50, metrics: [recall@20]}
report: {primary: recall@20, plots: [bits]}
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_grid_expansion_order_and_run_ids(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, SUITE))
    pts = s.points()
    assert len(pts) == 2 * 2 * 2 * 2 * 2  # datasets x methods x variants x bits x seeds
    assert [p.run_id for p in pts[:4]] == [
        "music_toy/hashgnn-a/bits8/seed1",
        "music_toy/hashgnn-a/bits8/seed2",
        "music_toy/hashgnn-a/bits16/seed1",
        "music_toy/hashgnn-a/bits16/seed2",
    ]
    assert len({p.run_id for p in pts}) == len(pts)
    assert [x.name for x in s.settings] == ["hamming", "hierarchical"]
    assert s.settings[1].label == "Hierarchical (C = 50)"


def test_patch_precedence_and_bits_placeholder(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, SUITE))
    by = {p.run_id: p.config for p in s.points()}
    c = by["music_toy/hashgnn-b/bits16/seed2"]
    # base only, then the grid values
    assert (c.train.epochs, c.train.lr, c.model.beta_epochs, c.model.bits, c.train.seed) == (3, 0.01, 5, 16, 2)
    assert c.model.mf_dim == 16 and c.data.dataset == "music_toy" and c.model.method == "hashgnn"
    c = by["lastfm/hashgnn-b/bits8/seed1"]  # data set patch over base
    assert (c.train.epochs, c.train.lr, c.model.mf_dim) == (4, 0.02, 8)
    c = by["lastfm/mf-b/bits8/seed1"]  # method patch over the data set patch
    assert (c.train.epochs, c.train.lr, c.model.beta_epochs) == (5, 0.02, 6)
    c = by["lastfm/mf-a/bits8/seed1"]  # variant over the method patch
    assert c.model.beta_epochs == 7 and c.train.epochs == 5
    assert config_diff(by["lastfm/mf-a/bits8/seed1"], by["lastfm/mf-b/bits8/seed1"]) == ["model.beta_epochs: 7 != 6"]


@pytest.mark.parametrize(
    "old,new,line,match",
    [
        ("name: tiny\n", "name: tiny\nmethds: [x]\n", 2, "unknown key 'methds' in the suite"),
        ("  seeds: [1, 2]\n", "  seeds: [1, 2]\n  seed: 3\n", 12, "unknown key 'seed' in grid"),
        ("  methods: [hashgnn, mf]\n", "  methods: [hashgnn, mff]\n", 8, "unknown method 'mff'"),
        (
            "  - {mode: hierarchical, candidates: 50, metrics: [recall@20]}\n",
            "  - {mode: hierarchical, candidates: 50, metrics: [recall@50]}\n",
            21,
            "eval.ks = \\[20, 100\\]",
        ),
        (
            "  - {mode: hierarchical, candidates: 50, metrics: [recall@20]}\n",
            "  - {mode: hamming, candidates: 50, metrics: [recall@20]}\n",
            21,
            "candidates only applies",
        ),
        (
            "  - {name: hamming, mode: hamming, metrics: [recall@20, ndcg_legacy@100]}\n",
            "  - {name: hamming, mode: hamming, metrics: [recal@20]}\n",
            20,
            "not METRIC@K",
        ),
        (
            "  mf: {train: {epochs: 5}, model: {beta_epochs: 6}}\n",
            "  mf: {train: {epochs: 5, epoch: 2}, model: {beta_epochs: 6}}\n",
            15,
            "overrides.mf.train: unknown key 'epoch'",
        ),
        (
            "report: {primary: recall@20, plots: [bits]}\n",
            "report: {primary: recall@20, plots: [bitz]}\n",
            22,
            "unknown plot 'bitz'",
        ),
        ("  bits: [8, 16]\n", "  bits: [8, sixteen]\n", 10, "'sixteen' is not a int"),
        ("  eval: {ks: [20, 100]}\n", "  eval: {ks: [20, 100]}\n  evaluation: {}\n", 7, "unknown section 'evaluation'"),
        (
            "  train: {epochs: 3, lr: 0.01}\n",
            "  train: {epochs: 3,\n    lr: 0.01, lrr: 1}\n",
            6,
            "base.train: unknown key 'lrr'",
        ),
    ],
)
def test_bad_suite_is_a_config_error_with_file_and_line(
    tmp_path: Path, old: str, new: str, line: int, match: str
) -> None:
    assert old in SUITE
    p = write(tmp_path, SUITE.replace(old, new))
    with pytest.raises(ConfigError, match=match) as e:
        load_suite(p)
    assert str(e.value).startswith(f"{p}, line {line}: "), str(e.value)


def test_missing_file_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="a suite file is a mapping"):
        load_suite(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(write(tmp_path, "grid: [\n"))


def test_selection_filters_and_typos(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, SUITE))
    sel = Selection(bits=[8], methods=["mf"], variants=["a"])
    chosen = [p.run_id for p in s.points() if sel.selects(p)]
    assert chosen == [
        "music_toy/mf-a/bits8/seed1",
        "music_toy/mf-a/bits8/seed2",
        "lastfm/mf-a/bits8/seed1",
        "lastfm/mf-a/bits8/seed2",
    ]
    assert sel.describe() == "--only-methods mf --only-bits 8 --only-variants a"
    with pytest.raises(ConfigError, match="--only-bits 12: not in the grid"):
        Selection(bits=[12]).check(s)
    with pytest.raises(ConfigError, match="--only-methods lsh"):
        Selection(methods=["lsh"]).check(s)


def test_stat_is_mean_and_sample_sd() -> None:
    st = stat([0.1, 0.2, 0.3])
    assert st.mean == pytest.approx(0.2) and st.sd == pytest.approx(0.1) and st.n == 3
    assert st.fmt() == "0.2000 ± 0.1000"
    assert stat([0.5]).sd is None and stat([0.5]).fmt() == "0.5000"
    assert math.isnan(stat([]).mean)


def _rows(values: dict[str, list[float]], setting: str = "hamming") -> list[dict]:
    rows = []
    for label, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append(
                {
                    "dataset": "d",
                    "bits": 32,
                    "setting": setting,
                    "label": label,
                    "method": label,
                    "seed": seed,
                    "status": "ok",
                    "recall@20": v,
                }
            )
    return rows


def test_aggregate_and_claims_on_hand_made_rows(tmp_path: Path) -> None:
    rows = _rows(
        {
            "hashgnn": [0.10, 0.11, 0.12],
            "hash_ste": [0.12, 0.13, 0.14],
            "lsh": [0.05, 0.05, 0.06],
            "hashnet": [0.105, 0.115, 0.11],
        }
    )
    rows += _rows({"continuous": [0.12, 0.12, 0.12]}, setting="continuous")
    rows.append({"dataset": "d", "bits": 32, "setting": "hamming", "label": "hashgnn", "status": "error"})
    agg = aggregate(rows, ["recall@20"])
    assert agg[("d", 32, "hamming", "hashgnn")]["recall@20"].mean == pytest.approx(0.11)
    assert agg[("d", 32, "hamming", "hashgnn")]["recall@20"].n == 3  # the error row does not count
    suite_text = """\
        name: c
        base: {eval: {ks: [20]}}
        grid: {methods: [hashgnn, hash_ste, lsh, hashnet, continuous], datasets: [d], bits: [32], seeds: [0, 1, 2]}
        settings:
          - {name: hamming, mode: hamming, metrics: [recall@20]}
          - {name: continuous, mode: continuous, metrics: [recall@20]}
        report: {claims: true}
        """
    suite = load_suite(write(tmp_path, suite_text))
    claims = {c.claim: c for c in check_claims(suite, rows, "recall@20")}
    comp = claims["codes comparable to the continuous counterpart"]
    assert comp.agrees is True and "= 0.917" in comp.measured  # 0.11 / 0.12 >= 0.90
    slower = [dict(r, **{"recall@20": 0.13}) if r["label"] == "continuous" else r for r in rows]
    comp = next(c for c in check_claims(suite, slower, "recall@20") if c.claim.startswith("codes comparable"))
    assert comp.agrees is False and "reaches 84.6% of the continuous model" in comp.verdict
    ste = claims["hashgnn above ablation hash_ste"]
    assert ste.agrees is False and "hash_ste is higher by 0.0200" in ste.verdict
    lsh = claims["hashgnn above baseline lsh"]
    assert lsh.agrees is True and "standard errors" in lsh.verdict
    hn = claims["hashgnn above baseline hashnet"]  # 0.110 vs 0.110: equal means
    assert hn.agrees is False
    assert claims["hashgnn above ablation hashgnn_nr"].agrees is None  # not run: said so, not hidden


def test_shipped_suites_load_with_the_documented_grids() -> None:
    paper = load_suite(REPO / "experiments" / "paper.yaml")
    # every registered method the epoch trainer trains but plain (the lightgcn encoder's own row lives
    # in results.yaml); the fitted spectral methods are this project's, not the paper's comparison
    assert set(paper.methods) == {m for m in METHOD_NAMES if METHODS[m].fit is None} - {"plain"}
    # The paper's two public data sets, plus lastfm, whose runs fit a 2-core session.
    assert paper.datasets == ["lastfm", "ml-1m", "gowalla"] and paper.bits == [32, 64] and len(paper.seeds) == 3
    assert {s.mode for s in paper.settings} >= {"hamming", "hierarchical"}
    hier = next(s for s in paper.settings if s.mode == "hierarchical")
    assert hier.candidates == 500
    for s in paper.settings:
        assert {"recall@20", "ndcg@20", "ndcg_legacy@50", "ndcg_legacy@100"} <= set(s.metrics)
    assert all(p.config.eval.ks == [20, 50, 100] for p in paper.points())  # legacy NDCG depth 100
    bits = load_suite(REPO / "experiments" / "bits.yaml")
    assert bits.methods == ["hashgnn", "hash_ste"] and bits.bits == [8, 16, 32, 64, 128]
    # bits.yaml shares paper.yaml's protocol, so their common runs can be reused.
    shared = {p.run_id: p for p in paper.points()}
    common = [p for p in bits.points() if p.run_id in shared]
    assert common and all(config_diff(p.config, shared[p.run_id].config) == [] for p in common)
    guidance = load_suite(REPO / "experiments" / "guidance.yaml")
    scheds = {
        (
            p.config.model.beta_schedule,
            p.config.model.beta_epochs
            if p.config.model.beta_schedule == "linear"
            else p.config.model.beta_value
            if p.config.model.beta_schedule == "constant"
            else None,
            p.config.model.guidance,
        )
        for p in guidance.points()
    }
    for g in ("node", "bit"):
        assert {
            ("staircase", None, g),
            ("linear", 10, g),
            ("linear", 30, g),
            ("linear", 100, g),
            ("constant", 0.5, g),
        } <= scheds
    smoke = load_suite(REPO / "experiments" / "smoke.yaml")
    assert smoke.datasets == ["music_toy"] and set(smoke.methods) == set(paper.methods)


@pytest.mark.parametrize(
    "suite_file,dataset,as_configs,whole",
    # paper-converged.yaml keeps the spectral settings its report was run with (the configs of 2026-12-03);
    # the gowalla suite has the paper's main rows only (nine GraphSAGE runs do not fit a session)
    [
        ("paper-converged.yaml", "lastfm", False, True),
        ("paper-converged-ml-1m.yaml", "ml-1m", True, True),
        ("paper-converged-gowalla.yaml", "gowalla", True, False),
    ],
)
def test_converged_suites_keep_the_paper_protocol_and_the_configs(
    suite_file: str, dataset: str, as_configs: bool, whole: bool
) -> None:
    """The converged comparisons change the budget only; the ml-1m and gowalla ones run the shipped configs."""
    from hashgnn.config import RunConfig

    conv = load_suite(REPO / "experiments" / suite_file)
    paper_suite = load_suite(REPO / "experiments" / "paper.yaml")
    paper = {p.run_id: p for p in paper_suite.points()}
    assert conv.datasets == [dataset] and conv.bits == [64]
    main_rows = {"hashgnn", "hash_ste", "continuous", "spectral", "spectral_distill"}
    assert set(paper_suite.methods) <= set(conv.methods) if whole else main_rows <= set(conv.methods)
    budget = {"train.epochs", "train.eval_every", "train.patience", "train.pretrain_epochs", "model.beta_epochs"}
    for p in conv.points():
        if p.method in ("spectral", "spectral_distill"):
            if not as_configs:
                continue
            kind = "reference" if p.method == "spectral" else "codes"
            shipped = RunConfig.load(REPO / "configs" / f"{dataset}-{kind}.yaml")
            assert p.config.spectral == shipped.spectral
            if p.method == "spectral_distill":
                assert p.config.distill == shipped.distill
            continue
        twin = paper[f"{dataset}/{p.method}/bits64/seed12345"]
        # mf keeps its own optimiser settings; the others differ from paper.yaml in the budget alone.
        diff = {line.split(":", 1)[0] for line in config_diff(p.config, twin.config)}
        allowed = budget | (
            {"train.weight_decay", "train.batch_size", "train.negatives"} if p.method == "mf" else set()
        )
        assert diff <= allowed, (p.method, diff)
