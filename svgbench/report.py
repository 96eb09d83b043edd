"""Records -> pandas tables -> results/<task>.{md,csv,json}, the scorecard, the sampling table and the plots.

Tables are built, never edited by hand. The frame builders (`scorecard_table`, `sampling_table`,
`fid_curve_table`, `sampling_curve_table`, `pca_points_table`, `frames`) are what the plots and the
results notebook read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .checkpoints import atomic_write_bytes
from .efficiency import cost_lines
from .records import data_label as _data_label
from .records import feature_network_prefix, finite_number as _num, latest_records, load_records, steps_label
from .records import mark_stale
from .tasks import get_task, list_tasks


def _spec(task: str):
    """The registered spec of `task`, or None for records of a task that is not registered in this process."""
    try:
        return get_task(task)
    except KeyError:
        return None


def metric_title(spec, metric, record: dict | None) -> str:
    """A metric's column title; network metrics are titled after the record's feature network."""
    if metric.network and record is not None:
        return f"{feature_network_prefix(record)}-{metric.title}"
    return metric.title


def _fmt(value, fmt: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if ":d}" in fmt and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


CI_PARTS = ("ci_low", "ci_high", "n")  # the interval columns that follow a metric with one: "<title> ci_low", ...


def _put_metric(row: dict, title: str, key: str, record: dict, intervals: bool) -> None:
    """row[title] = the record's value of `key`; with `intervals`, its interval columns after it."""
    row[title] = record["metrics"].get(key)
    ci = (record["metrics"].get("ci") or {}).get(key)
    if intervals and ci and row[title] is not None:
        for part in CI_PARTS:
            row[f"{title} {part}"] = ci.get(part)


def task_table(records: list[dict], task: str, intervals: bool = True) -> pd.DataFrame:
    """One row per (encoder, dataset) from the newest record of each; values as numbers, with `intervals` each
    metric that has one followed by "<title> ci_low", "<title> ci_high", "<title> n". For a task with a curve
    (`sampling`): the pivot of `curve_table`."""
    spec = _spec(task)
    if spec is not None and spec.curve is not None:
        return curve_table(records, task)
    extra = spec.extra_columns_fn() if spec is not None else None
    rows = []
    latest = latest_records(records, task)
    metrics = [m for m in (spec.metrics if spec is not None else ())
               if not m.optional or any(m.key in r["metrics"] for r in latest.values())]
    for r in latest.values():  # sorted by data, then encoder
        rspec = r["spec"]
        row = {"encoder": r["encoder"], "data": _data_label(r["data"]),
               "latent": "x".join(str(s) for s in rspec["latent_shape"]), "weights": rspec["weights"]}
        for m in metrics:
            _put_metric(row, metric_title(spec, m, r), m.key, r, intervals)
        if extra is not None:
            row.update(extra(r))
        if spec is None or not spec.metrics:
            row.update({k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))})
        rows.append(row)
    return _intervals_next_to_values(pd.DataFrame(rows))


def _intervals_next_to_values(df: pd.DataFrame) -> pd.DataFrame:
    """Each column followed by its interval columns ("<title> ci_low", ...), wherever the first row that had
    them put them: the same columns in the same order whatever the order the records came in."""
    parts = {f"{col} {part}" for col in df.columns for part in CI_PARTS}
    order = [x for col in df.columns if col not in parts
             for x in (col, *(f"{col} {part}" for part in CI_PARTS)) if x in df.columns]
    return df[order].reset_index(drop=True)


def task_formats(task: str, df: pd.DataFrame | None = None) -> dict[str, str]:
    """Column title -> format of `task`'s table (network metrics under their bare title)."""
    spec = _spec(task)
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
    spec = _spec(task)
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
            text = _fmt(row[c], fmt)
            if c in ivs and text != "n/a" and _num(row[ivs[c][0]]) is not None and _num(row[ivs[c][1]]) is not None:
                text += f" [{_fmt(row[ivs[c][0]], fmt)}, {_fmt(row[ivs[c][1]], fmt)}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval_how(level, method) -> str:
    """"95% interval, <method>" of a recorded interval (level 0.95 where the record has none)."""
    return f"{round(100 * float(0.95 if level is None else level))}% interval, {method or '?'}"


def interval_notes(records: list[dict], task: str | None = None, keys: set[str] | None = None) -> list[str]:
    """One line per (metric, method, level) of the intervals in the records of `task` (all tasks: None), the
    points of a curve task included. keys: only these (task, metric key); a curve's key is its value's."""
    seen = {}

    def add(how: str, what: str, r: dict) -> None:
        seen.setdefault(how, set()).add(what if task is not None else f"{r['task']} {what}")

    for r in records:
        if task is not None and r["task"] != task:
            continue
        spec = _spec(r["task"])
        for key, ci in (r["metrics"].get("ci") or {}).items():
            if keys is not None and (r["task"], key) not in keys:
                continue
            m = spec.metric(key) if spec is not None else None
            how = _interval_how(ci.get("level"), ci.get("method"))
            add(how + (f" ({m.uncertainty})" if m is not None and m.uncertainty else ""),
                m.title if m is not None else key, r)
        c = spec.curve if spec is not None else None
        if c is None or (keys is not None and (r["task"], c.value) not in keys):
            continue
        what = (f"{c.value_title} at each {c.x_unit} count" if task is not None
                else curve_headline_title(c, feature_network_prefix(r)))
        for point in r["metrics"].get(c.key) or []:
            if _point_ci(point, ""):
                how = _interval_how(point.get("level"), point.get("method_ci"))
                add(how + (f" ({c.uncertainty})" if c.uncertainty else ""), what, r)
    return [f"- [low, high]: {how}, n items as in the csv: {', '.join(sorted(whats))}" for how, whats in
            sorted(seen.items())]


NOTE = ("Measured by svgbench. Rows on `shapes` come from the embedded procedural dataset and svgbench's tiny "
        "models: they are not ImageNet numbers and are not comparable with published figures (see baselines/).")


def _unavailable(records: list[dict], task: str) -> list[str]:
    """The n/a reasons of `task`'s table, one line per reason naming the rows and metrics it applies to."""
    latest = latest_records(records, task)
    names = _row_names(latest)
    spec = _spec(task)
    items = []
    for k, r in latest.items():
        for metric, why in (r["metrics"].get("unavailable") or {}).items():
            m = spec.metric(metric) if spec is not None else None
            items.append((names[k], m.title if m is not None else metric, why))
    return _reason_lines(items)


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def _row_names(keys) -> dict[tuple[str, str], str]:
    """(encoder, data) -> how n/a notes name the row: the encoder alone when every row is on one dataset."""
    keys = list(keys)
    single = len({d for _, d in keys}) <= 1
    return {k: k[0] if single else f"{k[0]} on {k[1]}" for k in keys}


def _reason_lines(items: list[tuple[str, str, str]]) -> list[str]:
    """(row name, what, reason) -> markdown bullets, one per reason, in a stable order."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for row, what, reason in items:
        by_reason.setdefault(reason, {}).setdefault(row, []).append(what)
    lines = []
    for reason in sorted(by_reason):
        parts = [f"{row}: {', '.join(whats)}" for row, whats in sorted(by_reason[reason].items())]
        lines.append(f"- n/a — {reason} ({'; '.join(parts)})")
    return lines


def _json_value(v):
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _json_rows(df: pd.DataFrame, keep=None) -> list[dict]:
    rows = []
    for rec in df.to_dict(orient="records"):
        rows.append({k: _json_value(v) for k, v in rec.items() if keep is None or k in keep(rec)})
    return rows


def _dumps(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# scorecard: one row per (encoder, dataset), the headline measurement of every task
# ---------------------------------------------------------------------------------------------

ID_COLUMNS = ["kind", "encoder", "data", "weights"]
PUBLISHED_COLUMNS = ["group", "model", "latent", "training_epochs", "sampling_steps", "guidance", "metric", "value",
                     "dataset", "protocol", "source"]


def curve_headline_title(curve, network: str) -> str:
    return curve.headline_title.format(network=network, max_x=curve.headline_max_x)


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
    tspec = _spec(task)
    if tspec is not None and "decoder" in tspec.needs and spec is not None and not spec.get("has_decoder", True):
        return f"no pixel decoder: `{task}` needs one"
    return f"no `{task}` record"


def _scorecard(records: list[dict], intervals: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str, str]], list[str]]:
    """-> (measured rows, n/a items (row name, column, reason), notes on mixed weights)."""
    specs = _scorecard_tasks()
    tasks = {t.name: latest_records(records, t.name) for t in specs}
    keys = sorted({k for per in tasks.values() for k in per}, key=lambda k: (k[1], k[0]))
    names = _row_names(keys)
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
        spec = recs[0]["spec"]
        row = {"kind": "measured", "encoder": k[0], "data": k[1], "weights": spec.get("weights")}
        hashes = sorted({r.get("weights_hash") for r in recs if r.get("weights_hash")})
        if len(hashes) > 1:
            mixed.append(f"- {names[k]}: its task records come from {len(hashes)} weight versions "
                         f"({', '.join(hashes)})")

        def put(task, key, title, rec, row=row, spec=spec, name=names[k]):
            value = None if rec is None else _num(rec["metrics"].get(key))
            row[title] = value
            ci = None if rec is None or value is None else (rec["metrics"].get("ci") or {}).get(key)
            if intervals and ci:
                for part in CI_PARTS:
                    row[f"{title} {part}"] = ci.get(part)
            if value is None:
                if rec is None:
                    why = _missing_reason(task, spec)
                else:
                    why = (rec["metrics"].get("unavailable") or {}).get(key) or f"`{task}` reported no {key}"
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
    df = _intervals_next_to_values(pd.DataFrame(rows))
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
        m = rec["metrics"]
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
            row |= _point_ci(point, col)
        row[at] = f"{point[c.series]}, {c.x_title(point[c.x])} (fixed in advance)"


def scorecard_table(records: list[dict]) -> pd.DataFrame:
    """Measured rows (kind="measured"): one per (encoder, dataset), the headline metric of each task, as numbers
    (None where n/a; `scorecard_unavailable` says why)."""
    return _scorecard(records)[0]


def scorecard_unavailable(records: list[dict]) -> list[dict]:
    """Every n/a cell of `scorecard_table`: {"row", "column", "reason"}."""
    return [{"row": r, "column": c, "reason": why} for r, c, why in _scorecard(records)[1]]


def published_table(path: str | Path | None = None) -> pd.DataFrame:
    """baselines/published.csv with kind="published" (empty when the file is missing)."""
    from .baselines import load_published

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


def write_scorecard(results_dir: str | Path, records: list[dict], published: pd.DataFrame | None = None,
                    intervals: bool = True) -> Path:
    """results/scorecard.{md,csv,json}: measured rows, their n/a reasons, and the published figures apart."""
    results_dir = Path(results_dir)
    df, na, mixed = _scorecard(records, intervals)
    pub = published_table() if published is None else published
    fmts = scorecard_formats()
    md = ["# scorecard", "", SCORECARD_NOTE, "", "## Measured (kind=measured)", ""]
    if df.empty:
        md += ["No records.", ""]
    else:
        md += [to_markdown(df.drop(columns=["kind"]), "scorecard", formats=fmts), ""]
        heads = {(t.name, m.key) for t in _scorecard_tasks() for m in t.headline_metrics()}
        heads |= {(t.name, t.curve.value) for t in _scorecard_tasks() if t.curve is not None}
        md += interval_notes(records, keys=heads) if intervals else []
        md += _reason_lines(na) + mixed
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
        "rows": _json_rows(both, keep=lambda rec: own.get(rec.get("kind"), set(rec))),
        "unavailable": [{"row": r, "column": c, "reason": why} for r, c, why in na],
    }
    atomic_write_bytes(results_dir / "scorecard.json", _dumps(payload))
    return path


# ---------------------------------------------------------------------------------------------
# sampling: judge-FID per (encoder, method) x sampler steps; timings go to efficiency
# ---------------------------------------------------------------------------------------------

def sampling_curve_table(records: list[dict], task: str = "sampling") -> pd.DataFrame:
    """Long form of every sampling curve: encoder, data, metric, method, steps, nfe, fid, sample/decode s per image."""
    rows = []
    for (enc, data), r in latest_records(records, task).items():
        metric = f"{feature_network_prefix(r)}-FID"
        for c in r["metrics"].get("curve") or []:
            rows.append({"encoder": enc, "data": data, "metric": metric, "method": c.get("method"),
                         "steps": c.get("steps"), "nfe": c.get("nfe"), "fid": _num(c.get("fid")),
                         "ci_low": _num(c.get("ci_low")), "ci_high": _num(c.get("ci_high")),
                         "sample_s_per_image": _num(c.get("sample_s_per_image")),
                         "decode_s_per_image": _num(c.get("decode_s_per_image")),
                         "gflops_per_image": _num(c.get("gflops_per_image")), "mfu": _num(c.get("mfu"))})
    cols = ["encoder", "data", "metric", "method", "steps", "nfe", "fid", "ci_low", "ci_high", "sample_s_per_image",
            "decode_s_per_image", "gflops_per_image", "mfu"]
    return pd.DataFrame(rows, columns=cols)


def _point_ci(point: dict, title: str) -> dict:
    """A curve point's interval as the columns "<title> ci_low", "<title> ci_high", "<title> n" (none without one)."""
    if _num(point.get("ci_low")) is None or _num(point.get("ci_high")) is None:
        return {}
    return {f"{title} {part}": point.get(part) for part in CI_PARTS}


def _curve(records: list[dict], task: str, intervals: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """The pivot of a curve task: rows (encoder, data, series value), one column per x value, each followed by
    its interval columns where the points carry one; n/a items."""
    spec = get_task(task)
    c = spec.curve
    why_missing = spec.missing_reason_fn()
    latest = latest_records(records, task)
    keys = list(latest)
    names = _row_names(keys)
    xs_all = set()
    for r in latest.values():
        xs_all |= set((r.get("config") or {}).get(c.x) or [])
        xs_all |= {p[c.x] for p in r["metrics"].get(c.key) or [] if _num(p.get(c.x)) is not None}
    xs_all = sorted(xs_all)
    count_metrics = [m for m in spec.table_metrics()]
    rows, missing = [], {}
    for k in keys:
        r = latest[k]
        cfg, m = r.get("config") or {}, r["metrics"]
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
                        row |= _point_ci(point, c.x_title(n))
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
    return _intervals_next_to_values(pd.DataFrame(rows)), na


def curve_table(records: list[dict], task: str = "sampling") -> pd.DataFrame:
    """Rows (encoder, data, series), one column per x value (sampling: FID under the row's `metric` per sampler
    step count; judge-FID on shapes). Timings are not here: they go to efficiency."""
    return _curve(records, task)[0]


def sampling_table(records: list[dict]) -> pd.DataFrame:
    return curve_table(records, "sampling")


def curve_timings(records: list[dict], task: str = "sampling") -> pd.DataFrame:
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


def _statistics_timings(records: list[dict]) -> pd.DataFrame:
    """task, encoder, data, measure, value rows: the seconds each cell spent on its intervals (`stats_s`)."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        for (enc, data), r in latest_records(records, task).items():
            if _num(r["metrics"].get("stats_s")) is not None:
                rows.append({"task": task, "encoder": enc, "data": data, "measure": "statistics (intervals) s",
                             "value": r["metrics"]["stats_s"]})
    return pd.DataFrame(rows, columns=["task", "encoder", "data", "measure", "value"])


def _statistics_share(records: list[dict], stats: pd.DataFrame) -> list[str]:
    """One line: the seconds all cells spent on intervals against their total wall time."""
    walls = [r.get("wall_s") for recs in (latest_records(records, t) for t in dict.fromkeys(r["task"] for r in records))
             for r in recs.values() if _num(r.get("wall_s")) is not None]
    total, spent = float(sum(walls)), float(stats["value"].sum()) if not stats.empty else 0.0
    if total <= 0:
        return []
    return ["", f"Statistics (intervals, the probe's extra head seeds): {spent:.1f} s of {total:.1f} s of cell time "
                f"({100 * spent / total:.1f}%); without them the cells would take {total - spent:.1f} s "
                f"(+{100 * spent / max(total - spent, 1e-9):.1f}% with them)."]


# ---------------------------------------------------------------------------------------------
# long frames for the plots
# ---------------------------------------------------------------------------------------------

def fid_curve_table(records: list[dict]) -> pd.DataFrame:
    """encoder, data, metric, step, fid, ci_low, ci_high: each generation record's FID along diffusion training
    (curve points are [step, fid] or [step, fid, ci_low, ci_high])."""
    rows = []
    for (enc, data), r in latest_records(records, "generation").items():
        metric = f"{feature_network_prefix(r)}-FID"
        for point in r["metrics"].get("fid_curve") or []:
            if len(point) >= 2 and _num(point[1]) is not None:
                lo, hi = (point[2], point[3]) if len(point) >= 4 else (None, None)
                rows.append({"encoder": enc, "data": data, "metric": metric, "step": point[0], "fid": point[1],
                             "ci_low": _num(lo), "ci_high": _num(hi)})
    return pd.DataFrame(rows, columns=["encoder", "data", "metric", "step", "fid", "ci_low", "ci_high"])


def pca_points_table(records: list[dict]) -> pd.DataFrame:
    """encoder, data, x, y, label, class, explained_variance: the knn task's 2-D PCA points of each encoder."""
    rows = []
    for (enc, data), r in latest_records(records, "knn").items():
        pts = r["metrics"].get("pca_points") or {}
        xy, labels = pts.get("xy") or [], pts.get("labels")
        classes = pts.get("classes") or []
        for i, p in enumerate(xy):
            lab = labels[i] if labels is not None and i < len(labels) else None
            name = classes[lab] if lab is not None and 0 <= lab < len(classes) else (None if lab is None else str(lab))
            rows.append({"encoder": enc, "data": data, "x": p[0], "y": p[1], "label": lab, "class": name,
                         "explained_variance": pts.get("explained_variance")})
    return pd.DataFrame(rows, columns=["encoder", "data", "x", "y", "label", "class", "explained_variance"])


def samples_table(records: list[dict]) -> pd.DataFrame:
    """encoder, data, metric, fid, png_base64, classes: each generation record's strip of scored samples."""
    rows = []
    for (enc, data), r in latest_records(records, "generation").items():
        strip = r["metrics"].get("samples") or {}
        if strip.get("png_base64"):
            rows.append({"encoder": enc, "data": data, "metric": f"{feature_network_prefix(r)}-FID",
                         "fid": r["metrics"].get("fid"), "png_base64": strip["png_base64"],
                         "classes": list(strip.get("classes") or [])})
    return pd.DataFrame(rows, columns=["encoder", "data", "metric", "fid", "png_base64", "classes"])


def frames(records: list[dict]) -> dict[str, pd.DataFrame]:
    """Every frame the plots and the notebook use, from the records."""
    return {"scorecard": scorecard_table(records), "published": published_table(),
            "sampling": sampling_table(records), "sampling_curve": sampling_curve_table(records),
            "fid_curve": fid_curve_table(records), "pca_points": pca_points_table(records),
            "samples": samples_table(records)}


# ---------------------------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------------------------

def write_reports(results_dir: str | Path = "results", records: list[dict] | None = None,
                  plots: bool = True, intervals: bool = True) -> dict[str, Path]:
    """Rebuild every task table, the scorecard and (with `plots`) the figures from the records; returns
    name -> markdown path (tasks, "scorecard").

    Task tables and the scorecard hold the measured quantities only, so the same records give the same
    bytes; wall-clock columns (throughputs, fit times, time per sample) go to efficiency.{md,csv}, with
    the device they were measured on. With `intervals`, every metric whose record holds an interval is shown
    as "value [low, high]" (csv/json: "<title> ci_low", "<title> ci_high", "<title> n"), its method and level
    written once under the table; results/findings.md checks the paper's claims from the same records.
    """
    results_dir = Path(results_dir)
    records = load_records(results_dir) if records is None else records
    # a record of another task version than this code's is labelled "(stale)" in every table (records.latest_records)
    mark_stale(records, {t: get_task(t).version for t in list_tasks()}, legacy=False)
    out, timing_frames = {}, []
    for task in sorted({r["task"] for r in records}):
        spec = _spec(task)
        note = [spec.note, ""] if spec is not None and spec.note else []
        if spec is not None and spec.curve is not None:
            df, na = _curve(records, task, intervals)
            t = curve_timings(records, task)
            if not t.empty:
                timing_frames.append(t)
            md = [f"# {task}", "", NOTE, "", *note, to_markdown(df, task), ""]
            md += interval_notes(records, task) if intervals else []
            md += _reason_lines(na)
        else:
            full = task_table(records, task, intervals=intervals)
            timing = [c for c in full.columns if c in timing_titles(task)]
            df = full.drop(columns=timing)
            if timing:
                t = full[["encoder", "data"] + timing].melt(id_vars=["encoder", "data"], var_name="measure")
                t.insert(0, "task", task)
                timing_frames.append(t)
            md = [f"# {task}", "", NOTE, "", *note, to_markdown(df, task), ""]
            md += interval_notes(records, task) if intervals else []
            md += _unavailable(records, task)
        md_path = results_dir / f"{task}.md"
        atomic_write_bytes(md_path, ("\n".join(md).rstrip() + "\n").encode())
        atomic_write_bytes(results_dir / f"{task}.csv", df.to_csv(index=False).encode())
        atomic_write_bytes(results_dir / f"{task}.json", _dumps(_json_rows(df)))
        out[task] = md_path
    stats = _statistics_timings(records)
    if not stats.empty:
        timing_frames.append(stats)
    if timing_frames:
        eff = pd.concat(timing_frames, ignore_index=True)
        devices = sorted({r.get("device_name", r.get("device", "?")) for r in records})
        lines = ["# efficiency", "", f"Wall-clock measures, on: {'; '.join(devices)}. They vary from run to run.", "",
                 "| task | encoder | data | measure | value |", "|---|---|---|---|---|"]
        lines += [f"| {r.task} | {r.encoder} | {r.data} | {r.measure} | {_fmt(r.value, '{:.4g}')} |"
                  for r in eff.itertuples()]
        lines += _statistics_share(records, stats)
        newest = [r for t in dict.fromkeys(r["task"] for r in records) for r in latest_records(records, t).values()]
        lines += cost_lines(newest)  # each cell's cost model (svgbench.efficiency)
        atomic_write_bytes(results_dir / "efficiency.md", ("\n".join(lines) + "\n").encode())
        atomic_write_bytes(results_dir / "efficiency.csv", eff.to_csv(index=False).encode())
    if records:
        out["scorecard"] = write_scorecard(results_dir, records, intervals=intervals)
        if intervals:
            from .findings import write_findings, write_summary

            out["findings"] = write_findings(results_dir, records)
            out["summary"] = write_summary(results_dir, records, scorecard_table(records))
        if plots:
            from .plots import write_plots

            write_plots(results_dir, frames(records))
    return out
