"""The scorecard: one row per (encoder, dataset) with the headline number of each task, the published figures
from baselines/ apart, and the files written for it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..checkpoints import atomic_write_bytes
from ..records import Record, Results, feature_network_prefix, finite_number as _num
from ..tasks import get_task, list_tasks
from .common import (CI_PARTS, ID_COLUMNS, curve_headline_title, dumps_json, intervals_next_to_values, json_rows,
                     point_ci, reason_lines, row_names, spec_of)
from .tables import interval_notes, to_markdown


PUBLISHED_COLUMNS = ["group", "model", "latent", "training_epochs", "sampling_steps", "guidance", "metric", "value",
                     "dataset", "protocol", "source"]


def scorecard_formats() -> dict[str, str]:
    """Scorecard column title -> format (network metrics under their bare title), from the task registry."""
    fmts = {}
    for spec in _scorecard_tasks():
        fmts.update({m.headline_title: m.fmt for m in spec.headline_metrics()})
        if spec.curve is not None and spec.curve.headline_max_x is not None:
            for prefix in ("judge", "Inception"):
                fmts[curve_headline_title(spec.curve, prefix)] = spec.curve.fmt
    return fmts


def _scorecard_tasks() -> list:
    """Tasks with a scorecard column: a headline metric, or a curve headline; in registry order."""
    out = []
    for name in list_tasks():
        spec = get_task(name)
        if spec.headline_metrics() or (spec.curve is not None and spec.curve.headline_max_x is not None):
            out.append(spec)
    return out


def _missing_reason(task: str, spec: dict | None) -> str:
    tspec = spec_of(task)
    if tspec is not None and "decoder" in tspec.needs and spec is not None and not spec.get("has_decoder", True):
        return f"no pixel decoder: `{task}` needs one"
    return f"no `{task}` record"


def scorecard_frame(records: Results | Iterable[Record],
                    intervals: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str, str]], list[str]]:
    """-> (measured rows, n/a items (row name, column, reason), notes on mixed weights)."""
    results = Results.of(records)
    specs = _scorecard_tasks()
    tasks = {t.name: results.latest(t.name) for t in specs}
    keys = sorted({k for per in tasks.values() for k in per}, key=lambda k: (k[1], k[0]))
    names = row_names(keys)
    network_tasks = [t.name for t in specs if any(m.network for m in t.metrics) or t.curve is not None]
    prefixes = {}
    for k in keys:
        r = next((tasks[t][k] for t in network_tasks if k in tasks[t]), None)
        r = r or next(per[k] for per in tasks.values() if k in per)
        prefixes[k] = feature_network_prefix(r)
    nets = sorted(set(prefixes.values()), key=lambda p: (p != "judge", p))
    rows, na, mixed = [], [], []
    for k in keys:
        recs = [per[k] for per in tasks.values() if k in per]
        spec = recs[0].spec
        row = {"kind": "measured", "encoder": k[0], "data": k[1], "weights": spec.get("weights")}
        hashes = sorted({r.weights_hash for r in recs if r.weights_hash})
        if len(hashes) > 1:
            mixed.append(f"- {names[k]}: its task records come from {len(hashes)} weight versions "
                         f"({', '.join(hashes)})")

        def put(task, key, title, rec, row=row, spec=spec, name=names[k]):
            value = None if rec is None else _num(rec.metrics.get(key))
            row[title] = value
            ci = None if rec is None or value is None else (rec.metrics.get("ci") or {}).get(key)
            if intervals and ci:
                for part in CI_PARTS:
                    row[f"{title} {part}"] = ci.get(part)
            if value is None:
                if rec is None:
                    why = _missing_reason(task, spec)
                else:
                    why = (rec.metrics.get("unavailable") or {}).get(key) or f"`{task}` reported no {key}"
                na.append((name, title, why))

        for t in specs:  # plain headline metrics first, in registry order
            for m in t.headline_metrics():
                if not m.network:
                    put(t.name, m.key, m.headline_title, tasks[t.name].get(k))
        for t in specs:  # then the feature-network metrics, one column per network
            for net in nets:
                for m in t.headline_metrics():
                    if not m.network:
                        continue
                    col = f"{net}-{m.headline_title}"
                    if net == prefixes[k]:
                        put(t.name, m.key, col, tasks[t.name].get(k))
                    else:
                        row[col] = None
                        na.append((names[k], col, f"this dataset is scored with the {prefixes[k]} network"))
        for t in specs:  # then curve headlines: the value at the point the record's config fixed
            if t.curve is None or t.curve.headline_max_x is None:
                continue
            _curve_headline(t, tasks[t.name].get(k), nets, prefixes[k], row, na, names[k], spec, intervals)
        rows.append(row)
    df = intervals_next_to_values(pd.DataFrame(rows))
    if not df.empty:
        # the "at" column only where some row has a value
        ats = {t.curve.headline_at_title for t in specs if t.curve is not None}
        drop = [c for c in df.columns if any(c.startswith(a) for a in ats) and df[c].isna().all()]
        df = df.drop(columns=drop)
    return df, na, mixed


def _curve_headline(t, rec, nets, prefix, row, na, name, spec, intervals: bool = True) -> None:
    c = t.curve
    for net in nets:
        col = curve_headline_title(c, net)
        at = c.headline_at_title if len(nets) == 1 else f"{c.headline_at_title} ({net})"
        row[col], row[at] = None, None
        if net != prefix:
            na.append((name, col, f"this dataset is scored with the {prefix} network"))
            continue
        if rec is None:
            na.append((name, col, _missing_reason(t.name, spec)))
            continue
        # the point the task's config fixed before the run (sampling: `headline`), never the best of the
        # points: a minimum over points would flatter the winner
        m = rec.metrics
        head = m.get("headline") if isinstance(m.get("headline"), dict) else {}
        if head.get(c.series) is None or head.get(c.x) is None:
            na.append((name, col, (m.get("unavailable") or {}).get(c.value) or head.get("missing")
                       or f"the `{t.name}` record names no headline point fixed in advance (a record made before "
                          f"it did: `svgbench run --tasks {t.name} --force` recomputes it)"))
            continue
        point = next((p for p in m.get(c.key) or [] if p.get(c.series) == head[c.series]
                      and p.get(c.x) == head[c.x] and _num(p.get(c.value)) is not None), None)
        if point is None or _num(point[c.x]) > c.headline_max_x:
            na.append((name, col, (m.get("unavailable") or {}).get(c.value)
                       or f"no value at its headline point ({head[c.series]}, {c.x_title(head[c.x])})"
                       + ("" if point is None else f", beyond {c.headline_max_x} {c.x_unit}s")))
            continue
        row[col] = point[c.value]
        if intervals:
            row |= point_ci(point, col)
        row[at] = f"{point[c.series]}, {c.x_title(point[c.x])} (fixed in advance)"


def scorecard_table(records: Results | Iterable[Record]) -> pd.DataFrame:
    """Measured rows (kind="measured"): one per (encoder, dataset), the headline metric of each task, as numbers
    (None where n/a; `scorecard_unavailable` says why)."""
    return scorecard_frame(records)[0]


def scorecard_unavailable(records: Results | Iterable[Record]) -> list[dict]:
    """Every n/a cell of `scorecard_table`: {"row", "column", "reason"}."""
    return [{"row": r, "column": c, "reason": why} for r, c, why in scorecard_frame(records)[1]]


def published_table(path: str | Path | None = None) -> pd.DataFrame:
    """baselines/published.csv with kind="published" (empty when the file is missing)."""
    from ..baselines import load_published

    try:
        df = load_published(path)
    except FileNotFoundError:
        return pd.DataFrame(columns=["kind"] + PUBLISHED_COLUMNS)
    for c in ("training_epochs", "sampling_steps"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    cols = ["kind"] + [c for c in PUBLISHED_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c not in cols]
    return df[cols].reset_index(drop=True)


SCORECARD_NOTE = ("Measured by svgbench, one row per (encoder, dataset): the headline number of each task. "
                  "Rows on `shapes` come from the embedded procedural dataset and svgbench's tiny models: "
                  "**shapes numbers are not ImageNet numbers** and do not compare with the published figures "
                  "below. On shapes, FID/KID/precision/recall use svgbench's shapes judge as feature network "
                  "(judge-FID, ...), not Inception. The few-step column is the one sampler point the run's "
                  "preset fixes in advance (its `few-step sampler` column), not the best of the points.")


def _published_markdown(pub: pd.DataFrame) -> list[str]:
    lines = ["## Published (from baselines/published.csv)", ""]
    if pub.empty:
        return lines + ["baselines/published.csv not found: no published figures.", ""]
    lines += [("Figures as the papers report them, with their sources (ImageNet / ADE20K protocols). They are "
               "never mixed with the measured rows above: shapes numbers are not ImageNet numbers."), ""]
    cols = ["group", "model", "latent", "metric", "value", "dataset", "protocol", "training_epochs",
            "sampling_steps", "guidance", "source"]
    cols = [c for c in cols if c in pub.columns]
    titles = {"training_epochs": "epochs", "sampling_steps": "sampler steps"}
    lines += ["| " + " | ".join(titles.get(c, c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in pub.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                cells.append("")
            elif c == "value":
                cells.append(f"{float(v):g}")
            else:
                cells.append(str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_scorecard(results_dir: str | Path, records: Results | Iterable[Record], published: pd.DataFrame | None = None,
                    intervals: bool = True) -> Path:
    """results/scorecard.{md,csv,json}: measured rows, their n/a reasons, and the published figures apart."""
    results_dir, results = Path(results_dir), Results.of(records)
    df, na, mixed = scorecard_frame(results, intervals)
    pub = published_table() if published is None else published
    fmts = scorecard_formats()
    md = ["# scorecard", "", SCORECARD_NOTE, "", "## Measured (kind=measured)", ""]
    if df.empty:
        md += ["No records.", ""]
    else:
        md += [to_markdown(df.drop(columns=["kind"]), "scorecard", formats=fmts), ""]
        heads = {(t.name, m.key) for t in _scorecard_tasks() for m in t.headline_metrics()}
        heads |= {(t.name, t.curve.value) for t in _scorecard_tasks() if t.curve is not None}
        md += interval_notes(results, keys=heads) if intervals else []
        md += reason_lines(na) + mixed
        md += [""]
    md += _published_markdown(pub)
    path = results_dir / "scorecard.md"
    atomic_write_bytes(path, ("\n".join(md).rstrip() + "\n").encode())
    measured_cols = list(df.columns) if not df.empty else ID_COLUMNS
    both = pd.concat([df if not df.empty else pd.DataFrame(columns=ID_COLUMNS), pub], ignore_index=True)
    both = both[list(dict.fromkeys(["kind"] + measured_cols + list(pub.columns)))]
    atomic_write_bytes(results_dir / "scorecard.csv", both.to_csv(index=False).encode())
    own = {"measured": set(measured_cols), "published": set(pub.columns)}
    payload = {
        "note": SCORECARD_NOTE,
        "rows": json_rows(both, keep=lambda rec: own.get(rec.get("kind"), set(rec))),
        "unavailable": [{"row": r, "column": c, "reason": why} for r, c, why in na],
    }
    atomic_write_bytes(results_dir / "scorecard.json", dumps_json(payload))
    return path
