"""Reconstruction (PSNR, SSIM, LPIPS, rFID) for each encoder with a pixel decoder."""

import math

import pytest

from svgbench.encoders import encoder_spec
from svgbench.runner import RunConfig, run_matrix

from .conftest import wants_task


def test_reconstruction(encoder_name, run_options, tmp_path, request):
    if not wants_task(request.config, "reconstruction"):
        pytest.skip("task not selected (--tasks)")
    if not encoder_spec(encoder_name).has_decoder:
        pytest.skip(f"{encoder_name} has no pixel decoder")
    cfg = RunConfig(encoders=(encoder_name,), tasks=("reconstruction",), data=run_options["data"],
                    device=run_options["device"], results_dir=run_options["results_dir"] or str(tmp_path))
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    m = summary.records[0].metrics
    assert m["num_images"] == run_options["data"].size
    assert math.isfinite(m["psnr"]) and 3.0 < m["psnr"] < 60.0
    assert 0.0 < m["ssim"] <= 1.0
    for metric in ("lpips", "rfid"):
        assert (m[metric] is None) == (metric in m["unavailable"])
