"""The GPU benchmark script (tasks/gpu_bench.py) runs end to end on the CPU in its smoke mode, so it is known to
work before a GPU is lent: every forward row (bf16, tf32, fp32 at two batches), the guided sampling row through
the task path, and the FID-50K time it implies, written to OUT/gpu-<device>/."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks import gpu_bench  # noqa: E402


def _check(report, out: Path, compiled: bool):
    rows = report["rows"]
    fwd = [(r["precision"], r["batch"], r["compiled"]) for r in rows if r["kind"] == "forward"]
    assert {(p, b) for p, b, c in fwd if not c} == {(p, b) for p in ("bf16", "tf32", "fp32") for b in (2, 4)}
    assert any(c for *_, c in fwd) == compiled
    samp = [r for r in rows if r["kind"] == "sample"]
    assert [r["compiled"] for r in samp] == ([False, True] if compiled else [False])
    for r in rows:
        assert r["seconds"] > 0 and r["images_per_s"] > 0 and r["tflops_per_s"] > 0 and r["mfu"] is None  # CPU
    s = samp[0]
    assert s["protocol"] == "svg-paper-cfg" and s["guidance_scale"] == 1.25 and s["precision"] == "fp32"
    # FID-50K minutes = 50,000 / batch x seconds per step x 25 steps / 60
    assert abs(s["fid50k_sampling_minutes"] - 50_000 / s["batch"] * s["seconds_per_step"] * 25 / 60) < 1e-9
    # a guided step runs the [cond, uncond] batch: twice the FLOPs of one forward at the batch size
    one = next(r for r in rows if r["kind"] == "forward" and r["batch"] == 4 and r["precision"] == "fp32")
    assert s["flops_per_step"] == pytest.approx(2 * one["flops"], rel=1e-6)
    (folder,) = list(out.iterdir())
    assert folder.name.startswith("gpu-cpu")
    assert json.loads((folder / "gpu_bench.json").read_text())["rows"] == rows
    md = (folder / "gpu_bench.md").read_text()
    assert "| 4 | bf16 | no |" in md and "FID-50K at 25 guided steps" in md


def test_gpu_bench_smoke(tmp_path):
    report = gpu_bench.main(["--smoke", "--out", str(tmp_path), "--compile", ""])
    _check(report, tmp_path, compiled=False)


@pytest.mark.slow  # torch.compile on a CPU: about a minute per compiled graph
def test_gpu_bench_smoke_compiled(tmp_path):
    report = gpu_bench.main(["--smoke", "--out", str(tmp_path), "--compile", "bf16"])
    _check(report, tmp_path, compiled=True)


def test_gpu_bench_budget_skips_compiled_rows(tmp_path):
    """Past the time budget no compile starts: the rows are listed as skipped, the eager rows stay."""
    report = gpu_bench.main(["--smoke", "--out", str(tmp_path), "--compile", "bf16", "--budget-s", "0"])
    assert not any(r["compiled"] for r in report["rows"])
    assert report["skipped"] == ["forward bf16 batch 2 compiled: past the 0 s budget",
                                 "forward bf16 batch 4 compiled: past the 0 s budget",
                                 "guided sampling compiled: past the 0 s budget"]
    assert "- skipped: guided sampling compiled" in next(tmp_path.iterdir()).joinpath("gpu_bench.md").read_text()
