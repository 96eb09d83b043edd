"""Curve frames: the few-step sampling table (FID per sampler and steps, with its points' intervals), its
timings, the FID-vs-training-steps curve, the kNN PCA points and the sample strips the plots read."""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from ..records import Record, Results, feature_network_prefix, finite_number as _num, steps_label
from ..tasks import get_task
from .common import intervals_next_to_values, point_ci, row_names


def sampling_curve_table(records: Results | Iterable[Record], task: str = "sampling") -> pd.DataFrame:
    """Long form of every sampling curve: encoder, data, metric, method, steps, nfe, fid, sample/decode s per image."""
    rows = []
    for (enc, data), r in Results.of(records).latest(task).items():
        metric = f"{feature_network_prefix(r)}-FID"
        for c in r.metrics.get("curve") or []:
            rows.append({"encoder": enc, "data": data, "metric": metric, "method": c.get("method"),
                         "steps": c.get("steps"), "nfe": c.get("nfe"), "fid": _num(c.get("fid")),
                         "ci_low": _num(c.get("ci_low")), "ci_high": _num(c.get("ci_high")),
                         "sample_s_per_image": _num(c.get("sample_s_per_image")),
                         "decode_s_per_image": _num(c.get("decode_s_per_image")),
                         "gflops_per_image": _num(c.get("gflops_per_image")), "mfu": _num(c.get("mfu"))})
    cols = ["encoder", "data", "metric", "method", "steps", "nfe", "fid", "ci_low", "ci_high", "sample_s_per_image",
            "decode_s_per_image", "gflops_per_image", "mfu"]
    return pd.DataFrame(rows, columns=cols)


def curve_frame(records: Results | Iterable[Record], task: str,
                intervals: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """The pivot of a curve task: rows (encoder, data, series value), one column per x value, each followed by
    its interval columns where the points carry one; n/a items."""
    spec = get_task(task)
    c = spec.curve
    why_missing = spec.missing_reason_fn()
    latest = Results.of(records).latest(task)
    keys = list(latest)
    names = row_names(keys)
    xs_all = set()
    for r in latest.values():
        xs_all |= set((r.config or {}).get(c.x) or [])
        xs_all |= {p[c.x] for p in r.metrics.get(c.key) or [] if _num(p.get(c.x)) is not None}
    xs_all = sorted(xs_all)
    count_metrics = [m for m in spec.table_metrics()]
    rows, missing = [], {}
    for k in keys:
        r = latest[k]
        cfg, m = r.config or {}, r.metrics
        points = m.get(c.key) or []
        series = list(cfg.get(f"{c.series}s") or []) or sorted({p[c.series] for p in points})
        by = {(p.get(c.series), p.get(c.x)): p for p in points}
        metric = f"{feature_network_prefix(r)}-{c.value_title}"
        run_xs = set(cfg.get(c.x) or xs_all)
        for s_value in sorted(series):
            row = {"encoder": k[0], "data": k[1], c.series: s_value, "metric": metric}
            for n in xs_all:
                point = by.get((s_value, n)) or {}
                value = _num(point.get(c.value))
                row[c.x_title(n)] = value
                if value is not None:
                    if intervals:
                        row |= point_ci(point, c.x_title(n))
                    continue
                why = (m.get("unavailable") or {}).get(c.value)
                why = why or (why_missing(r, s_value, n) if why_missing is not None else None)
                if not why:
                    why = f"{c.x_unit}s not in this run" if n not in run_xs else "not reported"
                    why = "sampler steps not in this run" if n not in run_xs and c.x_unit == "step" else why
                missing.setdefault((names[k], s_value, why), []).append(n)
            for mspec in count_metrics:
                row[mspec.title] = m.get(mspec.key)
            rows.append(row)
    na = []
    for (name, s_value, why), xs in missing.items():
        what = (f"{s_value} (all {c.x_unit}s)" if xs == xs_all else
                f"{s_value} at {', '.join(str(n) for n in xs)} {c.x_unit}s")
        na.append((name, what, why))
    return intervals_next_to_values(pd.DataFrame(rows)), na


def curve_table(records: Results | Iterable[Record], task: str = "sampling") -> pd.DataFrame:
    """Rows (encoder, data, series), one column per x value (sampling: FID under the row's `metric` per sampler
    step count; judge-FID on shapes). Timings are not here: they go to efficiency."""
    return curve_frame(records, task)[0]


def sampling_table(records: Results | Iterable[Record]) -> pd.DataFrame:
    return curve_table(records, "sampling")


def curve_timings(records: Results | Iterable[Record], task: str = "sampling") -> pd.DataFrame:
    """task, encoder, data, measure, value rows: seconds per image of each (method, steps) sampling run."""
    curve = sampling_curve_table(records, task)
    rows = []
    for c in curve.itertuples():
        for col, what in (("sample_s_per_image", "sample s/img"), ("decode_s_per_image", "decode s/img"),
                          ("gflops_per_image", "sampling GFLOP/img"), ("mfu", "sampling MFU")):
            value = getattr(c, col)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                rows.append({"task": task, "encoder": c.encoder, "data": c.data,
                             "measure": f"{c.method} {steps_label(c.steps)}: {what}", "value": value})
    return pd.DataFrame(rows, columns=["task", "encoder", "data", "measure", "value"])


def statistics_timings(records: Results | Iterable[Record]) -> pd.DataFrame:
    """task, encoder, data, measure, value rows: the seconds each cell spent on its intervals (`stats_s`)."""
    rows = []
    for task, (enc, data), r in Results.of(records).rows():
        if _num(r.metrics.get("stats_s")) is not None:
            rows.append({"task": task, "encoder": enc, "data": data, "measure": "statistics (intervals) s",
                         "value": r.metrics["stats_s"]})
    return pd.DataFrame(rows, columns=["task", "encoder", "data", "measure", "value"])


def statistics_share(records: Results | Iterable[Record], stats: pd.DataFrame) -> list[str]:
    """One line: the seconds all cells spent on intervals against their total wall time."""
    walls = [r.wall_s for r in Results.of(records).newest() if _num(r.wall_s) is not None]
    total, spent = float(sum(walls)), float(stats["value"].sum()) if not stats.empty else 0.0
    if total <= 0:
        return []
    return ["", f"Statistics (intervals, the probe's extra head seeds): {spent:.1f} s of {total:.1f} s of cell time "
                f"({100 * spent / total:.1f}%); without them the cells would take {total - spent:.1f} s "
                f"(+{100 * spent / max(total - spent, 1e-9):.1f}% with them)."]


def fid_curve_table(records: Results | Iterable[Record]) -> pd.DataFrame:
    """encoder, data, metric, step, fid, ci_low, ci_high: each generation record's FID along diffusion training
    (curve points are [step, fid] or [step, fid, ci_low, ci_high])."""
    rows = []
    for (enc, data), r in Results.of(records).latest("generation").items():
        metric = f"{feature_network_prefix(r)}-FID"
        for point in r.metrics.get("fid_curve") or []:
            if len(point) >= 2 and _num(point[1]) is not None:
                lo, hi = (point[2], point[3]) if len(point) >= 4 else (None, None)
                rows.append({"encoder": enc, "data": data, "metric": metric, "step": point[0], "fid": point[1],
                             "ci_low": _num(lo), "ci_high": _num(hi)})
    return pd.DataFrame(rows, columns=["encoder", "data", "metric", "step", "fid", "ci_low", "ci_high"])


def pca_points_table(records: Results | Iterable[Record]) -> pd.DataFrame:
    """encoder, data, x, y, label, class, explained_variance: the knn task's 2-D PCA points of each encoder."""
    rows = []
    for (enc, data), r in Results.of(records).latest("knn").items():
        pts = r.metrics.get("pca_points") or {}
        xy, labels = pts.get("xy") or [], pts.get("labels")
        classes = pts.get("classes") or []
        for i, p in enumerate(xy):
            lab = labels[i] if labels is not None and i < len(labels) else None
            name = classes[lab] if lab is not None and 0 <= lab < len(classes) else (None if lab is None else str(lab))
            rows.append({"encoder": enc, "data": data, "x": p[0], "y": p[1], "label": lab, "class": name,
                         "explained_variance": pts.get("explained_variance")})
    return pd.DataFrame(rows, columns=["encoder", "data", "x", "y", "label", "class", "explained_variance"])


def samples_table(records: Results | Iterable[Record]) -> pd.DataFrame:
    """encoder, data, metric, fid, png_base64, classes: each generation record's strip of scored samples."""
    rows = []
    for (enc, data), r in Results.of(records).latest("generation").items():
        strip = r.metrics.get("samples") or {}
        if strip.get("png_base64"):
            rows.append({"encoder": enc, "data": data, "metric": f"{feature_network_prefix(r)}-FID",
                         "fid": r.metrics.get("fid"), "png_base64": strip["png_base64"],
                         "classes": list(strip.get("classes") or [])})
    return pd.DataFrame(rows, columns=["encoder", "data", "metric", "fid", "png_base64", "classes"])
