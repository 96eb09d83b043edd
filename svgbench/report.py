"""Records -> pandas tables -> results/<task>.{md,csv,json}. Tables are built, never edited by hand."""

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
    "generation": [("fid", "FID", "{:.2f}"), ("kid", "KID", "{:.4f}"), ("precision", "precision", "{:.3f}"),
                   ("recall", "recall", "{:.3f}"), ("train_steps", "diffusion steps", "{:d}"),
                   ("feature_network", "feature network", "{}"), ("num_samples", "samples", "{:d}"),
                   ("sample_s_per_image", "sample s/img", "{:.4f}")],
    "sampling": [("feature_network", "feature network", "{}"), ("num_samples", "samples", "{:d}")],
}
# columns that are timings: reported, but kept out of the deterministic comparison
TIMING_COLUMNS = {"encode img/s", "decode img/s", "head train s", "probe fit (s)", "sample s/img"}


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _data_label(data: dict) -> str:
    if data["name"] == "shapes":
        return f"shapes/{data['split']} (embedded, procedural) {data['resolution']}px"
    return f"{data['name']}:{data.get('root')}/{data['split']} {data['resolution']}px"


def task_table(records: list[dict], task: str) -> pd.DataFrame:
    """One row per (encoder, dataset) from the newest record of each; values as numbers."""
    rows = []
    for r in records:
        if r["task"] != task:
            continue
        spec = r["spec"]
        row = {"encoder": r["encoder"], "data": _data_label(r["data"]),
               "latent": "x".join(str(s) for s in spec["latent_shape"]), "weights": spec["weights"]}
        for key, title, _ in COLUMNS.get(task, []):
            row[title] = r["metrics"].get(key)
        if not COLUMNS.get(task):
            row.update({k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.drop_duplicates(subset=["encoder", "data"], keep="last").sort_values(["data", "encoder"])
    return df.reset_index(drop=True)


def to_markdown(df: pd.DataFrame, task: str) -> str:
    fmts = {title: fmt for _, title, fmt in COLUMNS.get(task, [])}
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = [_fmt(row[c], fmts.get(c, "{}")) if c in fmts else str(row[c]) for c in cols]
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


def write_reports(results_dir: str | Path = "results", records: list[dict] | None = None) -> dict[str, Path]:
    """Rebuild every task table from the records; returns task -> markdown path.

    Task tables hold the measured quantities only, so the same command gives the same tables; wall-clock
    columns (throughputs, fit times) go to efficiency.{md,csv}, with the device they were measured on.
    """
    results_dir = Path(results_dir)
    records = load_records(results_dir) if records is None else records
    out, timing_frames = {}, []
    for task in sorted({r["task"] for r in records}):
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
        atomic_write_bytes(results_dir / f"{task}.json",
                           (json.dumps(df.to_dict(orient="records"), indent=2, default=str) + "\n").encode())
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
    return out
