"""Weighted kNN, class separation (silhouette, between/within variance) and a PCA map for each encoder."""

from pathlib import Path

import pytest

from svgbench.runner import RunConfig, run_matrix
from svgbench.tasks.understanding import KnnConfig

from .conftest import wants_task

QUICK = {"train_size": 512, "test_size": 256}


def test_knn(encoder_name, run_options, full, feature_cache, tmp_path, request):
    if not wants_task(request.config, "knn"):
        pytest.skip("task not selected (--tasks)")
    results = run_options["results_dir"] or str(tmp_path)
    # full size: the preset's cell, as `svgbench run` computes it (its PCA goes to the record and the plots)
    overrides = dict(run_options["tasks"].get("knn", {})) if full else QUICK | {"figure_dir": str(Path(results) / "figures")}
    cfg = RunConfig(encoders=(encoder_name,), tasks=("knn",), data=run_options["data"],
                    device=run_options["device"], results_dir=results, task_overrides={"knn": overrides})
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    m = summary.records[0].metrics
    assert m["num_train"] == overrides.get("train_size", KnnConfig().train_size)
    for key in ("knn_top1_k10", "knn_top1_k20", "silhouette", "variance_ratio"):
        assert (m[key] is None) == (key in m["unavailable"]), (key, m)
    if m["knn_top1_k10"] is not None:
        assert 0.0 <= m["knn_top1_k10"] <= 100.0 and 0.0 <= m["knn_top1_k20"] <= 100.0
    if m["silhouette"] is not None:
        assert -1.0 <= m["silhouette"] <= 1.0 and m["variance_ratio"] >= 0.0
        assert len(m["pca_points"]["xy"]) == len(m["pca_points"]["labels"]) > 0
        assert full or Path(m["pca_figure"]).is_file()
