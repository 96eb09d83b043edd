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

import torch

from ..diffusion.store import DiffusionConfig, build_diffusion_model
from .common import TrainResult, is_main, resume, rng_state, start_run, step_generator


ON_DEVICE_BYTES = 8 << 30  # latent sets up to this size are moved to the GPU once instead of per batch


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
