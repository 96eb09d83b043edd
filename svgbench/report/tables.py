"""One table per task: the newest record of each (encoder, dataset), its values with their intervals, the
markdown form, the interval notes (method and measured level, once under a table) and the n/a reasons."""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from ..records import Record, Results, data_label as _data_label, feature_network_prefix, finite_number as _num
from .common import (ID_COLUMNS, curve_headline_title, fmt_value, intervals_next_to_values, metric_title, point_ci,
                     put_metric, reason_lines, row_names, spec_of)
from .curves import curve_table


def task_table(records: Results | Iterable[Record], task: str, intervals: bool = True) -> pd.DataFrame:
    """One row per (encoder, dataset) from the newest record of each; values as numbers, with `intervals` each
    metric that has one followed by "<title> ci_low", "<title> ci_high", "<title> n". For a task with a curve
    (`sampling`): the pivot of `curve_table`."""
    results = Results.of(records)
    spec = spec_of(task)
    if spec is not None and spec.curve is not None:
        return curve_table(results, task)
    extra = spec.extra_columns_fn() if spec is not None else None
    rows = []
    latest = results.latest(task)
    metrics = [m for m in (spec.metrics if spec is not None else ())
               if not m.optional or any(m.key in r.metrics for r in latest.values())]
    for (_, data), r in latest.items():  # sorted by data, then encoder
        rspec = r.spec
        row = {"encoder": r.encoder, "data": data,
               "latent": "x".join(str(s) for s in rspec["latent_shape"]), "weights": rspec["weights"]}
        for m in metrics:
            put_metric(row, metric_title(spec, m, r), m.key, r, intervals)
        if extra is not None:
            row.update(extra(r))
        if spec is None or not spec.metrics:
            row.update({k: v for k, v in r.metrics.items() if isinstance(v, (int, float))})
        rows.append(row)
    return intervals_next_to_values(pd.DataFrame(rows))


def task_formats(task: str, df: pd.DataFrame | None = None) -> dict[str, str]:
    """Column title -> format of `task`'s table (network metrics under their bare title)."""
    spec = spec_of(task)
    if spec is None:
        return {}
    fmts = {m.title: m.fmt for m in spec.metrics}
    if spec.curve is not None and df is not None:
        fmts |= {c: spec.curve.fmt for c in df.columns if _is_x_column(spec.curve, c)}
    if spec.extra_columns is not None and df is not None:
        fmts |= {c: spec.extra_columns_fmt for c in df.columns
                 if _format_of(c, fmts) is None and c not in ID_COLUMNS + ["latent"]}
    return fmts


def timing_titles(task: str) -> set[str]:
    spec = spec_of(task)
    return {m.title for m in spec.metrics if m.timing} if spec is not None else set()


def _is_x_column(curve, col) -> bool:
    return str(col).endswith((f" {curve.x_unit}", f" {curve.x_unit}s"))


def _format_of(col: str, fmts: dict[str, str]) -> str | None:
    if col in fmts:
        return fmts[col]
    head, sep, tail = col.partition("-")
    if sep and head in ("judge", "Inception") and tail in fmts:
        return fmts[tail]
    return None


def _interval_columns(cols) -> dict[str, tuple[str, str]]:
    """metric column -> its (ci_low, ci_high) columns, for the metrics of a frame that carry an interval."""
    present = set(cols)
    return {c: (f"{c} ci_low", f"{c} ci_high") for c in cols
            if f"{c} ci_low" in present and f"{c} ci_high" in present}


def to_markdown(df: pd.DataFrame, task: str, formats: dict[str, str] | None = None) -> str:
    """The frame as a markdown table; a metric with an interval is shown as "value [low, high]" (its interval
    columns are folded into it)."""
    if formats is None:
        formats = task_formats(task, df)
    fmts = formats
    ivs = _interval_columns(df.columns)
    folded = {c for c in df.columns for base in ivs if c in (f"{base} ci_low", f"{base} ci_high", f"{base} n")}
    cols = [c for c in df.columns if c not in folded]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            fmt = _format_of(c, fmts)
            fmt = fmt if fmt is not None else "{}"
            text = fmt_value(row[c], fmt)
            if c in ivs and text != "n/a" and _num(row[ivs[c][0]]) is not None and _num(row[ivs[c][1]]) is not None:
                text += f" [{fmt_value(row[ivs[c][0]], fmt)}, {fmt_value(row[ivs[c][1]], fmt)}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval_how(level, method) -> str:
    """"95% interval, <method>" of a recorded interval (level 0.95 where the record has none)."""
    return f"{round(100 * float(0.95 if level is None else level))}% interval, {method or '?'}"


def interval_notes(records: Results | Iterable[Record], task: str | None = None,
                   keys: set[str] | None = None) -> list[str]:
    """One line per (metric, method, level) of the intervals in the records of `task` (all tasks: None), the
    points of a curve task included. keys: only these (task, metric key); a curve's key is its value's."""
    seen = {}

    def add(how: str, what: str, r: Record) -> None:
        seen.setdefault(how, set()).add(what if task is not None else f"{r.task} {what}")

    for r in records:  # every record, not only the newest: an interval method any of them used is named
        if task is not None and r.task != task:
            continue
        spec = spec_of(r.task)
        for key, ci in (r.metrics.get("ci") or {}).items():
            if keys is not None and (r.task, key) not in keys:
                continue
            m = spec.metric(key) if spec is not None else None
            how = _interval_how(ci.get("level"), ci.get("method"))
            add(how + (f" ({m.uncertainty})" if m is not None and m.uncertainty else ""),
                m.title if m is not None else key, r)
        c = spec.curve if spec is not None else None
        if c is None or (keys is not None and (r.task, c.value) not in keys):
            continue
        what = (f"{c.value_title} at each {c.x_unit} count" if task is not None
                else curve_headline_title(c, feature_network_prefix(r)))
        for point in r.metrics.get(c.key) or []:
            if point_ci(point, ""):
                how = _interval_how(point.get("level"), point.get("method_ci"))
                add(how + (f" ({c.uncertainty})" if c.uncertainty else ""), what, r)
    return [f"- [low, high]: {how}, n items as in the csv: {', '.join(sorted(whats))}" for how, whats in
            sorted(seen.items())]


def unavailable_lines(records: Results | Iterable[Record], task: str) -> list[str]:
    """The n/a reasons of `task`'s table, one line per reason naming the rows and metrics it applies to."""
    latest = Results.of(records).latest(task)
    names = row_names(latest)
    spec = spec_of(task)
    items = []
    for k, r in latest.items():
        for metric, why in (r.metrics.get("unavailable") or {}).items():
            m = spec.metric(metric) if spec is not None else None
            items.append((names[k], m.title if m is not None else metric, why))
    return reason_lines(items)
