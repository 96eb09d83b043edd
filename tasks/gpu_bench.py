"""SVG-XL forward and guided-sampling throughput, MFU and the FID-50K wall time they imply, on one GPU, in under
8 minutes on an H100/H200.

Measures, for SVG-XL's shape (depth 28, width 1152, 16 heads, patch 1, 392 x 16 x 16 latents, qk norm; 237.7
GFLOPs a forward, the same as SiT-XL/2 on SD-VAE latents):
  1. model forwards at batch 64 and 256 in bf16 autocast, TF32 and strict fp32, eager and (bf16, TF32)
     torch.compile'd: seconds, images/s, TFLOP/s, MFU against the device's dense peak for that arithmetic;
  2. guided sampling through the task path (`svgbench.diffusion.task_sampler.make_sampler`: protocol svg-paper-cfg,
     scale 1.25, the imagenet256 preset's precision `auto` = bf16 autocast + TF32 with an fp32 ODE state),
     eager and compiled, a few Euler steps timed and the rate per step scaled to the protocol's 25 steps;
  3. the FID-50K sampling wall time each sampling row implies (sampling only: decoding and Inception are
     not timed here).
Compiled rows start while the time budget lasts (`--budget-s`, default 360 s: a compile can take a minute or
two more); a row skipped for time says so.
Writes OUT/gpu-<device>/gpu_bench.{json,md}.

    python tasks/gpu_bench.py --out results          # on a GPU
    python tasks/gpu_bench.py --smoke --out DIR      # a tiny model on the CPU, seconds (the tests run it)
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import torch

from svgbench.diffusion.flops import count_flops, mfu
from svgbench.diffusion.models import build_model
from svgbench.diffusion.samplers import noise_for_indices
from svgbench.diffusion.task_sampler import make_sampler, tf32_matmuls
from svgbench.tasks.generation import GenerationConfig

FID_SAMPLES, PROTOCOL, PROTOCOL_STEPS = 50_000, "svg-paper-cfg", 25
# the arithmetic of each forward row: (autocast dtype, TF32 matmuls)
PRECISIONS = {"bf16": (torch.bfloat16, False), "tf32": (None, True), "fp32": (None, False)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, iters: int) -> float:
    """Mean seconds per call after warm-up (the first calls of a compiled function compile it)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def device_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200' (the results folder's name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny model and batches on the CPU")
    ap.add_argument("--out", default="results")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 64,256)")
    ap.add_argument("--compile", default="bf16,tf32",
                    help="precisions whose forward rows are also run torch.compile'd ('' for none: no compiled "
                         "rows, sampling included)")
    ap.add_argument("--sample-steps", type=int, default=None, help="Euler steps timed per sampling row")
    ap.add_argument("--budget-s", type=float, default=360.0,
                    help="compiled rows (each may compile for a minute or two) start only within this time")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        size, shape, batches, sample_batch, steps, warm, iters = "tiny", (392, 4, 4), [2, 4], 4, 2, 1, 1
    else:
        size, shape, batches, sample_batch, steps, warm, iters = "XL", (392, 16, 16), [64, 256], 256, 4, 2, 3
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
        sample_batch = batches[-1]
    steps = args.sample_steps or steps
    compiled_precisions = [p for p in args.compile.split(",") if p]
    model = build_model(size, in_channels=shape[0], input_size=shape[1], patch_size=1, qk_norm=True,
                        learn_sigma=True, num_classes=1000).to(device).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    params = sum(p.numel() for p in model.parameters())
    rows, skipped = [], []

    def within_budget() -> bool:
        return time.perf_counter() - t_start < args.budget_s

    # 1. forwards
    compiled_net = None
    for compiled in (False, True):
        for prec, (autocast, tf32) in PRECISIONS.items():
            if compiled and prec not in compiled_precisions:
                continue
            for b in batches:
                if compiled and not within_budget():
                    skipped.append(f"forward {prec} batch {b} compiled: past the {args.budget_s:.0f} s budget")
                    continue
                if compiled and compiled_net is None:
                    compiled_net = torch.compile(model)
                net = compiled_net if compiled else model
                x = noise_for_indices(range(b), shape, seed=0, device=device)
                t, y = torch.rand(b, device=device), torch.arange(b, device=device) % 1000
                ctx = torch.autocast(device.type, dtype=autocast, enabled=autocast is not None)
                with torch.no_grad(), tf32_matmuls(tf32), ctx:
                    flops = count_flops(model, x, t, y)
                    t0 = time.perf_counter()
                    sec = timed(lambda: net(x, t, y), device, warm + (1 if compiled else 0), iters)
                rows.append(dict(kind="forward", batch=b, precision=prec, compiled=compiled, seconds=sec,
                                 images_per_s=b / sec, tflops_per_s=flops / sec / 1e12, flops=flops,
                                 mfu=mfu(flops, sec, device, prec), wall_s=time.perf_counter() - t0))
                print(rows[-1], flush=True)
    # 2. guided sampling through the task path, precision `auto`
    for compiled in (False, True):
        if compiled and not compiled_precisions:
            continue
        if compiled and not within_budget():
            skipped.append(f"guided sampling compiled: past the {args.budget_s:.0f} s budget")
            continue
        cfg = GenerationConfig(protocol=PROTOCOL, protocol_steps=steps, precision="auto", compile=compiled)
        sampler = make_sampler(cfg)
        target = build_model(size, in_channels=shape[0], input_size=shape[1], patch_size=1, qk_norm=True,
                             learn_sigma=True, num_classes=1000).to(device).eval() if compiled else model
        if compiled:
            target.load_state_dict(model.state_dict())
        noise = noise_for_indices(range(sample_batch), shape, seed=0, device=device)
        y = torch.arange(sample_batch, device=device) % 1000
        t0 = time.perf_counter()
        with torch.no_grad():
            sec = timed(lambda: sampler(target, noise, y), device, 1, 1 if compiled or args.smoke else 2)
        per_step = sec / steps
        flops_step = _guided_step_flops(model, sampler, noise, y, device)
        fid_min = FID_SAMPLES / sample_batch * per_step * PROTOCOL_STEPS / 60
        rows.append(dict(kind="sample", batch=sample_batch, precision=sampler.precision, compiled=compiled,
                         protocol=PROTOCOL, guidance_scale=sampler.guidance.scale, steps_timed=steps,
                         seconds=sec, seconds_per_step=per_step,
                         images_per_s=sample_batch / (per_step * PROTOCOL_STEPS),
                         tflops_per_s=flops_step / per_step / 1e12, flops_per_step=flops_step,
                         mfu=mfu(flops_step, per_step, device, "bf16" if "bf16" in sampler.precision else
                                 ("tf32" if "tf32" in sampler.precision else "fp32")),
                         fid50k_sampling_minutes=fid_min, wall_s=time.perf_counter() - t0))
        print(rows[-1], flush=True)
    report = dict(device=name, model=size, params=params, latent_shape=list(shape), torch=torch.__version__,
                  smoke=args.smoke, rows=rows, skipped=skipped, wall_s=time.perf_counter() - t_start,
                  fid50k_sampling_minutes_best=min(r["fid50k_sampling_minutes"] for r in rows
                                                   if r["kind"] == "sample"))
    out = Path(args.out) / f"gpu-{device_slug(name)}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_bench.md").write_text(markdown(report))
    print(markdown(report))
    return report


def _guided_step_flops(model, sampler, noise, y, device) -> float:
    """FLOPs of one guided step: the forwards of one sampler step at this batch (2B rows for [cond, uncond])."""
    b = len(noise)
    per_batch = sampler.forward_batches() / max(1, sampler.nfe or 1)  # forwards of the B batch per evaluation
    with torch.no_grad():
        f = count_flops(model, noise, torch.full((b,), 0.5, device=device), y)
    return f * per_batch


def markdown(report: dict) -> str:
    pct = (lambda m: "n/a (no peak known)" if m is None else f"{100 * m:.1f}%")
    lines = [f"# SVG-XL throughput on {report['device']} ({report['model']}, {report['params'] / 1e6:.0f} M "
             f"parameters, latents {'x'.join(map(str, report['latent_shape']))}, torch {report['torch']})", "",
             "## Forwards", "", "| batch | precision | compiled | s / forward | images/s | TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in report["rows"] if r["kind"] == "forward"):
        lines.append(f"| {r['batch']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} | {r['seconds']:.4f} | "
                     f"{r['images_per_s']:.1f} | {r['tflops_per_s']:.1f} | {pct(r['mfu'])} |")
    lines += ["", f"## Guided sampling ({PROTOCOL}, through the task path, precision auto)", "",
              "| batch | precision | compiled | s / step | images/s at 25 steps | TFLOP/s | MFU | FID-50K sampling |",
              "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in report["rows"] if r["kind"] == "sample"):
        lines.append(f"| {r['batch']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} | "
                     f"{r['seconds_per_step']:.4f} | {r['images_per_s']:.1f} | {r['tflops_per_s']:.1f} | "
                     f"{pct(r['mfu'])} | {r['fid50k_sampling_minutes']:.1f} min |")
    lines += ["", f"FID-50K at {PROTOCOL_STEPS} guided steps, sampling only (decoding and Inception not timed): "
                  f"{report['fid50k_sampling_minutes_best']:.1f} min at the best sampling row.",
              f"Whole benchmark: {report['wall_s']:.0f} s."]
    lines += [f"- skipped: {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
