"""Flow-matching diffusion on an encoder's latents: the training loop of the generation task.

The model (svgbench.diffusion.models) learns velocity on per-channel normalised latents with the
rectified-flow objective (svgbench.diffusion.transport), keeps an EMA copy for sampling, and runs
resumably: `last.pt` holds model, EMA, optimiser, latent statistics and step; the batch of every step
(indices, noise, t, label dropout) is a function of (seed, step, rank), so a resumed run replays the
uninterrupted one exactly. An optional `evaluate(ema_model, stats, step)` callback adds rows (e.g.
judge-FID) to the curve along the way; the result's `extra["stats"]` holds the latent statistics. Under torchrun each rank draws its own batch (DDP).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from .common import (TrainResult, is_main, resume, rng_state, start_run, step_generator)


ON_DEVICE_BYTES = 8 << 30  # latent sets up to this size are moved to the GPU once instead of per batch


@dataclass
class DiffusionConfig:
    size: str = "tiny"
    patch_size: int = 1
    qk_norm: bool = True
    class_dropout: float = 0.1
    steps: int = 4000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema: float = 0.999
    shift: float = 0.4  # SVG's training time shift (t = 0 is noise)
    seed: int = 0
    eval_every: int = 500
    ckpt_every: int = 100
    out: str = "runs/diffusion"
    threads: int | None = None


def build_diffusion_model(cfg: DiffusionConfig, latent_shape: tuple[int, int, int], num_classes: int):
    from ..diffusion.models import build_model

    c, h, w = latent_shape
    if h != w:
        raise ValueError(f"diffusion needs square latent grids, got {h}x{w}")
    return build_model(cfg.size, input_size=h, patch_size=cfg.patch_size, in_channels=c, num_classes=num_classes,
                       class_dropout_prob=cfg.class_dropout, qk_norm=cfg.qk_norm)


def train_diffusion(latents: torch.Tensor, labels: torch.Tensor, cfg: DiffusionConfig, *, num_classes: int,
                    evaluate=None, log=print, on_step=None) -> TrainResult:
    """latents: N x C x h x w (un-normalised), labels: N int64. -> TrainResult(model=EMA model, extra={"stats"})."""
    from ..diffusion.transport import LatentStats, RectifiedFlow

    if latents.ndim != 4 or labels.shape[0] != latents.shape[0]:
        raise ValueError(f"latents must be N x C x h x w with one label each, got {tuple(latents.shape)} "
                         f"and {tuple(labels.shape)} labels")
    run, rank, world, device = start_run(cfg)
    model = build_diffusion_model(cfg, tuple(latents.shape[1:]), num_classes).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    stats = LatentStats.from_latents(latents.float())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    flow = RectifiedFlow(shift=cfg.shift)
    start, _ = resume(run, {"model": model, "ema": ema, "opt": opt, "stats": stats}, log)
    stats = stats.to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    data = stats.normalize(latents.float())  # normalised once; batches index into it
    if device.type == "cuda" and data.numel() * 4 <= ON_DEVICE_BYTES:  # small latent sets live on the GPU
        data, labels = data.to(device), labels.to(device)
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    t0 = time.perf_counter()
    last = {}
    for step in range(start, cfg.steps):
        g = step_generator(cfg.seed, step, rank)
        idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=g).to(data.device)
        x, y = data[idx].to(device), labels[idx].to(device)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        out = flow.loss(ddp, x, y, generator=g)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"diffusion loss is {loss.item()} at step {step}; lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1 - cfg.ema)  # ema += (1 - decay) (model - ema)
        done = step + 1
        evaluated = {}
        if evaluate is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            evaluated = evaluate(ema, stats, done)  # on every rank: sampling is sharded over the processes
        if is_main():
            row = {"step": done, "loss": round(loss.item(), 5), "wall_s": round(time.perf_counter() - t0, 1)}
            row |= evaluated
            if done % 20 == 0 or len(row) > 3:
                run.log(row)
                log(" ".join(f"{k}={v}" for k, v in row.items()))
            last = row
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                run.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                          "stats": stats.state_dict(), "rng": rng_state(), "step": done})
        if on_step is not None:
            on_step(done)
    return TrainResult(last, ema, {"stats": stats})


def main(argv=None) -> None:
    """`svgbench train diffusion --encoder NAME [--export]`: the generation task's diffusion model of one encoder.

    Trains on the encoder's cached latents of the shapes training split with judge-FID evaluated along the
    way (the generation task's own code, so its curve is the task's training-efficiency curve), scores the
    final model, and with --export ships it to svgbench/weights/diffusion/<encoder>.safetensors with a card.
    The shipped model is then re-scored from the file, and those are the card's numbers.
    """
    import argparse
    import dataclasses
    import json
    import sys

    from ..data import DataConfig, build_dataset
    from ..encoders import create_encoder
    from ..presets import get_preset
    from ..runner import resolve_device
    from ..tasks.generation import GenerationConfig, export_diffusion, run_generation
    from .cards import write_card
    from .common import add_config_args, config_from_args, init_distributed

    p = argparse.ArgumentParser("svgbench train diffusion", description=main.__doc__)
    p.add_argument("--encoder", required=True, help="a registered encoder with a decoder")
    p.add_argument("--weights", help="the encoder's weights (default: its shipped ones)")
    p.add_argument("--preset", default="tiny", help="data and task sizes: tiny (shapes) or imagenet256")
    p.add_argument("--data-root", help="ImageNet-layout folder (imagenet256)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--export", action="store_true", help="ship the model to svgbench/weights/diffusion/ with a card")
    add_config_args(p, GenerationConfig)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    base = GenerationConfig(**preset["tasks"].get("generation", {}))
    cfg = dataclasses.replace(config_from_args(base, args), train=True, retrain=True)
    _, _, dev = init_distributed()  # under torchrun: this rank's GPU
    device = str(dev) if args.device == "auto" else resolve_device(args.device)
    data = DataConfig(**(preset["data"] | ({"root": args.data_root} if args.data_root else {})))
    dataset = build_dataset(data)
    encoder = create_encoder(args.encoder, **({"weights": args.weights} if args.weights else {}))
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    kept = {}
    metrics = run_generation(encoder, dataset, cfg, device=device, log=say,
                             on_model=lambda m, st, c, pr: kept.update(model=m, stats=st, curve=c, prov=pr))
    say("trained model: " + json.dumps({k: metrics.get(k) for k in ("fid", "kid", "precision", "recall")}))
    if not args.export or not is_main():
        return
    if not kept:
        raise SystemExit(f"svgbench train diffusion: no model for {args.encoder}: {metrics.get('unavailable')}")
    model, prov = kept["model"], kept["prov"]
    dcfg = DiffusionConfig(**prov["diffusion_config"])
    shape = (model.in_channels, model.input_size, model.input_size)
    dest = export_diffusion(model.cpu(), kept["stats"].to("cpu"), encoder, shape, dcfg, kept["curve"], dcfg.steps)
    shipped = run_generation(encoder, dataset, dataclasses.replace(cfg, train=False, retrain=False), device=device)
    if not str(shipped.get("diffusion_weights", "")).startswith("shipped:"):
        raise RuntimeError(f"the exported {dest} was not picked up for {args.encoder}: {shipped}")
    keys = ("fid", "kid", "precision", "recall")
    label = shipped["feature_network"]
    measured = {f"{k} ({label}), shipped fp16 weights, {shipped['num_samples']} samples": round(shipped[k], 4)
                for k in keys}
    measured |= {f"{k}, fp32 weights before export": round(metrics[k], 4) for k in keys}
    command = (f"svgbench train diffusion --encoder {args.encoder} --train-steps {cfg.train_steps} "
               f"--eval-every {cfg.eval_every} --export")
    from ..runner import device_name

    train_device = torch.device(device)
    hardware = "this CPU" if train_device.type == "cpu" else f"one {device_name(str(train_device))}"
    write_card(f"diffusion/{args.encoder}", prov["run_dir"], dest, command=command, curve_keys=["loss", "fid"],
               metrics=measured, hardware=hardware,
               description=(f"Flow-matching diffusion transformer ({dcfg.size}) on `{args.encoder}` latents "
                            f"{'x'.join(map(str, shape))}, class-conditional, EMA weights; judge-FID along training "
                            f"from {cfg.curve_samples} samples ({cfg.sampler}, {cfg.sample_steps} steps)."),
               notes=f"Shipped in fp16 ({dest.stat().st_size / 1e6:.1f} MB); the encoder weights it was trained on: "
                     f"{encoder.weights_hash()}. The generation task uses it only while that hash matches.")
    say(f"exported {dest} and its card")
