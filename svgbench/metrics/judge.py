"""The shapes judge: the feature network of FID/KID/precision-recall on the embedded default.

No Inception weights exist offline, so svgbench trains its own judge: a supervised convnet classifier of
the shape class (the role Inception-v3, trained on ImageNet labels, plays for ImageNet FID). It is
independent of every encoder being compared: its own architecture, its own training seed, labels
instead of self-supervision. It is registered in torch-fidelity's feature-extractor registry as
`svgbench-shapes-judge`, and every table labels its metrics as judge-FID, never as Inception FID.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

JUDGE_NAME = "svgbench-shapes-judge"
EMBEDDED = Path(__file__).resolve().parent.parent / "weights" / "shapes-judge.safetensors"


class ShapesJudge(nn.Module):
    """uint8 or [-1, 1] float images B x 3 x H x W -> 256-d features (GAP of a 4-stage BN-ReLU convnet) -> logits."""

    feature_dim = 256

    def __init__(self, num_classes: int = 10, resolution: int = 64):
        super().__init__()
        chans, layers, c_in = (32, 64, 128, 256), [], 3
        for c in chans:
            layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], num_classes)
        self.resolution = resolution

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x)).mean((2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def load_judge(path: str | Path | None = None) -> ShapesJudge:
    from ..checkpoints import CheckpointError, check_and_load, load_state_dict

    path = Path(path) if path else EMBEDDED
    if not path.exists():
        raise CheckpointError(f"the shapes judge's weights {path} are missing: train them with "
                              f"`svgbench train judge` (judge-FID needs them)")
    judge = ShapesJudge()
    check_and_load(judge, load_state_dict(path), source=str(path))
    return judge.eval().requires_grad_(False)


def judge_available(path: str | Path | None = None) -> bool:
    return Path(path or EMBEDDED).exists()


def register_judge() -> str:
    """Register the judge with torch-fidelity (once per process); returns its extractor name."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if JUDGE_NAME in FEATURE_EXTRACTORS_REGISTRY:
        return JUDGE_NAME

    class JudgeExtractor(FeatureExtractorBase):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.judge = load_judge(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return ("judge",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "judge"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

        def forward(self, x):
            return (self.judge.features(x).double(),)

    register_feature_extractor(JUDGE_NAME, JudgeExtractor)
    return JUDGE_NAME


# ---------------------------------------------------------------------------------------------
# training: `svgbench train judge`
# ---------------------------------------------------------------------------------------------

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
    from ..train.common import TrainResult, cosine, resume, rng_state, start_run, step_generator

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
    from ..train.common import RunDir

    state = RunDir(cfg.out).load()
    if state is None:
        raise FileNotFoundError(f"no judge checkpoint under {cfg.out}")
    save_safetensors(state["model"], dest, metadata={"format": "svgbench.judge", "step": str(state["step"])})


def main(argv=None) -> None:
    import argparse

    from ..train.common import add_config_args, config_from_args

    p = argparse.ArgumentParser("svgbench train judge")
    p.add_argument("--export", metavar="DEST", nargs="?", const=str(EMBEDDED))
    add_config_args(p, JudgeConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(JudgeConfig(), args)
    if args.export:
        export_judge(cfg, args.export)
        return
    train_judge(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
