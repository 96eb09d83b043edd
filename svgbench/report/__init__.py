"""Records -> pandas tables -> results/<task>.{md,csv,json}, the scorecard, the sampling table and the plots.

Tables are built, never edited by hand. The parts: `tables` (one table per task, its markdown, interval notes and
n/a reasons), `curves` (the few-step sampling table and the frames of the plots), `scorecard` (headline numbers,
published figures apart), `publish` (every file written from the records: `write_reports`), and `common` (what
they share). The frame builders (`scorecard_table`, `sampling_table`, `fid_curve_table`, `sampling_curve_table`,
`pca_points_table`, `frames`) are what the plots and the results notebook read.
"""

from __future__ import annotations

from .common import metric_title
from .curves import (curve_table, curve_timings, fid_curve_table, pca_points_table, samples_table,
                     sampling_curve_table, sampling_table)
from .publish import frames, write_reports
from .scorecard import published_table, scorecard_formats, scorecard_table, scorecard_unavailable, write_scorecard
from .tables import interval_notes, task_formats, task_table, to_markdown

__all__ = ["curve_table", "curve_timings", "fid_curve_table", "frames", "interval_notes", "metric_title",
           "pca_points_table", "published_table", "samples_table", "sampling_curve_table", "sampling_table",
           "scorecard_formats", "scorecard_table", "scorecard_unavailable", "task_formats", "task_table",
           "to_markdown", "write_reports", "write_scorecard"]
