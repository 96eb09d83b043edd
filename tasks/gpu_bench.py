"""XL sampling throughput and MFU on one GPU, in one go (under 8 minutes on an H100/H200).

Measures, for SVG-XL's shape (depth 28, width 1152, 16 heads, patch 1, 392 x 16 x 16 latents, qk norm):
guided Euler sampling steps (cond + uncond in one forward) at batch 64 and 256, in bf16 autocast and fp32
(TF32 on), and one bf16 training step (forward + backward + AdamW); FLOPs from FlopCounterMode, MFU
against the device's dense peak. Writes results/gpu-<device>/gpu_bench.{json,md}.

    python tasks/gpu_bench.py                 # on a GPU
    python tasks/gpu_bench.py --smoke         # tiny sizes on CPU, seconds (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import torch

from svgbench.diffusion.flops import count_flops, mfu, precision_of
from svgbench.diffusion.models import build_model
from svgbench.diffusion.samplers import Guidance, ODESampler, noise_for_indices
from svgbench.diffusion.transport import RectifiedFlow


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, iters: int) -> float:
    """Mean seconds per call after warm-up."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model and batches on CPU")
    ap.add_argument("--out", default="results")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 64,256)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps timed per measurement")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows use TF32 tensor cores, as SiT's sample_ddp.py does
    torch.backends.cudnn.allow_tf32 = True
    if args.smoke:
        size, shape, batches, steps, warm, iters = "tiny", (392, 4, 4), [2, 4], 2, 1, 1
    else:
        size, shape, batches, steps, warm, iters = "XL", (392, 16, 16), [64, 256], 5, 1, 2
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    steps = args.steps or steps
    model = build_model(size, in_channels=shape[0], input_size=shape[1], patch_size=1, qk_norm=True,
                        learn_sigma=True, num_classes=1000).to(device).eval()
    net = torch.compile(model) if args.compile else model
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    rows = []
    for autocast in (torch.bfloat16, None):
        for b in batches:
            noise = noise_for_indices(range(b), shape, seed=0, device=device)
            y = torch.arange(b, device=device) % 1000
            sampler = ODESampler("euler", steps, 0.15, Guidance(4.0), autocast=autocast)
            xx, tt, yy = torch.cat([noise, noise]), torch.rand(2 * b, device=device), torch.cat([y, y])
            with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                fwd_flops = count_flops(model, xx, tt, yy)  # one guided step: the 2B-batch forward
            with torch.no_grad():
                sec = timed(lambda: sampler(net, noise, y), device, warm, iters)
            prec = precision_of(autocast, device)
            flops = fwd_flops * steps
            rows.append(dict(kind="sample", batch=b, precision=prec, steps=steps, seconds=sec,
                             images_per_s=b / sec, tflops_per_s=flops / sec / 1e12, flops_per_step=fwd_flops,
                             mfu=mfu(flops, sec, device, prec)))
            print(rows[-1], flush=True)
    # one bf16 training step at the first batch size
    b = batches[0]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flow = RectifiedFlow(0.4)
    x, y = torch.randn(b, *shape, device=device), torch.arange(b, device=device) % 1000
    gen = torch.Generator(device).manual_seed(0)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = flow.loss(net, x, y, generator=gen)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def fwd_bwd():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            flow.loss(model, x, y, generator=gen)["loss"].backward()
        model.zero_grad(set_to_none=True)

    train_flops = count_flops(fwd_bwd)
    sec = timed(train_step, device, warm, iters)
    rows.append(dict(kind="train", batch=b, precision="bf16", steps=1, seconds=sec, images_per_s=b / sec,
                     tflops_per_s=train_flops / sec / 1e12, flops_per_step=train_flops,
                     mfu=mfu(train_flops, sec, device, "bf16")))
    print(rows[-1], flush=True)

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = Path(args.out) / f"gpu-{slug}"
    out.mkdir(parents=True, exist_ok=True)
    best = max((r for r in rows if r["kind"] == "sample"), key=lambda r: r["images_per_s"])
    report = dict(device=name, model=size, latent_shape=list(shape), torch=torch.__version__, smoke=args.smoke,
                  compile=args.compile, rows=rows,
                  fid50k_25_steps_minutes_estimate=50_000 / (best["images_per_s"] * best["steps"] / 25) / 60)
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Diffusion throughput on {name} ({size}, latents {'x'.join(map(str, shape))}, guided Euler)", "",
             "| kind | batch | precision | s / call | images/s | TFLOP/s | MFU |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = "n/a (no peak known)" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['kind']} ({r['steps']} steps) | {r['batch']} | {r['precision']} | {r['seconds']:.4f} | "
                     f"{r['images_per_s']:.1f} | {r['tflops_per_s']:.2f} | {m} |")
    lines += ["", f"FID-50K at 25 guided steps, sampling only (no decoding): about "
                  f"{report['fid50k_25_steps_minutes_estimate']:.1f} min at the best row's rate."]
    (out / "gpu_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
