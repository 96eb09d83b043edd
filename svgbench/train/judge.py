"""Training the shapes judge (`svgbench train judge`): a supervised classifier of the shape class, the feature
network of svgbench's judge-FID (svgbench.metrics.judge holds the network and its torch-fidelity extractor)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..metrics.judge import EMBEDDED, ShapesJudge
from .common import RunDir, TrainResult, add_config_args, config_from_args, cosine, resume, rng_state, start_run, step_generator

@dataclass
class JudgeConfig:
    resolution: int = 64
    train_images: int = 50_000
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 1  # not the encoders' seed: the judge sees its own draw of the training split
    eval_every: int = 250
    eval_images: int = 2000
    out: str = "runs/shapes-judge"
    threads: int | None = None


def train_judge(cfg: JudgeConfig, log=print, on_step=None):
    from ..data.shapes import ShapesConfig, data_cache_dir, shapes_arrays

    run, _, _, _ = start_run(cfg)
    tr = shapes_arrays(ShapesConfig(resolution=cfg.resolution, split="judge-train", size=cfg.train_images,
                                    seed=cfg.seed), workers=2, cache_dir=data_cache_dir())
    va = shapes_arrays(ShapesConfig(resolution=cfg.resolution, split="val", size=cfg.eval_images))
    X, Y = torch.from_numpy(tr["images"]).permute(0, 3, 1, 2), torch.from_numpy(tr["labels"])
    Xv, Yv = torch.from_numpy(va["images"]).permute(0, 3, 1, 2), torch.from_numpy(va["labels"])
    judge = ShapesJudge(resolution=cfg.resolution)
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, _ = resume(run, {"model": judge, "opt": opt}, log)
    t0 = time.perf_counter()
    row = {}
    for step in range(start, cfg.steps):
        g = step_generator(cfg.seed, step)
        idx = torch.randint(0, X.shape[0], (cfg.batch_size,), generator=g)
        x = X[idx]
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        for group in opt.param_groups:
            group["lr"] = cosine(step, cfg.steps, cfg.lr, cfg.lr * 0.01, warmup=100)
        loss = F.cross_entropy(judge(x), Y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        row = {"step": done, "loss": round(loss.item(), 4), "wall_s": round(time.perf_counter() - t0, 1)}
        if done % cfg.eval_every == 0 or done == cfg.steps:
            judge.eval()
            with torch.no_grad():
                pred = torch.cat([judge(Xv[i:i + 500]).argmax(1) for i in range(0, Xv.shape[0], 500)])
            judge.train()
            row["val_top1"] = round(float((pred == Yv).float().mean()), 4)
        if done % 50 == 0 or "val_top1" in row:
            run.log(row)
            log(" ".join(f"{k}={v}" for k, v in row.items()))
        if done % 100 == 0 or done == cfg.steps:
            run.save({"model": judge.state_dict(), "opt": opt.state_dict(), "rng": rng_state(), "step": done})
        if on_step is not None:
            on_step(done)
    return TrainResult(row, judge.eval())


def export_judge(cfg: JudgeConfig, dest: str | Path = EMBEDDED) -> None:
    from ..checkpoints import save_safetensors

    state = RunDir(cfg.out).load()
    if state is None:
        raise FileNotFoundError(f"no judge checkpoint under {cfg.out}")
    save_safetensors(state["model"], dest, metadata={"format": "svgbench.judge", "step": str(state["step"])})


def main(argv=None) -> None:
    import argparse


    p = argparse.ArgumentParser("svgbench train judge")
    p.add_argument("--export", metavar="DEST", nargs="?", const=str(EMBEDDED))
    add_config_args(p, JudgeConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(JudgeConfig(), args)
    if args.export:
        export_judge(cfg, args.export)
        return
    train_judge(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))

