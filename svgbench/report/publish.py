"""Everything written from the records: each task's table (md, csv, json), efficiency.md with each cell's cost
model, the scorecard, the findings and summary, and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from ..checkpoints import atomic_write_bytes
from ..efficiency import cost_lines
from ..records import Record, Results
from ..tasks import get_task, list_tasks
from .common import NOTE, dumps_json, fmt_value, json_rows, reason_lines, spec_of
from .curves import (curve_frame, curve_timings, fid_curve_table, pca_points_table, samples_table,
                     sampling_curve_table, sampling_table, statistics_share, statistics_timings)
from .scorecard import published_table, scorecard_table, write_scorecard
from .tables import interval_notes, task_table, timing_titles, to_markdown, unavailable_lines


def frames(records: Results | Iterable[Record]) -> dict[str, pd.DataFrame]:
    """Every frame the plots and the notebook use, from the records (e.g. `load_records(...)`, or a `Results`)."""
    results = Results.of(records)
    return {"scorecard": scorecard_table(results), "published": published_table(),
            "sampling": sampling_table(results), "sampling_curve": sampling_curve_table(results),
            "fid_curve": fid_curve_table(results), "pca_points": pca_points_table(results),
            "samples": samples_table(results)}


def write_reports(results_dir: str | Path = "results", records: Results | Iterable[Record] | None = None,
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
    # one Results for every part below: each cell's newest record is found once. A record of another task version
    # than this code's is labelled "(stale)" in every table (records.Results.latest)
    versions = {t: get_task(t).version for t in list_tasks()}
    results = (Results.load(results_dir, versions, legacy=False) if records is None
               else Results(records, versions, legacy=False))
    out, timing_frames = {}, []
    for task in results.tasks():
        spec = spec_of(task)
        note = [spec.note, ""] if spec is not None and spec.note else []
        if spec is not None and spec.curve is not None:
            df, na = curve_frame(results, task, intervals)
            t = curve_timings(results, task)
            if not t.empty:
                timing_frames.append(t)
            md = [f"# {task}", "", NOTE, "", *note, to_markdown(df, task), ""]
            md += interval_notes(results, task) if intervals else []
            md += reason_lines(na)
        else:
            full = task_table(results, task, intervals=intervals)
            timing = [c for c in full.columns if c in timing_titles(task)]
            df = full.drop(columns=timing)
            if timing:
                t = full[["encoder", "data"] + timing].melt(id_vars=["encoder", "data"], var_name="measure")
                t.insert(0, "task", task)
                timing_frames.append(t)
            md = [f"# {task}", "", NOTE, "", *note, to_markdown(df, task), ""]
            md += interval_notes(results, task) if intervals else []
            md += unavailable_lines(results, task)
        md_path = results_dir / f"{task}.md"
        atomic_write_bytes(md_path, ("\n".join(md).rstrip() + "\n").encode())
        atomic_write_bytes(results_dir / f"{task}.csv", df.to_csv(index=False).encode())
        atomic_write_bytes(results_dir / f"{task}.json", dumps_json(json_rows(df)))
        out[task] = md_path
    stats = statistics_timings(results)
    if not stats.empty:
        timing_frames.append(stats)
    if timing_frames:
        eff = pd.concat(timing_frames, ignore_index=True)
        devices = sorted({r.device_name for r in results})
        lines = ["# efficiency", "", f"Wall-clock measures, on: {'; '.join(devices)}. They vary from run to run.", "",
                 "| task | encoder | data | measure | value |", "|---|---|---|---|---|"]
        lines += [f"| {r.task} | {r.encoder} | {r.data} | {r.measure} | {fmt_value(r.value, '{:.4g}')} |"
                  for r in eff.itertuples()]
        lines += statistics_share(results, stats)
        lines += cost_lines(results)  # each cell's cost model (svgbench.efficiency), of each row's newest record
        atomic_write_bytes(results_dir / "efficiency.md", ("\n".join(lines) + "\n").encode())
        atomic_write_bytes(results_dir / "efficiency.csv", eff.to_csv(index=False).encode())
    if results:
        out["scorecard"] = write_scorecard(results_dir, results, intervals=intervals)
        if intervals:
            from ..findings import findings_table, write_findings, write_summary

            table = findings_table(results)  # every finding's bootstrap, once for both files
            out["findings"] = write_findings(results_dir, table)
            out["summary"] = write_summary(results_dir, table, scorecard_table(results))
        if plots:
            from ..plots import write_plots

            write_plots(results_dir, frames(results))
    return out
