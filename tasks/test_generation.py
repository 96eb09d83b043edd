"""Generation (judge-FID/KID/precision/recall, FID vs training steps) and few-step sampling, per encoder.

Quick mode trains a few diffusion steps per encoder (real training and scoring, tiny budget);
--benchmark scores the shipped diffusion models (or n/a where none is shipped; --train-diffusion
on the CLI trains them).
"""

from pathlib import Path

import pytest
import torch

from svgbench.encoders import encoder_spec
from svgbench.runner import RunConfig, resolve_device, run_matrix

from .conftest import rows_written_by, wants_task

# sample_batch_size 32: the sampling cell draws the point it shares with generation (Euler, sample_steps) in whole
# blocks of the generation's batch, trimmed to its samples; the default 256 would sample 8x its 32 here
QUICK_GEN = {"train": True, "train_size": 256, "eval_samples": 64, "curve_samples": 32, "train_steps": 6,
             "eval_every": 3, "train_batch": 16, "sample_steps": 4, "sample_batch_size": 32}
QUICK_SAMPLING = {"train": True, "train_size": 256, "eval_samples": 32, "steps": (1, 4), "methods": ("euler", "heun")}


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch, full):
    if not full:
        monkeypatch.chdir(tmp_path)  # quick-mode diffusion runs and caches stay out of the checkout


def _skip_unless(request, task, encoder_name):
    if not wants_task(request.config, task):
        pytest.skip("task not selected (--tasks)")
    if not encoder_spec(encoder_name).has_decoder:
        pytest.skip(f"{encoder_name} has no pixel decoder")


def _run(task, encoder_name, run_options, full, tmp_path, quick):
    from svgbench.tasks.generation import SamplingConfig  # noqa: F401  (import check)

    overrides = {task: dict(run_options["tasks"].get(task, {}))} if full else {task: quick}
    if not full and task == "sampling":
        from svgbench.tasks.generation import GenerationConfig

        overrides[task] = dict(quick, generation=GenerationConfig(**{k: v for k, v in QUICK_GEN.items()}))
    cfg = RunConfig(encoders=(encoder_name,), tasks=(task,), data=run_options["data"], device=run_options["device"],
                    results_dir=run_options["results_dir"] or str(tmp_path), task_overrides=overrides)
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    return summary.records[0].metrics


@pytest.mark.one_per_family
def test_generation(encoder_name, run_options, full, tmp_path, request):
    _skip_unless(request, "generation", encoder_name)
    m = _run("generation", encoder_name, run_options, full, tmp_path, QUICK_GEN)
    if m["fid"] is None:
        assert "fid" in m["unavailable"]
        return
    assert m["fid"] > 0 and m["kid"] is not None and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert all(p[1] > 0 for p in m["fid_curve"])
    # every evaluated point here carries its interval; a shipped model's stored curve has none, and says so
    assert all(len(p) == 4 for p in m["fid_curve"]) or "fid_curve" in m.get("notes", {})
    assert m["ci"]["fid"]["ci_low"] <= m["ci"]["fid"]["ci_high"]
    if m["class_accuracy"] is None:
        assert "class_accuracy" in m["unavailable"]
    else:
        ci = m["ci"]["class_accuracy"]
        assert ci["ci_low"] <= m["class_accuracy"] <= ci["ci_high"]
        assert len(m["per_item"]["class_accuracy"]) == m["num_samples"]
    assert m["samples"]["count"] == min(10, m["num_samples"]) and m["samples"]["png_base64"]


@pytest.mark.one_per_family
def test_sampling(encoder_name, run_options, full, tmp_path, request):
    _skip_unless(request, "sampling", encoder_name)
    m = _run("sampling", encoder_name, run_options, full, tmp_path, QUICK_SAMPLING)
    if "curve" not in m:
        assert "fid" in m["unavailable"]
        return
    assert {r["method"] for r in m["curve"]} == {"euler", "heun"}
    assert all(r["fid"] > 0 and r["sample_s_per_image"] > 0 for r in m["curve"])
    assert all(r["ci_low"] is not None and r["ci_low"] <= r["ci_high"] for r in m["curve"])


# (model size, latent C x h x w, batch): the tiny shapes model everywhere; SVG-XL's shape (392 x 16 x 16) on GPU
STEP_CASES = [("tiny", (136, 8, 8), 64), ("XL", (392, 16, 16), 64)]


@pytest.mark.parametrize("size,latent,batch", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_sampler_step_vs_forward(benchmark, run_options, full, size, latent, batch, speed_rows):
    """Time per Euler step against one model forward on the same batch (goal: within 10%).

    Quick mode checks that the measurement runs (batch 16, 4 steps, one timed round); --benchmark times it at
    the listed batch, 10 steps, 3 rounds for the table."""
    import time

    from svgbench.diffusion.samplers import euler
    from svgbench.runner import device_name
    from svgbench.diffusion.store import DiffusionConfig, build_diffusion_model

    device = resolve_device(run_options["device"])
    if size != "tiny" and not device.startswith("cuda"):
        pytest.skip(f"the {size} model is timed on GPU only")
    torch.manual_seed(0)
    model = build_diffusion_model(DiffusionConfig(size=size), latent, 10).to(device).eval()
    batch = batch if full else 16
    reps, rounds = (10, 3) if full else (2, 1)
    x = torch.randn(batch, *latent, device=device)
    y = torch.arange(batch, device=device) % 10
    t = torch.full((batch,), 0.5, device=device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.no_grad():
        for _ in range(3 if full else 1):
            model(x, t, y)
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            model(x, t, y)
        sync()
        forward_s = (time.perf_counter() - t0) / reps
    steps = 10 if full else 4
    sampler = euler(steps=steps)

    def run():
        out = sampler(model, x, y)
        sync()
        return out

    out = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1 if full else 0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    per_step = benchmark.stats.stats.mean / steps
    benchmark.extra_info.update({"device": device, "device_name": device_name(device), "model": size,
                                 "forward_s": forward_s, "step_s": per_step, "step_over_forward": per_step / forward_s,
                                 "batch": batch, "latent": "x".join(map(str, latent))})
    speed_rows.append({"benchmark": "step_vs_forward", **benchmark.extra_info})
    assert per_step > 0


def write_speed_tables(results_dir: Path, rows: list[dict]) -> None:
    import platform

    import pandas as pd

    from svgbench.checkpoints import atomic_write_bytes

    devices = "; ".join(sorted({r["device_name"] for r in rows}))
    md = ["# sampling speed", "", f"pytest-benchmark means on {devices}, torch {torch.__version__}, Python "
          f"{platform.python_version()}; GPU synchronised before each clock read. They vary from run to run.", ""]
    speed = pd.DataFrame([r for r in rows if r["benchmark"] == "sampling"])
    if not speed.empty:
        speed["ms/img"] = speed["s_per_image"] * 1e3
        table = speed.pivot_table(index=["encoder", "method"], columns="steps", values="ms/img").reset_index()
        table.columns = [c if isinstance(c, str) else f"{c} step{'s' if c > 1 else ''}" for c in table.columns]
        md += ["## sampling + decoding, milliseconds per image", "",
               f"The encoder's shipped diffusion model, batch {int(speed['batch'].iloc[0])}: sampler (Heun: 2 model "
               "evaluations a step) then the encoder's decoder.", "",
               "| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
        md += ["| " + " | ".join(v if isinstance(v, str) else f"{v:.3f}" for v in row) + " |"
               for row in table.itertuples(index=False)]
        md.append("")
    step = [r for r in rows if r["benchmark"] == "step_vs_forward"]
    if step:
        md += ["## one Euler step vs one model forward", "", "| model | latent | batch | forward (ms) | step (ms) "
               "| step / forward |", "|---|---|---|---|---|---|"]
        md += [f"| {r['model']} | {r['latent']} | {r['batch']} | {r['forward_s'] * 1e3:.3f} | {r['step_s'] * 1e3:.3f} "
               f"| {r['step_over_forward']:.3f} |" for r in step]
        md.append("")
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(results_dir / "sampling_speed.md", "\n".join(md).encode())
    atomic_write_bytes(results_dir / "sampling_speed.csv", pd.DataFrame(rows).to_csv(index=False).encode())



# rows of this module's timing benchmarks; with --benchmark written to <results>/sampling_speed.{md,csv}
speed_rows = rows_written_by(write_speed_tables)

@pytest.fixture(scope="module")
def shipped_models():
    """encoder name -> (encoder, diffusion model, latent stats) on the run's device, loaded once per module."""
    return {}


@pytest.mark.one_per_family
@pytest.mark.parametrize("method", ["euler", "heun"])
def test_sampling_speed(benchmark, encoder_name, method, sampler_steps, run_options, full, request, shipped_models,
                        speed_rows):
    """Wall time per image of sampling + decoding with the encoder's shipped diffusion model at each step
    count (quick mode: 1 and 4 steps, batch 8; --benchmark: 1-50 steps, batch 64, 3 rounds), GPU synchronised."""
    from svgbench.data import build_dataset
    from svgbench.diffusion.samplers import ODESampler, noise_for_indices
    from svgbench.encoders import create_encoder
    from svgbench.runner import device_name
    from svgbench.data import num_classes_of
    from svgbench.diffusion.store import NoDiffusionModel
    from svgbench.tasks.generation import GenerationConfig
    from svgbench.train.diffusion import diffusion_for

    _skip_unless(request, "sampling", encoder_name)
    device = resolve_device(run_options["device"])
    if encoder_name not in shipped_models:
        encoder = create_encoder(encoder_name).to(device).eval()
        dataset = build_dataset(run_options["data"])
        try:
            model, stats, _, _ = diffusion_for(encoder, dataset, GenerationConfig(), device)
        except NoDiffusionModel as e:
            shipped_models[encoder_name] = str(e)
        else:
            shipped_models[encoder_name] = (encoder, model, stats, num_classes_of(dataset))
    if isinstance(shipped_models[encoder_name], str):
        pytest.skip(shipped_models[encoder_name])
    encoder, model, stats, ncls = shipped_models[encoder_name]
    batch = 64 if full else 8
    noise = noise_for_indices(range(batch), (model.in_channels, model.input_size, model.input_size), 0, device=device)
    labels = torch.arange(batch, device=device) % ncls
    sampler = ODESampler(method, sampler_steps, shift=GenerationConfig().shift)

    @torch.no_grad()
    def run():
        images = encoder.decode(stats.denormalize(sampler(model, noise, labels)))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return images

    images = benchmark.pedantic(run, rounds=3 if full else 1, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update({"device": device, "device_name": device_name(device), "encoder": encoder_name,
                                 "method": method, "steps": sampler_steps, "nfe": sampler.nfe, "batch": batch,
                                 "s_per_image": benchmark.stats.stats.mean / batch})
    speed_rows.append({"benchmark": "sampling", **benchmark.extra_info})
    assert images.shape[0] == batch and torch.isfinite(images).all()
