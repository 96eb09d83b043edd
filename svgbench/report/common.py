"""What every report part shares: a task's spec and metric titles, value formats, interval columns, row names,
reason lines and the JSON form of a frame."""

from __future__ import annotations

import json
import math

import pandas as pd

from ..records import Record, feature_network_prefix, finite_number as _num
from ..tasks import get_task


def spec_of(task: str):
    """The registered spec of `task`, or None for records of a task that is not registered in this process."""
    try:
        return get_task(task)
    except KeyError:
        return None


def metric_title(spec, metric, record: Record | None) -> str:
    """A metric's column title; network metrics are titled after the record's feature network."""
    if metric.network and record is not None:
        return f"{feature_network_prefix(record)}-{metric.title}"
    return metric.title


def fmt_value(value, fmt: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if ":d}" in fmt and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


CI_PARTS = ("ci_low", "ci_high", "n")  # the interval columns that follow a metric with one: "<title> ci_low", ...


def put_metric(row: dict, title: str, key: str, record: Record, intervals: bool) -> None:
    """row[title] = the record's value of `key`; with `intervals`, its interval columns after it."""
    row[title] = record.metrics.get(key)
    ci = (record.metrics.get("ci") or {}).get(key)
    if intervals and ci and row[title] is not None:
        for part in CI_PARTS:
            row[f"{title} {part}"] = ci.get(part)


def intervals_next_to_values(df: pd.DataFrame) -> pd.DataFrame:
    """Each column followed by its interval columns ("<title> ci_low", ...), wherever the first row that had
    them put them: the same columns in the same order whatever the order the records came in."""
    parts = {f"{col} {part}" for col in df.columns for part in CI_PARTS}
    order = [x for col in df.columns if col not in parts
             for x in (col, *(f"{col} {part}" for part in CI_PARTS)) if x in df.columns]
    return df[order].reset_index(drop=True)


NOTE = ("Measured by svgbench. Rows on `shapes` come from the embedded procedural dataset and svgbench's tiny "
        "models: they are not ImageNet numbers and are not comparable with published figures (see baselines/).")


def row_names(keys) -> dict[tuple[str, str], str]:
    """(encoder, data) -> how n/a notes name the row: the encoder alone when every row is on one dataset."""
    keys = list(keys)
    single = len({d for _, d in keys}) <= 1
    return {k: k[0] if single else f"{k[0]} on {k[1]}" for k in keys}


def reason_lines(items: list[tuple[str, str, str]]) -> list[str]:
    """(row name, what, reason) -> markdown bullets, one per reason, in a stable order."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for row, what, reason in items:
        by_reason.setdefault(reason, {}).setdefault(row, []).append(what)
    lines = []
    for reason in sorted(by_reason):
        parts = [f"{row}: {', '.join(whats)}" for row, whats in sorted(by_reason[reason].items())]
        lines.append(f"- n/a — {reason} ({'; '.join(parts)})")
    return lines


def json_value(v):
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def json_rows(df: pd.DataFrame, keep=None) -> list[dict]:
    rows = []
    for rec in df.to_dict(orient="records"):
        rows.append({k: json_value(v) for k, v in rec.items() if keep is None or k in keep(rec)})
    return rows


def dumps_json(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n").encode()


ID_COLUMNS = ["kind", "encoder", "data", "weights"]


def curve_headline_title(curve, network: str) -> str:
    return curve.headline_title.format(network=network, max_x=curve.headline_max_x)


def point_ci(point: dict, title: str) -> dict:
    """A curve point's interval as the columns "<title> ci_low", "<title> ci_high", "<title> n" (none without one)."""
    if _num(point.get("ci_low")) is None or _num(point.get("ci_high")) is None:
        return {}
    return {f"{title} {part}": point.get(part) for part in CI_PARTS}
