"""The cost model of a cell: ForwardClock's time and FLOPs, the achievable GEMM rate, efficiency.md."""

import os
import subprocess
import sys

import torch

from svgbench.diffusion.flops import ForwardClock, count_flops, gemm_rate
from svgbench.diffusion.models import DiffusionTransformer
from svgbench.efficiency import cell_rows, cost_lines
from svgbench.records import Record


def _model():
    torch.manual_seed(0)
    return DiffusionTransformer(input_size=4, in_channels=8, hidden_size=32, depth=2, num_heads=2,
                                num_classes=3).eval()


def test_forward_clock_counts_each_top_level_forward_once_with_its_flops():
    m = _model()
    x, t, y = torch.randn(6, 8, 4, 4), torch.rand(6), torch.randint(0, 3, (6,))
    per_image = count_flops(m, x[:1], t[:1], y[:1])
    whole = count_flops(m, x, t, y)
    assert abs(whole - 6 * per_image) <= 1e-6 * whole  # FLOPs linear in the batch: the clock's scaling holds
    with ForwardClock((DiffusionTransformer,)) as clock, torch.no_grad():
        for _ in range(3):
            m(x, t, y)
        torch.nn.Linear(8, 8)(torch.randn(2, 8))  # another module: not clocked
    s = clock.summary()
    assert s["forwards"] == 3 and s["model_flops"] == 3 * whole
    assert list(s["by_dtype"]) == ["fp32"] and s["model_s"] > 0
    with torch.no_grad():
        m(x, t, y)  # the clock has left: hooks removed
    assert clock.summary()["forwards"] == 3


def test_forward_clock_names_bf16_autocast():
    m = _model()
    x, t, y = torch.randn(2, 8, 4, 4), torch.rand(2), torch.randint(0, 3, (2,))
    with ForwardClock((DiffusionTransformer,)) as clock, torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        m(x, t, y)
    assert list(clock.summary()["by_dtype"]) == ["bf16"]


def test_gemm_rate_is_a_positive_rate_of_the_machine():
    r = gemm_rate("fp32", size=256, repeats=2)
    assert 1e8 < r < 1e14  # FLOP/s of one CPU: somewhere between a slow core and a large machine


def test_cell_rows_and_cost_lines():
    cost = {"model_s": 4.0, "model_flops": 200e9, "forwards": 20, "achievable_flops": {"fp32": 100e9},
            "by_dtype": {"fp32": {"s": 4.0, "flops": 200e9, "forwards": 20}},
            "machine": {"cpu": "X", "threads": 2, "arithmetic": "fp32"}}
    def record(task, wall_s, metrics, cost=None):
        return Record(key=task, task=task, encoder="a", metrics=metrics, config={}, spec={}, wall_s=wall_s,
                      data={"name": "shapes", "split": "val", "resolution": 64}, cost=cost or {})

    records = [
        record("sampling", 10.0, {"stats_s": 1.0}, cost),
        record("probe", 5.0, {}, {"model_s": 0.0, "forwards": 0}),
        record("knn", 0.0, {}),  # n/a: not a computed cell
    ]
    rows = cell_rows(records)
    assert [r["task"] for r in rows] == ["sampling", "probe"]
    s = rows[0]
    assert abs(s["achieved_gflops"] - 50.0) < 1e-9  # 200 GFLOP in 4 s
    assert abs(s["rate_share"] - 0.5) < 1e-9  # 2 s at the achievable rate / 4 s
    assert abs(s["efficiency"] - 0.2) < 1e-9  # 2 s / 10 s of the cell
    assert s["outside_model_s"] == 6.0 and s["stats_s"] == 1.0
    assert rows[1]["rate_share"] is None and rows[1]["outside_model_s"] == 5.0
    md = "\n".join(cost_lines(records))
    assert "| a | sampling | 10.0 | 20 | 4.0 | 200 | fp32 | 50.0 | 100.0 | 0.50 | 0.20 | 6.0 |" in md
    assert "- X, 2 threads, diffusion sampling in fp32; achievable GFLOP/s measured in that run" in md
    assert cost_lines(records[2:]) == []


def test_a_runner_cell_records_its_cost_model(tmp_path):
    """A real generation cell through the runner (tiny-vae's shipped diffusion model, a few samples): its
    record's cost counts the model's forwards, their FLOPs and the achievable rate, and efficiency.md shows it."""
    from svgbench.data import DataConfig
    from svgbench.report import write_reports
    from svgbench.runner import RunConfig, run_matrix

    cfg = RunConfig(encoders=("tiny-vae",), tasks=("generation",), data=DataConfig(size=16), results_dir=str(tmp_path),
                    task_overrides={"generation": {"eval_samples": 16, "sample_steps": 2, "fid_targets": ()}})
    rec = run_matrix(cfg, log=lambda m: None).records[0]
    cost = rec.cost
    assert cost["forwards"] > 0 and cost["model_flops"] > 0 and 0 < cost["model_s"] < rec.wall_s
    assert set(cost["achievable_flops"]) == set(cost["by_dtype"])
    write_reports(tmp_path, plots=False)
    assert "| tiny-vae | generation |" in (tmp_path / "efficiency.md").read_text()


def test_float32_path_can_be_forced_by_the_environment():
    """SVGBENCH_FLOAT32=1 makes the embedded preset sample in float32, as on a CPU without native bf16."""
    code = "from svgbench.presets import RUN_PRESETS as P; t = P['tiny']['tasks']; " \
           "print(t['generation']['bf16'], t['sampling']['bf16'])"
    env = dict(os.environ, SVGBENCH_FLOAT32="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
