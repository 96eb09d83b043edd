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
from .runner import load_records

# per task: (metric key, column title, format); n/a cells stay visible as "n/a"
COLUMNS = {
    "reconstruction": [("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("lpips", "LPIPS", "{:.4f}"),
                       ("rfid", "rFID", "{:.2f}"), ("num_images", "images", "{:d}"),
                       ("encode_ips", "encode img/s", "{:.1f}"), ("decode_ips", "decode img/s", "{:.1f}")],
    "seg": [("miou", "mIoU (%)", "{:.2f}"), ("macc", "mAcc (%)", "{:.2f}"), ("aacc", "aAcc (%)", "{:.2f}"),
            ("num_images", "images", "{:d}"), ("train_images", "train images", "{:d}"),
            ("train_s", "head train s", "{:.1f}")],
    "probe": [("probe_top1", "linear top-1 (%)", "{:.2f}"), ("probe_top5", "linear top-5 (%)", "{:.2f}"),
              ("probe_top1_sklearn", "logreg top-1 (%)", "{:.2f}"), ("num_train", "train images", "{:d}"),
              ("num_test", "test images", "{:d}"), ("feature_dim", "dim", "{:d}"),
              ("probe_fit_s", "probe fit (s)", "{:.2f}")],
    "knn": [("knn_top1_k10", "kNN k=10 top-1 (%)", "{:.2f}"), ("knn_top1_k20", "kNN k=20 top-1 (%)", "{:.2f}"),
            ("silhouette", "silhouette", "{:.4f}"), ("variance_ratio", "between/within variance", "{:.4f}"),
            ("num_train", "train images", "{:d}"), ("num_test", "test images", "{:d}")],
    # generation metrics are titled after their feature network: judge-FID, Inception-FID, ...
    "generation": [("fid", "FID", "{:.2f}"), ("kid", "KID", "{:.4f}"), ("precision", "precision", "{:.3f}"),
                   ("recall", "recall", "{:.3f}"), ("train_steps", "diffusion steps", "{:d}"),
                   ("feature_network", "feature network", "{}"), ("num_samples", "samples", "{:d}"),
                   ("sample_s_per_image", "sample s/img", "{:.4f}")],
    "sampling": [("num_samples", "samples", "{:d}")],  # plus one column per sampler step count
}
# columns that are timings: reported, but kept out of the deterministic comparison
TIMING_COLUMNS = {"encode img/s", "decode img/s", "head train s", "probe fit (s)", "sample s/img"}
NETWORK_METRICS = {"fid", "kid", "precision", "recall"}  # titled "<network>-<title>"


def _fmt(value, fmt: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if ":d}" in fmt and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def feature_network_prefix(record: dict) -> str:
    """The name that prefixes a generation metric of `record`: "judge" (svgbench's shapes judge) or "Inception"."""
    label = str(record.get("metrics", {}).get("feature_network") or "").lower()
    if label.startswith("judge"):
        return "judge"
    if label.startswith("inception"):
        return "Inception"
    return "judge" if record["data"]["name"] == "shapes" else "Inception"


def _data_label(data: dict) -> str:
    if data["name"] == "shapes":
        return f"shapes/{data['split']} (embedded, procedural) {data['resolution']}px"
    return f"{data['name']}:{data.get('root')}/{data['split']} {data['resolution']}px"


def task_table(records: list[dict], task: str) -> pd.DataFrame:
    """One row per (encoder, dataset) from the newest record of each; values as numbers. For `sampling`: the
    pivot of `sampling_table`."""
    if task == "sampling":
        return sampling_table(records)
    rows = []
    for r in records:
        if r["task"] != task:
            continue
        spec = r["spec"]
        row = {"encoder": r["encoder"], "data": _data_label(r["data"]),
               "latent": "x".join(str(s) for s in spec["latent_shape"]), "weights": spec["weights"]}
        for key, title, _ in COLUMNS.get(task, []):
            if task == "generation" and key in NETWORK_METRICS:
                title = f"{feature_network_prefix(r)}-{title}"
            row[title] = r["metrics"].get(key)
        if task == "generation":  # steps to reach each FID level; "> N": not within the N-step curve
            curve = r["metrics"].get("fid_curve") or []
            for target, step in (r["metrics"].get("steps_to_fid") or {}).items():
                row[f"steps to {feature_network_prefix(r)}-FID <= {target}"] = (
                    step if step is not None else (f"> {curve[-1][0]}" if curve else None))
        if not COLUMNS.get(task):
            row.update({k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.drop_duplicates(subset=["encoder", "data"], keep="last").sort_values(["data", "encoder"])
    return df.reset_index(drop=True)


def _format_of(col: str, fmts: dict[str, str]) -> str | None:
    if col in fmts:
        return fmts[col]
    head, sep, tail = col.partition("-")
    if sep and head in ("judge", "Inception") and tail in fmts:
        return fmts[tail]
    return None


def to_markdown(df: pd.DataFrame, task: str, formats: dict[str, str] | None = None) -> str:
    if formats is None:
        formats = {title: fmt for _, title, fmt in COLUMNS.get(task, [])}
        if task == "sampling":
            formats |= {c: "{:.2f}" for c in df.columns if str(c).endswith((" step", " steps"))}
        formats |= {c: "{:d}" for c in df.columns if str(c).startswith("steps to ")}
    fmts = formats
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            fmt = _format_of(c, fmts)
            cells.append(_fmt(row[c], fmt if fmt is not None else "{}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


NOTE = ("Measured by svgbench. Rows on `shapes` come from the embedded procedural dataset and svgbench's tiny "
        "models: they are not ImageNet numbers and are not comparable with published figures (see baselines/).")


def _unavailable(records: list[dict], task: str) -> list[str]:
    seen = {}
    for r in records:
        if r["task"] == task:
            for metric, why in (r["metrics"].get("unavailable") or {}).items():
                seen[metric] = why
    return [f"- {m}: n/a — {why}" for m, why in sorted(seen.items())]


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def latest_records(records: list[dict], task: str) -> dict[tuple[str, str], dict]:
    """(encoder, data label) -> the record of `task` that the task table shows (the last one, as in task_table),
    ordered by data label, then encoder."""
    out = {}
    for r in records:
        if r["task"] == task:
            out[(r["encoder"], _data_label(r["data"]))] = r
    return dict(sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][0])))


def _num(value):
    """A finite number, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if isinstance(value, float) and not math.isfinite(value) else value


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

# (task, metric key, column title, format)
SCORECARD = [
    ("reconstruction", "psnr", "PSNR (dB)", "{:.2f}"),
    ("reconstruction", "ssim", "SSIM", "{:.4f}"),
    ("reconstruction", "rfid", "rFID", "{:.2f}"),
    ("probe", "probe_top1", "probe top-1 (%)", "{:.2f}"),
    ("knn", "knn_top1_k20", "kNN k=20 top-1 (%)", "{:.2f}"),
    ("knn", "silhouette", "silhouette", "{:.4f}"),
    ("knn", "variance_ratio", "variance ratio", "{:.4f}"),
    ("seg", "miou", "seg mIoU (%)", "{:.2f}"),
]
GENERATION_HEADLINE = [("fid", "FID", "{:.2f}"), ("kid", "KID", "{:.4f}"), ("precision", "precision", "{:.3f}"),
                       ("recall", "recall", "{:.3f}")]
FEW_STEP_MAX = 4
DECODER_TASKS = {"reconstruction", "generation", "sampling"}
ID_COLUMNS = ["kind", "encoder", "data", "weights"]
PUBLISHED_COLUMNS = ["group", "model", "latent", "training_epochs", "sampling_steps", "guidance", "metric", "value",
                     "dataset", "protocol", "source"]


def few_step_title(prefix: str) -> str:
    return f"few-step {prefix}-FID (<={FEW_STEP_MAX} steps)"


def scorecard_formats() -> dict[str, str]:
    fmts = {title: fmt for _, _, title, fmt in SCORECARD}
    fmts.update({title: fmt for _, title, fmt in GENERATION_HEADLINE})
    for prefix in ("judge", "Inception"):
        fmts[few_step_title(prefix)] = "{:.2f}"
    return fmts


def _missing_reason(task: str, spec: dict | None) -> str:
    if task in DECODER_TASKS and spec is not None and not spec.get("has_decoder", True):
        return f"no pixel decoder: `{task}` needs one"
    return f"no `{task}` record"


def _scorecard(records: list[dict]) -> tuple[pd.DataFrame, list[tuple[str, str, str]], list[str]]:
    """-> (measured rows, n/a items (row name, column, reason), notes on mixed weights)."""
    tasks = {t: latest_records(records, t) for t in
             ("reconstruction", "probe", "knn", "seg", "generation", "sampling")}
    keys = sorted({k for per in tasks.values() for k in per}, key=lambda k: (k[1], k[0]))
    names = _row_names(keys)
    prefixes = {}
    for k in keys:
        r = tasks["generation"].get(k) or tasks["sampling"].get(k) or next(per[k] for per in tasks.values() if k in per)
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
            if value is None:
                if rec is None:
                    why = _missing_reason(task, spec)
                else:
                    why = (rec["metrics"].get("unavailable") or {}).get(key) or f"`{task}` reported no {key}"
                na.append((name, title, why))

        for task, key, title, _ in SCORECARD:
            put(task, key, title, tasks[task].get(k))
        gen = tasks["generation"].get(k)
        for net in nets:
            for key, title, _ in GENERATION_HEADLINE:
                col = f"{net}-{title}"
                if net == prefixes[k]:
                    put("generation", key, col, gen)
                else:
                    row[col] = None
                    na.append((names[k], col, f"this dataset is scored with the {prefixes[k]} network"))
        samp = tasks["sampling"].get(k)
        for net in nets:
            col, at = few_step_title(net), ("few-step sampler" if len(nets) == 1 else f"few-step sampler ({net})")
            row[col], row[at] = None, None
            if net != prefixes[k]:
                na.append((names[k], col, f"this dataset is scored with the {prefixes[k]} network"))
                continue
            if samp is None:
                na.append((names[k], col, _missing_reason("sampling", spec)))
                continue
            cands = [c for c in samp["metrics"].get("curve") or []
                     if _num(c.get("steps")) is not None and c["steps"] <= FEW_STEP_MAX
                     and _num(c.get("fid")) is not None]
            if not cands:
                why = (samp["metrics"].get("unavailable") or {}).get("fid") or f"no sampler run at <={FEW_STEP_MAX} steps"
                na.append((names[k], col, why))
                continue
            best = min(cands, key=lambda c: (c["fid"], c["steps"], c["method"]))
            row[col] = best["fid"]
            row[at] = f"{best['method']}, {steps_title(best['steps'])}"
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        # the sampler column only where some row has a few-step value
        drop = [c for c in df.columns if c.startswith("few-step sampler") and df[c].isna().all()]
        df = df.drop(columns=drop)
    return df, na, mixed


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
                  "(judge-FID, ...), not Inception.")


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


def write_scorecard(results_dir: str | Path, records: list[dict], published: pd.DataFrame | None = None) -> Path:
    """results/scorecard.{md,csv,json}: measured rows, their n/a reasons, and the published figures apart."""
    results_dir = Path(results_dir)
    df, na, mixed = _scorecard(records)
    pub = published_table() if published is None else published
    fmts = scorecard_formats()
    md = ["# scorecard", "", SCORECARD_NOTE, "", "## Measured (kind=measured)", ""]
    if df.empty:
        md += ["No records.", ""]
    else:
        md += [to_markdown(df.drop(columns=["kind"]), "scorecard", formats=fmts), ""]
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

DEFAULT_SAMPLER_STEPS = (1, 2, 4, 8, 16, 25, 50)


def steps_title(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def sampling_curve_table(records: list[dict]) -> pd.DataFrame:
    """Long form of every sampling curve: encoder, data, metric, method, steps, nfe, fid, sample/decode s per image."""
    rows = []
    for (enc, data), r in latest_records(records, "sampling").items():
        metric = f"{feature_network_prefix(r)}-FID"
        for c in r["metrics"].get("curve") or []:
            rows.append({"encoder": enc, "data": data, "metric": metric, "method": c.get("method"),
                         "steps": c.get("steps"), "nfe": c.get("nfe"), "fid": _num(c.get("fid")),
                         "sample_s_per_image": _num(c.get("sample_s_per_image")),
                         "decode_s_per_image": _num(c.get("decode_s_per_image"))})
    cols = ["encoder", "data", "metric", "method", "steps", "nfe", "fid", "sample_s_per_image", "decode_s_per_image"]
    return pd.DataFrame(rows, columns=cols)


def _sampling(records: list[dict]) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    latest = latest_records(records, "sampling")
    keys = list(latest)
    names = _row_names(keys)
    steps_all = set()
    for r in latest.values():
        steps_all |= set((r.get("config") or {}).get("steps") or [])
        steps_all |= {c["steps"] for c in r["metrics"].get("curve") or [] if _num(c.get("steps")) is not None}
    steps_all = sorted(steps_all or DEFAULT_SAMPLER_STEPS)
    rows, missing = [], {}
    for k in keys:
        r = latest[k]
        cfg, m = r.get("config") or {}, r["metrics"]
        curve = m.get("curve") or []
        methods = list(cfg.get("methods") or []) or sorted({c["method"] for c in curve}) or ["euler", "heun"]
        by = {(c.get("method"), c.get("steps")): _num(c.get("fid")) for c in curve}
        metric = f"{feature_network_prefix(r)}-FID"
        run_steps = set(cfg.get("steps") or steps_all)
        heun_max = cfg.get("heun_max_steps")
        for method in sorted(methods):
            row = {"encoder": k[0], "data": k[1], "method": method, "metric": metric}
            for n in steps_all:
                value = by.get((method, n))
                row[steps_title(n)] = value
                if value is not None:
                    continue
                if (m.get("unavailable") or {}).get("fid"):
                    why = m["unavailable"]["fid"]
                elif method == "heun" and heun_max is not None and n > heun_max:
                    why = f"Heun (2 model evaluations a step) runs up to {heun_max} steps"
                elif n not in run_steps:
                    why = "sampler steps not in this run"
                else:
                    why = "not reported"
                missing.setdefault((names[k], method, why), []).append(n)
            row["samples"] = m.get("num_samples")
            rows.append(row)
    na = []
    for (name, method, why), steps in missing.items():
        what = (f"{method} (all steps)" if steps == steps_all else
                f"{method} at {', '.join(str(n) for n in steps)} steps")
        na.append((name, what, why))
    return pd.DataFrame(rows), na


def sampling_table(records: list[dict]) -> pd.DataFrame:
    """Rows (encoder, data, method), one column per sampler step count: FID under the row's `metric` (judge-FID
    on shapes). Timings are not here: they go to efficiency."""
    return _sampling(records)[0]


def sampling_timings(records: list[dict]) -> pd.DataFrame:
    """task, encoder, data, measure, value rows: seconds per image of each (method, steps) sampling run."""
    curve = sampling_curve_table(records)
    rows = []
    for c in curve.itertuples():
        for col, what in (("sample_s_per_image", "sample s/img"), ("decode_s_per_image", "decode s/img")):
            value = getattr(c, col)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                rows.append({"task": "sampling", "encoder": c.encoder, "data": c.data,
                             "measure": f"{c.method} {steps_title(c.steps)}: {what}", "value": value})
    return pd.DataFrame(rows, columns=["task", "encoder", "data", "measure", "value"])


# ---------------------------------------------------------------------------------------------
# long frames for the plots
# ---------------------------------------------------------------------------------------------

def fid_curve_table(records: list[dict]) -> pd.DataFrame:
    """encoder, data, metric, step, fid: each generation record's FID along diffusion training."""
    rows = []
    for (enc, data), r in latest_records(records, "generation").items():
        metric = f"{feature_network_prefix(r)}-FID"
        for point in r["metrics"].get("fid_curve") or []:
            if len(point) >= 2 and _num(point[1]) is not None:
                rows.append({"encoder": enc, "data": data, "metric": metric, "step": point[0], "fid": point[1]})
    return pd.DataFrame(rows, columns=["encoder", "data", "metric", "step", "fid"])


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

SAMPLING_NOTE = ("Rows: (encoder, sampler); columns: sampler steps; cells: FID of the encoder's diffusion model "
                 "under the feature network named in `metric` (judge-FID: svgbench's shapes judge, not Inception). "
                 "Time per image is in efficiency.md.")


def write_reports(results_dir: str | Path = "results", records: list[dict] | None = None,
                  plots: bool = True) -> dict[str, Path]:
    """Rebuild every task table, the scorecard and (with `plots`) the figures from the records; returns
    name -> markdown path (tasks, "scorecard").

    Task tables and the scorecard hold the measured quantities only, so the same records give the same
    bytes; wall-clock columns (throughputs, fit times, time per sample) go to efficiency.{md,csv}, with
    the device they were measured on.
    """
    results_dir = Path(results_dir)
    records = load_records(results_dir) if records is None else records
    out, timing_frames = {}, []
    for task in sorted({r["task"] for r in records}):
        if task == "sampling":
            df, na = _sampling(records)
            t = sampling_timings(records)
            if not t.empty:
                timing_frames.append(t)
            md = [f"# {task}", "", NOTE, "", SAMPLING_NOTE, "", to_markdown(df, task), "", *_reason_lines(na)]
        else:
            full = task_table(records, task)
            timing = [c for c in full.columns if c in TIMING_COLUMNS]
            df = full.drop(columns=timing)
            if timing:
                t = full[["encoder", "data"] + timing].melt(id_vars=["encoder", "data"], var_name="measure")
                t.insert(0, "task", task)
                timing_frames.append(t)
            md = [f"# {task}", "", NOTE, "", to_markdown(df, task), ""]
            md += _unavailable(records, task)
        md_path = results_dir / f"{task}.md"
        atomic_write_bytes(md_path, ("\n".join(md).rstrip() + "\n").encode())
        atomic_write_bytes(results_dir / f"{task}.csv", df.to_csv(index=False).encode())
        atomic_write_bytes(results_dir / f"{task}.json", _dumps(_json_rows(df)))
        out[task] = md_path
    if timing_frames:
        eff = pd.concat(timing_frames, ignore_index=True)
        devices = sorted({r.get("device_name", r.get("device", "?")) for r in records})
        lines = ["# efficiency", "", f"Wall-clock measures, on: {'; '.join(devices)}. They vary from run to run.", "",
                 "| task | encoder | data | measure | value |", "|---|---|---|---|---|"]
        lines += [f"| {r.task} | {r.encoder} | {r.data} | {r.measure} | {_fmt(r.value, '{:.4g}')} |"
                  for r in eff.itertuples()]
        atomic_write_bytes(results_dir / "efficiency.md", ("\n".join(lines) + "\n").encode())
        atomic_write_bytes(results_dir / "efficiency.csv", eff.to_csv(index=False).encode())
    if records:
        out["scorecard"] = write_scorecard(results_dir, records)
        if plots:
            from .plots import write_plots

            write_plots(results_dir, frames(records))
    return out
