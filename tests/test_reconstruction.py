"""Reconstruction metrics against independent implementations, and the task through the runner."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from svgbench.data import DataConfig
from svgbench.encoders import EncoderSpec, LatentEncoder, register_encoder, unregister_encoder
from svgbench.metrics.recon import SSIM, psnr_per_image, quantize
from svgbench.report import task_table, write_reports
from svgbench.runner import RunConfig, run_matrix


def test_psnr_ssim_match_skimage():
    g = torch.Generator().manual_seed(0)
    x = quantize(torch.rand(3, 3, 32, 32, generator=g) * 2 - 1)
    y = quantize((x * 2 - 1) + 0.1 * torch.randn(3, 3, 32, 32, generator=g))
    ours_psnr = psnr_per_image(x, y)
    ours_ssim = SSIM().per_image(x, y)
    for i in range(3):
        a, b = x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy()
        assert math.isclose(ours_psnr[i].item(), peak_signal_noise_ratio(a, b, data_range=1.0), rel_tol=1e-6)
        ref = structural_similarity(a, b, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert abs(ours_ssim[i].item() - ref) < 2e-3, (ours_ssim[i].item(), ref)


class QuantizingAE(LatentEncoder):
    """An encoder defined outside svgbench: latent = 4-level quantised pixels; lossy but predictable."""

    def __init__(self, levels=4):
        super().__init__(EncoderSpec(name="test-quant", family="test", latent_channels=3, downsample=1,
                                     resolution=32, has_decoder=True, weights="none (analytic)"))
        self.levels = levels

    def _encode(self, x):
        return torch.round((x + 1) / 2 * (self.levels - 1))

    def _decode(self, z):
        return z / (self.levels - 1) * 2 - 1


def expected_psnr(dataset, levels, n):
    vals = []
    for i in range(n):
        x = dataset[i]["image"][None]
        y = torch.round((x + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
        a, b = quantize(x)[0].permute(1, 2, 0).numpy(), quantize(y)[0].permute(1, 2, 0).numpy()
        vals.append(peak_signal_noise_ratio(a, b, data_range=1.0))
    return float(np.mean(vals))


def test_user_encoder_runs_through_task_and_table(tmp_path):
    register_encoder("test-quant", QuantizingAE)
    try:
        data = DataConfig(resolution=32, size=24)
        cfg = RunConfig(encoders=("test-quant",), tasks=("reconstruction",), data=data,
                        results_dir=str(tmp_path), batch_size=8)
        summary = run_matrix(cfg, log=lambda m: None)
        assert not summary.failures and summary.computed == 1
        rec = summary.records[0]
        from svgbench.data import build_dataset

        assert math.isclose(rec["metrics"]["psnr"], expected_psnr(build_dataset(data), 4, 24), rel_tol=1e-6)
        assert rec["metrics"]["lpips"] is None and "lpips" in rec["metrics"]["unavailable"]
        m = rec["metrics"]
        for key in ("psnr", "ssim"):  # per-image values reproduce the headline; the interval brackets it
            items = m["per_item"][key]
            assert len(items) == 24 and all(v is not None for v in items)
            assert math.isclose(float(np.mean(items)), m[key], rel_tol=1e-6)
            assert m["ci"][key]["ci_low"] < m[key] < m["ci"][key]["ci_high"] and m["ci"][key]["n"] == 24
        assert "lpips" not in m["ci"] and m["stats_s"] >= 0
        write_reports(tmp_path)
        md = (tmp_path / "reconstruction.md").read_text()
        assert "test-quant" in md and "n/a" in md
        df = task_table(summary.records, "reconstruction")
        assert list(df["encoder"]) == ["test-quant"]
        # a second run reuses the record
        again = run_matrix(cfg, log=lambda m: None)
        assert again.computed == 0 and again.skipped == 1
    finally:
        unregister_encoder("test-quant")


def test_bad_cells_fail_clearly_and_leave_nothing_half_written(tmp_path):
    data = DataConfig(resolution=48, size=8)
    cfg = RunConfig(encoders=("tiny-svg",), tasks=("reconstruction",), data=data, results_dir=str(tmp_path))
    summary = run_matrix(cfg, log=lambda m: None)
    assert len(summary.failures) == 1 and "64x64" in summary.failures[0].error
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(KeyError, match="unknown encoder 'nope'"):
        run_matrix(RunConfig(encoders=("nope",), results_dir=str(tmp_path)), log=lambda m: None)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "svgbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_cli_run_list_and_errors(tmp_path):
    out = _cli("list", cwd=tmp_path)
    assert out.returncode == 0 and "svg-dinov3-vits16plus" in out.stdout and "392x16x16" in out.stdout
    out = _cli("run", "--encoders", "tiny-vae,tiny-ssl", "--tasks", "reconstruction", "--num-images", "8",
               "--results", "res", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| tiny-vae |" in out.stdout and "no pixel decoder" in out.stderr
    assert json.loads((tmp_path / "res" / "reconstruction.json").read_text())[0]["encoder"] == "tiny-vae"
    out = _cli("run", "--encoders", "nope", "--results", "res", cwd=tmp_path)
    assert out.returncode != 0 and "unknown encoder 'nope'" in out.stderr and "tiny-svg" in out.stderr
    out = _cli("run", "--data", "imagefolder", "--data-root", str(tmp_path / "missing"), "--results", "res",
               cwd=tmp_path)
    assert out.returncode != 0 and "missing" in out.stderr
    out = _cli("run", "--encoders", "tiny-vae", "--weights", "tiny-vae=" + str(tmp_path / "nofolder"),
               "--results", "res2", cwd=tmp_path)
    assert out.returncode != 0 and "nofolder" in out.stderr
    assert not (tmp_path / "res2" / "records").exists() or not list((tmp_path / "res2").rglob("*.json"))


def test_corrupt_image_folder_names_file(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs" / "val"
    (root / "cat").mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(root / "cat" / "a.png")
    (root / "cat" / "b.jpg").write_bytes(b"not a jpeg at all")
    Image.new("L", (40, 40), 128).save(root / "cat" / "c.png")
    out = _cli("run", "--encoders", "tiny-vae", "--tasks", "reconstruction", "--data-root", str(tmp_path / "imgs"),
               "--resolution", "64", "--results", "res", cwd=tmp_path)
    assert out.returncode != 0
    assert "b.jpg" in out.stderr or "c.png" in out.stderr
    assert not list(Path(tmp_path / "res").rglob("*.json"))


def test_cli_set_overrides_a_task_field(tmp_path):
    from svgbench.cli import parse_task_setting

    assert parse_task_setting("sampling.steps=[1,2,4]") == ("sampling", "steps", (1, 2, 4))
    assert parse_task_setting("sampling.heun_max_steps=50") == ("sampling", "heun_max_steps", 50)
    assert parse_task_setting("generation.sampler=heun") == ("generation", "sampler", "heun")
    for bad, words in (("sampling.nope=1", "no config field 'nope'"), ("nope.steps=1", "unknown task 'nope'"),
                       ("sampling=1", "TASK.FIELD=VALUE")):
        with pytest.raises(SystemExit, match=words):
            parse_task_setting(bad)
    out = _cli("run", "--encoders", "tiny-vae", "--tasks", "reconstruction", "--num-images", "8",
               "--set", "reconstruction.nope=3", "--results", "res", cwd=tmp_path)
    assert out.returncode != 0 and "no config field 'nope'" in out.stderr
    out = _cli("run", "--encoders", "tiny-vae", "--tasks", "reconstruction", "--num-images", "8",
               "--set", "reconstruction.num_images=4", "--set", "reconstruction.rfid=false", "--results", "res",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (record,) = json.loads((tmp_path / "res" / "reconstruction.json").read_text())
    assert record["images"] == 4 and record["rFID"] is None
