"""The findings table (every registered finding on every dataset of the records), paired encoder comparisons, and
their files: results/findings.md (+ .csv, .json) and the README's summary.

A finding is declared beside the tasks it reads (svgbench/tasks: a `FindingSpec`, registered like a task; the SVG
paper's claims are the built-ins, in tasks/builtin_findings.py). Nothing here runs a model: every number comes
from the records' metrics, their per-item values ("per_item", "per_image_areas") and their intervals ("ci").
Verdicts: "holds", "does not hold", or "inconclusive" (interval too wide, or the measurement is missing), each
with its reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from .metrics.stats import N_RESAMPLES, paired_diff_ci, paired_seg_diff_ci
from .records import Record, Results
from .tasks.comparison import COLUMNS, FAILS, HOLDS, UNSURE, encoder_roles, finding_row, finite, paired_items
from .tasks.registry import finding_specs

__all__ = ["COLUMNS", "FAILS", "HOLDS", "UNSURE", "encoder_roles", "findings_table", "paired_comparison",
           "premises", "summary_markdown", "write_findings", "write_summary"]


def premises() -> tuple[str, ...]:
    """The registered findings that are premises (not claims of the paper: the baselines' own strength, where
    "holds" means the baseline is at least as strong as SVG), in registry order."""
    return tuple(s.id for s in finding_specs() if s.premise)


##################################################################################################
# The findings table
##################################################################################################


def findings_table(results: Results | Iterable[Record], roles: dict | None = None) -> pd.DataFrame:
    """Every registered finding per dataset, in registry order: columns COLUMNS (finding, claim, data, measured,
    value, ci_low, ci_high, verdict, reason, method, resamples, level, level_basis). `roles` overrides
    `encoder_roles(results)` entries. A finding whose `requires_role` has no encoder has no row; one whose `reads`
    tasks have no record on a dataset is inconclusive there, saying which."""
    results = Results.of(results)
    roles = encoder_roles(results) | (roles or {})
    on = {(task, data) for task, _, data in results.cells()}
    specs = finding_specs()
    rows = []
    for data in results.data_keys():
        for spec in specs:
            if spec.requires_role and not roles.get(spec.requires_role):
                continue
            missing = next((t for t in spec.reads if (t, data) not in on), None)
            if missing is not None:
                rows.append(finding_row(spec, data, reason=f"not measured: no `{missing}` record on this data"))
            else:
                rows.append(spec.run()(spec, results, data, roles))
    return pd.DataFrame(rows, columns=COLUMNS)


##################################################################################################
# Paired comparisons
##################################################################################################


def paired_comparison(results: Results | Iterable[Record], encoder_a: str, encoder_b: str, *,
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Every metric both encoders have per-item values for, on the same task and dataset: the difference
    a - b with a paired bootstrap interval (the same resampled items for both) and whether it excludes 0.

    Columns: task, data, metric, a, b, value_a, value_b (the records' headline values), diff (mean over
    the shared items), ci_low, ci_high, n, method, level, excludes_zero.
    """
    results = Results.of(results)
    rows = []
    for task, data in sorted((task, data) for task, enc, data in results.cells() if enc == encoder_a):
        ra, rb = results.cell(task, encoder_a, data), results.cell(task, encoder_b, data)
        if rb is None:
            continue
        ma, mb = ra.metrics, rb.metrics
        pa, pb = ma.get("per_item") or {}, mb.get("per_item") or {}
        for key in sorted(set(pa) & set(pb)):
            items = paired_items(pa[key], pb[key])
            if items is None or len(items[0]) < 2:
                continue
            res = paired_diff_ci(*items, n_resamples=n_resamples, seed=seed)
            rows.append(_row(task, data, key, encoder_a, encoder_b, ma.get(key), mb.get(key), res))
        aa, ab = ma.get("per_image_areas"), mb.get("per_image_areas")
        if aa and ab and len(aa["intersect"]) == len(ab["intersect"]) >= 2:
            for key in ("miou", "macc"):
                res = paired_seg_diff_ci(aa, ab, key, n_resamples=n_resamples, seed=seed)
                rows.append(_row(task, data, key, encoder_a, encoder_b, ma.get(key), mb.get(key), res))
    cols = ["task", "data", "metric", "a", "b", "value_a", "value_b", "diff", "ci_low", "ci_high", "n", "method",
            "level", "excludes_zero"]
    return pd.DataFrame(rows, columns=cols)


def _row(task, data, key, a, b, va, vb, res) -> dict:
    return {"task": task, "data": data, "metric": key, "a": a, "b": b, "value_a": va, "value_b": vb,
            "diff": res["value"], "ci_low": res["ci_low"], "ci_high": res["ci_high"], "n": res["n"],
            "method": res["method"], "level": res["level"], "excludes_zero": res["excludes_zero"]}


##################################################################################################
# Writing
##################################################################################################


def _md_cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace("|", "\\|")


def _level_text(level, basis) -> str:
    if level is None or (isinstance(level, float) and not math.isfinite(level)):
        return "no interval"
    return f"{100 * level:.3g}%, {basis}" if basis else f"{100 * level:.3g}%"


def method_notes(df: pd.DataFrame) -> list[str]:
    """One line per distinct (method, resamples, level) of the findings with an interval: the findings it
    covers, as each was computed."""
    groups: dict[tuple, list[str]] = {}
    for rec in df.to_dict(orient="records"):
        if rec.get("method") is None or (isinstance(rec["method"], float) and not math.isfinite(rec["method"])):
            continue
        level = rec.get("level")
        key = (rec["method"], None if level is None or (isinstance(level, float) and not math.isfinite(level))
               else level, rec.get("level_basis"))
        groups.setdefault(key, []).append(rec["finding"])
    return [f"- {', '.join(dict.fromkeys(fids))}: {method}; level {_level_text(level, basis)}"
            for (method, level, basis), fids in groups.items()]


def _table(df: pd.DataFrame, cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(_md_cell(rec[c]) for c in cols) + " |" for rec in df.to_dict(orient="records")]


def findings_markdown(df: pd.DataFrame) -> str:
    cols = ["finding", "claim", "data", "measured", "verdict", "reason"]
    premise = df["finding"].isin(premises())
    lines = ["# Findings: the SVG paper's claims, measured", ""]
    if premise.any():
        lines += ["## Premises", "", "Not claims of the paper: the baselines' own strength, on which the generation "
                  "comparisons rest. Here \"holds\" means the VAE reconstructs at least as well as SVG.", "",
                  *_table(df[premise], cols), "", "## The paper's claims", ""]
    lines += [*_table(df[~premise], cols), "",
              "Intervals, as computed for each finding (method, resamples, level; \"measured\": the coverage "
              "found in the regime it is used in, by the test named):", *method_notes(df), "",
              "Verdicts: holds / does not hold when the whole interval decides, inconclusive when it straddles the "
              "threshold or a measurement is missing.", ""]
    return "\n".join(lines)


def write_findings(results_dir: str | Path, df: pd.DataFrame) -> Path:
    """results_dir/findings.md (+ .csv, .json) from the findings table `df` (`findings_table`). -> the markdown
    path."""
    from .checkpoints import atomic_write_bytes

    root = Path(results_dir)
    atomic_write_bytes(root / "findings.md", findings_markdown(df).encode())
    atomic_write_bytes(root / "findings.csv", df.to_csv(index=False).encode())
    rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in df.astype(object).where(df.notna(), None).to_dict(orient="records")]
    payload = {"premises": list(premises()), "findings": rows}
    atomic_write_bytes(root / "findings.json", (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode())
    return root / "findings.md"


##################################################################################################
# The README's summary: generated, so no number under the scorecard is typed by hand
##################################################################################################


def _scorecard_values(score: pd.DataFrame, column: str) -> list[str]:
    """"encoder v [low, high]" for each scorecard row with a value in `column` (interval where it has one)."""
    out = []
    for rec in score.to_dict(orient="records"):
        v = rec.get(column)
        if not finite(v):
            continue
        lo, hi = rec.get(f"{column} ci_low"), rec.get(f"{column} ci_high")
        out.append(f"{rec['encoder']} {v:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if finite(lo) and finite(hi) else ""))
    return out


def summary_markdown(df: pd.DataFrame, score: pd.DataFrame | None = None) -> str:
    """What the findings show, sorted by verdict, with each finding's own measurement and the scorecard's
    generation numbers: every number comes from `df` (findings_table) and `score` (report.scorecard_table)."""
    lines = ["# What it shows at this scale", "",
             "Generated by `svgbench report` from the findings and the scorecard of these records (nothing here "
             "is typed by hand); the intervals' methods and levels are under the findings table.", ""]
    rows = df.to_dict(orient="records")

    def item(r):
        return f"- {r['finding']}: {r['claim']}: {r['measured']}"

    premise_ids = premises()
    premise_rows = [r for r in rows if r["finding"] in premise_ids]
    if premise_rows:
        lines += ["## Premises (not claims of the paper)", "",
                  "The generation comparisons rest on these: \"holds\" means the VAE baseline reconstructs at "
                  "least as well as SVG.", ""]
        lines += [item(r) + f" ({r['verdict']})" for r in premise_rows] + [""]
    claims = [r for r in rows if r["finding"] not in premise_ids]
    for verdict, title in ((HOLDS, "The paper's claims that hold here"),
                           (FAILS, "The paper's claims contradicted here"),
                           (UNSURE, "The paper's claims not shown here (inconclusive: the interval straddles the "
                                    "threshold, or the measurement is missing)")):
        picked = [r for r in claims if r["verdict"] == verdict]
        if picked:
            lines += [f"## {title}", ""]
            lines += [item(r) + ("" if verdict != UNSURE else f" ({r['reason']})") for r in picked] + [""]
    if score is not None and not score.empty:
        fid_cols = [c for c in score.columns if c.endswith("-FID") and not c.startswith("few-step")]
        few_cols = [c for c in score.columns if c.startswith("few-step") and c.endswith(")")]
        gen = [(c, _scorecard_values(score, c)) for c in fid_cols + few_cols]
        gen = [(c, v) for c, v in gen if v]
        if gen:
            lines += ["## Generation (scorecard)", ""]
            for c, vals in gen:
                at = ""
                if c.startswith("few-step") and "few-step sampler" in score.columns:
                    pts = sorted({str(p) for p in score["few-step sampler"] if isinstance(p, str)})
                    at = f" at {', '.join(pts)}" if pts else ""
                lines.append(f"- {c}{at}: " + "; ".join(vals))
            lines.append("")
    return "\n".join(lines)


def write_summary(results_dir: str | Path, df: pd.DataFrame, score: pd.DataFrame | None) -> Path:
    """results_dir/summary.md from the findings table `df` (`findings_table`) and the scorecard of the same records
    (`report.scorecard_table`, passed in by the report, which sits beside this module) (quoted by the README's
    `summary` block). -> its path."""
    from .checkpoints import atomic_write_bytes

    path = Path(results_dir) / "summary.md"
    atomic_write_bytes(path, (summary_markdown(df, score) + "\n").encode())
    return path
