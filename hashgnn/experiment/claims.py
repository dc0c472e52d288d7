"""The paper's claims, checked against a suite's measurements (the report prints them beside its tables).

"Comparable" is not a number in the paper; :data:`COMPARABLE` holds the targets the project set itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hashgnn.experiment.results import Stat, aggregate
from hashgnn.experiment.suite import Suite
from hashgnn.methods import CODE_MODES, names

ABLATIONS = names(role="ablation")
BASELINES = names(role="baseline")
COMPARABLE = {"hamming": 0.90, "hierarchical": 0.98}
SEVERAL_TIMES_FASTER = 2.0  # "several times faster": the bar the speed claim is checked against


def md_cell(s: Any) -> str:
    """A Markdown table cell."""
    return str(s).replace("|", "\\|").replace("\n", " ")


@dataclass
class Claim:
    """One of the paper's claims checked on one data set / code length / setting."""

    dataset: str
    bits: int
    setting: str
    claim: str
    measured: str
    verdict: str
    agrees: bool | None  # None: not measurable from what was run


def _cmp_verdict(a: Stat, b: Stat, name_b: str) -> tuple[str, bool]:
    diff = a.mean - b.mean
    se = math.sqrt((a.sem or 0.0) ** 2 + (b.sem or 0.0) ** 2) if a.sem is not None and b.sem is not None else None
    if diff > 0:
        if se is None:
            return "agrees (one seed, so no noise estimate)", True
        if diff > 2 * se:
            return f"agrees ({diff / se:.1f} standard errors)", True
        return f"agrees in the mean, but within seed noise ({diff / se:.1f} standard errors)", True
    if diff == 0:
        return f"**disagrees**: {name_b} is equal", False
    noise = f", {-diff / se:.1f} standard errors" if se else ""
    return f"**disagrees**: {name_b} is higher by {-diff:.4f}{noise}", False


def check_claims(
    suite: Suite, rows: list[dict[str, Any]], primary: str, qps: dict[str, dict[str, Any]] | None = None
) -> list[Claim]:
    """The paper's claims against the suite's measurements (mean over seeds of ``primary``)."""
    agg = aggregate(rows, [primary])
    cont_settings = [s for s in suite.settings if s.mode == "continuous"]
    claims: list[Claim] = []
    # With variants (e.g. one per encoder), methods are compared within the same variant.
    variants: list[str | None] = [*suite.variants] or [None]
    for ds in suite.datasets:
        for bits in suite.bits:
            for var, s in ((v, x) for v in variants for x in suite.settings if x.mode in CODE_MODES):

                def lab(m: str, var: str | None = var) -> str:
                    return m if var is None else f"{m}-{var}"

                where = s.name if var is None else f"{s.name} [{var}]"
                hg = agg.get((ds, bits, s.name, lab("hashgnn")), {}).get(primary)
                if hg is None:
                    claims.append(
                        Claim(ds, bits, where, "HashGNN claims", "hashgnn not measured", "not measured", None)
                    )
                    continue
                cont = None
                if cont_settings:
                    cont = agg.get((ds, bits, cont_settings[0].name, lab("continuous")), {}).get(primary)
                thr = COMPARABLE[s.mode]
                if cont is None or cont.mean <= 0:
                    claims.append(
                        Claim(
                            ds,
                            bits,
                            where,
                            "codes comparable to the continuous counterpart",
                            "continuous counterpart not measured",
                            "not measured",
                            None,
                        )
                    )
                else:
                    r = hg.mean / cont.mean
                    ok = r >= thr
                    verdict = (
                        f"agrees (ratio ≥ {thr:.2f})"
                        if ok
                        else f"**disagrees**: hashgnn reaches {r:.1%} of the continuous model (target {thr:.0%})"
                    )
                    claims.append(
                        Claim(
                            ds,
                            bits,
                            where,
                            "codes comparable to the continuous counterpart",
                            f"hashgnn / continuous = {hg.mean:.4f} / {cont.mean:.4f} = {r:.3f}",
                            verdict,
                            ok,
                        )
                    )
                for group, members in (("ablation", ABLATIONS), ("baseline", BASELINES)):
                    for other in members:
                        o = agg.get((ds, bits, s.name, lab(other)), {}).get(primary)
                        what = f"hashgnn above {group} {other}"
                        if o is None:
                            claims.append(Claim(ds, bits, where, what, f"{other} not measured", "not measured", None))
                            continue
                        verdict, ok = _cmp_verdict(hg, o, other)
                        claims.append(Claim(ds, bits, where, what, f"{hg.fmt()} vs {o.fmt()}", verdict, ok))
            if qps:
                q = next(
                    (
                        v
                        for k, v in qps.items()
                        if v.get("dataset") == ds and v.get("bits") == bits and v.get("method") == "hashgnn"
                    ),
                    None,
                )
                if q and q.get("hamming_qps") and q.get("continuous_qps"):
                    r = q["hamming_qps"] / q["continuous_qps"]
                    ok = r >= SEVERAL_TIMES_FASTER
                    claims.append(
                        Claim(
                            ds,
                            bits,
                            "speed",
                            "Hamming retrieval several times faster than continuous",
                            f"{q['hamming_qps']:,.0f} vs {q['continuous_qps']:,.0f} q/s = {r:.1f}x",
                            f"agrees (≥ {SEVERAL_TIMES_FASTER:.0f}x)" if ok else f"**disagrees**: only {r:.1f}x",
                            ok,
                        )
                    )
    return claims


def claims_table(claims: list[Claim], metric: str, with_suite: str | None = None) -> list[str]:
    lines = [
        f"| data set | bits | setting | claim | measured ({metric}, mean over seeds) | verdict |",
        "|---|---:|---|---|---|---|",
    ]
    for c in claims:
        lines.append(f"| {c.dataset} | {c.bits} | {c.setting} | {c.claim} | {md_cell(c.measured)} | {c.verdict} |")
    return lines
