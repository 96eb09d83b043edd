"""Semantic segmentation (DINOv2 linear head on frozen patch tokens: mIoU, mAcc, aAcc) for each encoder."""

import math

import pytest

from svgbench.runner import RunConfig, run_matrix

from .conftest import wants_task

# quick mode: a real run of the protocol at a size that finishes in seconds per encoder
QUICK_EVAL_IMAGES = 128
QUICK_OVERRIDES = {"train_size": 256, "epochs": 3}


def test_seg(encoder_name, run_options, full, tmp_path, request, monkeypatch):
    if not wants_task(request.config, "seg"):
        pytest.skip("task not selected (--tasks)")
    if not full:  # quick runs keep their token cache to themselves
        monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "feature-cache"))
    data = run_options["data"]
    if data.name not in ("shapes", "segfolder"):
        pytest.skip(f"segmentation needs per-pixel masks; the tasks/ data is {data.name!r}")
    if not full:
        data = data.replace(size=QUICK_EVAL_IMAGES)
    cfg = RunConfig(encoders=(encoder_name,), tasks=("seg",), data=data, device=run_options["device"],
                    results_dir=run_options["results_dir"] or str(tmp_path),
                    task_overrides={"seg": dict(run_options["tasks"].get("seg", {}))} if full
                    else {"seg": dict(QUICK_OVERRIDES)})
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    m = summary.records[0].metrics
    assert m["num_images"] == data.size
    for metric in ("miou", "macc", "aacc"):
        if m[metric] is None:
            assert metric in m["unavailable"]
        else:
            assert math.isfinite(m[metric]) and 0.0 <= m[metric] <= 100.0
