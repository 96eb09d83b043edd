"""What every finding shares: the verdicts, the row of the findings table, the encoder roles, paired differences.

A finding (a `FindingSpec`) compares encoders on the newest records of the tasks it reads. Its row says what was
measured, the value and interval, and a verdict: "holds", "does not hold", or "inconclusive" (interval too wide,
or the measurement is missing), each with its reason. Encoder roles are read from the records' specs: the SVG
encoder is family "svg" with its residual branch, its SSL encoder is the DINO it wraps
(spec.extra.svg_config.dino), the DINO-only decoder is family "svg" without residual, the VAE is family "sd-vae"
(and the matched-capacity VAE one as wide as SVG's latent).
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from ..metrics.stats import paired_diff_ci
from ..records import Record, Results, finite_number
from .spec import FindingSpec

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
COLUMNS = ["finding", "claim", "data", "measured", "value", "ci_low", "ci_high", "verdict", "reason", "method",
           "resamples", "level", "level_basis"]
NOMINAL = "nominal (bootstrap of a mean: 93-97% measured in tests/test_stats.py)"


def finding_row(spec: FindingSpec, data: str, measured="not measured", value=None, low=None, high=None,
                verdict=UNSURE, reason="not measured", method=None, resamples=None, level=None, level_basis=None,
                claim: str | None = None) -> dict:
    """One row of the findings table (COLUMNS); `claim` defaults to the spec's."""
    return {"finding": spec.id, "claim": spec.claim_text() if claim is None else claim, "data": data,
            "measured": measured, "value": value, "ci_low": low, "ci_high": high, "verdict": verdict,
            "reason": reason, "method": method, "resamples": resamples, "level": level, "level_basis": level_basis}


def encoder_roles(records: Results | Iterable[Record]) -> dict[str, str | None]:
    """{"svg", "ssl", "dino_only", "vae", "vae_wide"} -> encoder name (None when no record has that role)."""
    specs = {r.encoder: r.spec or {} for r in records}

    def svg_cfg(spec):
        return (spec.get("extra") or {}).get("svg_config") or {}

    svg = sorted(n for n, s in specs.items() if s.get("family") == "svg" and svg_cfg(s).get("residual", True))
    roles = {"svg": svg[0] if svg else None, "ssl": None, "dino_only": None, "vae": None}
    dino = svg_cfg(specs[svg[0]]).get("dino") if svg else None
    if dino in specs:
        roles["ssl"] = dino
    only = sorted(n for n, s in specs.items() if s.get("family") == "svg" and not svg_cfg(s).get("residual", True)
                  and (dino is None or svg_cfg(s).get("dino") == dino))
    roles["dino_only"] = only[0] if only else None
    # the VAE baseline, and the matched-capacity VAE: an SD-VAE-design latent as wide as SVG's
    width = specs[svg[0]].get("latent_channels") if svg else None
    vae = sorted(n for n, s in specs.items() if s.get("family") == "sd-vae")
    wide = [n for n in vae if width is not None and specs[n].get("latent_channels") == width]
    narrow = [n for n in vae if n not in wide]
    roles["vae"] = (narrow or vae or [None])[0]
    roles["vae_wide"] = next((n for n in wide if n != roles["vae"]), None)
    return roles


def finite(v) -> bool:
    """A finite int or float (not a bool): `records.finite_number`'s test."""
    return finite_number(v) is not None


def paired_items(xa, xb):
    """Items measured for both (None where an item has no finite value); None when the lists differ in length."""
    if not isinstance(xa, list) or not isinstance(xb, list) or len(xa) != len(xb):
        return None
    keep = [i for i, (u, v) in enumerate(zip(xa, xb)) if finite(u) and finite(v)]
    return np.array([xa[i] for i in keep], float), np.array([xb[i] for i in keep], float)


def resamples(method) -> int | None:
    """The resample count a method label states ("bootstrap-BCa x1000" -> 1000)."""
    m = re.search(r"x(\d+)", method or "")
    return int(m.group(1)) if m else None


def sign_verdict(low, high, what) -> tuple[str, str]:
    """Verdict for a claim that a difference is > 0."""
    if low > 0:
        return HOLDS, f"the whole interval is above 0: {what}"
    if high < 0:
        return FAILS, "the whole interval is below 0: the opposite of the claim at this scale"
    return UNSURE, "the interval contains 0: too wide to tell at this sample size"


def within_one(low, high, what) -> tuple[str, str]:
    """Verdict for a claim that a difference lies within +-1 point."""
    if -1 <= low and high <= 1:
        return HOLDS, "the whole interval lies within +-1 point"
    if low > 1 or high < -1:
        return FAILS, "the whole interval lies outside +-1 point"
    return UNSURE, "the interval crosses +-1 point: too wide to tell at this sample size"


def diff_finding(spec: FindingSpec, results: Results, data: str, a: str | None, b: str | None, verdict_fn,
                 what: str, key: str | None = None) -> dict:
    """The finding that encoder `a` minus encoder `b` on the per-item values of `key` (default: the spec's metric)
    in the first task the spec reads passes `verdict_fn` (sign_verdict, within_one), with a paired bootstrap
    interval over the items both measured."""
    task, key = spec.reads[0], key or spec.metric
    claim = spec.claim_text(key)
    if a is None or b is None:
        return finding_row(spec, data, reason=f"not measured: no encoder with the role needed ({task})", claim=claim)
    ra, rb = results.cell(task, a, data), results.cell(task, b, data)
    if ra is None or rb is None:
        return finding_row(spec, data, reason=f"not measured: no `{task}` record for {a if ra is None else b}",
                           claim=claim)
    items = paired_items((ra.metrics.get("per_item") or {}).get(key), (rb.metrics.get("per_item") or {}).get(key))
    if items is None or len(items[0]) < 2:
        return finding_row(spec, data, reason=f"not measured: no shared per-item `{key}` values", claim=claim)
    res = paired_diff_ci(*items)
    verdict, reason = verdict_fn(res["ci_low"], res["ci_high"], what)
    measured = f"{key}({a}) - {key}({b}) = {res['value']:+.2f} [{res['ci_low']:+.2f}, {res['ci_high']:+.2f}], n={res['n']}"
    return finding_row(spec, data, measured, res["value"], res["ci_low"], res["ci_high"], verdict, reason,
                       f"paired {res['method']}", resamples(res["method"]), res["level"], NOMINAL, claim=claim)
