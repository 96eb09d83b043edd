"""`svgbench train dino` (alias `ssl`): DINO self-distillation (Caron et al., 2021) or SimCLR on a timm ViT or convnet.

Student and EMA teacher share the backbone architecture of a DINO preset (svgbench.encoders.dino)
and a DINO head (MLP -> l2-normalised bottleneck -> weight-normalised prototypes). The teacher's
softmax is centred (running mean) and sharpened (teacher temperature); the student learns to match
it across views. Presets:
- `tiny`: the embedded default's `tiny-ssl` at 64 px on the procedural shapes, with SimCLR (InfoNCE)
  instead of self-distillation, which stayed at chance at this budget. Views are the item's object
  re-drawn on two independent random backgrounds with its own rotation, position and size per view
  (`render_views(repose=True)`, a data-side prior: the generator knows the object), followed by the
  standard random-resized-crop / flip / rot90 / colour-jitter augmentations; the head reads mean-pooled
  patch tokens (the tokens are the latent that SVG builds on). `tiny-dino`: the DINO objective on the
  same data, for comparison.
- `imagenet`: the published recipe's shape for a user with GPUs (ViT-S/16, 2 x 224 global + 8 x 96
  local crops, 65536 prototypes, teacher-temperature warm-up), on an ImageNet-layout folder.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import EMBEDDED_DATA, dataset_spec
from .common import (RunDir, TrainResult, add_config_args, all_reduce_mean, config_from_args, cosine, is_main,
                    prefetch, resume, rng_state, start_run, step_generator, unwrap)


@dataclass
class DinoConfig:
    objective: str = "dino"  # "dino" (self-distillation) or "simclr" (InfoNCE between the two views)
    simclr_temp: float = 0.2
    encoder: str = "tiny-ssl"
    data: str = EMBEDDED_DATA
    data_root: str | None = None
    resolution: int = 64
    views: str = "swap"  # "swap": object on independent backgrounds; "swap-repose": also re-posed per view
    # (rotation, position, size +-20%) -- both shapes-only data-side priors; "crops": standard crops
    global_crop_scale: tuple[float, float] = (0.6, 1.0)
    n_local: int = 0
    local_size: int = 32
    local_crop_scale: tuple[float, float] = (0.2, 0.6)
    pool: str = "mean"  # head input: "mean" patch tokens or "cls"
    hue: float = 0.5  # colour-jitter hue range; the full circle, so that object colour is no shortcut
    dihedral: bool = True  # random 90-degree rotations and flips (the shapes have no canonical pose)
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3  # at batch 256 (scaled linearly)
    min_lr: float = 1e-5
    warmup: int = 200
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    momentum: float = 0.99
    momentum_end: float = 1.0
    out_dim: int = 1024
    head_hidden: int = 512
    head_bottleneck: int = 128
    head_bn: bool = True
    teacher_temp: float = 0.04
    teacher_temp_start: float = 0.04
    teacher_temp_warmup: int = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    freeze_last_layer: int = 100
    clip_grad: float = 3.0
    seed: int = 0
    probe_every: int = 250
    probe_train: int = 2000
    probe_val: int = 1000
    ckpt_every: int = 100
    data_workers: int = 1
    out: str = "runs/tiny-ssl"
    threads: int | None = None


TRAIN_PRESETS = {
    # The embedded default's tiny-ssl. DINO self-distillation stayed at chance on this CPU budget (a conv-stem
    # ViT and this convnet, background-swap views); SimCLR on re-posed background-swap views learns the shapes.
    "tiny": DinoConfig(objective="simclr", views="swap-repose", batch_size=128, lr=2e-3, steps=3000,
                       probe_every=250, out="runs/tiny-ssl"),
    "tiny-dino": DinoConfig(out="runs/tiny-dino"),
    "imagenet": DinoConfig(encoder="dinov3-vits16plus", data="imagefolder", resolution=224, views="crops",
                           global_crop_scale=(0.32, 1.0), n_local=8, local_size=96, local_crop_scale=(0.05, 0.32),
                           pool="cls", hue=0.1, dihedral=False, steps=125_000, batch_size=1024, lr=5e-4, min_lr=1e-6, warmup=12_500,
                           weight_decay_end=0.4, momentum=0.996, out_dim=65536, head_hidden=2048,
                           head_bottleneck=256, head_bn=False, teacher_temp=0.07, teacher_temp_start=0.04,
                           teacher_temp_warmup=37_500, freeze_last_layer=1250, probe_every=0,
                           out="runs/dino-vits16"),
}


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------

class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden, bottleneck, use_bn):
        super().__init__()
        layers = []
        dims = [in_dim, hidden, hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if use_bn else []) + [nn.GELU()]
        layers.append(nn.Linear(hidden, bottleneck))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DINOModel(nn.Module):
    def __init__(self, backbone, head, pool):
        super().__init__()
        self.backbone, self.head, self.pool = backbone, head, pool

    def embed(self, x):
        t = self.backbone.forward_features(x)
        p = self.backbone.num_prefix_tokens
        return t[:, p:].mean(1) if self.pool == "mean" else t[:, 0]

    def forward(self, crops: list[torch.Tensor], contrastive: bool = False):
        if contrastive:  # SimCLR: the l2-normalised bottleneck of the two global views
            return F.normalize(self.head.mlp(self.embed(torch.cat(crops[:2]))), dim=-1)
        # crops of one size go through the backbone together
        out, i = [], 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            out.append(self.embed(torch.cat(crops[i:j])))
            i = j
        return self.head(torch.cat(out))


class DINOLoss(nn.Module):
    def __init__(self, out_dim, n_global, student_temp, center_momentum):
        super().__init__()
        self.n_global, self.student_temp, self.m = n_global, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out, teacher_out, teacher_temp, n_crops):
        s = (student_out / self.student_temp).chunk(n_crops)
        t = F.softmax((teacher_out - self.center) / teacher_temp, dim=-1).detach().chunk(self.n_global)
        total, terms = 0.0, 0
        for iq, q in enumerate(t):
            for v, sv in enumerate(s):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(sv, dim=-1), dim=-1).mean()
                terms += 1
        self.update_center(teacher_out)
        return total / terms

    @torch.no_grad()
    def update_center(self, teacher_out):
        batch_center = all_reduce_mean(teacher_out.mean(0, keepdim=True))
        self.center.mul_(self.m).add_(batch_center * (1 - self.m))


def info_nce(z: torch.Tensor, temp: float) -> torch.Tensor:
    """SimCLR's NT-Xent: z = l2-normalised embeddings of view 1 then view 2; each view's positive is its pair."""
    n = z.shape[0] // 2
    sim = z @ z.T / temp
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


# ---------------------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------------------

def _augment(img: torch.Tensor, size: int, scale, g: torch.Generator, hue_range: float = 0.1,
             dihedral: bool = False) -> torch.Tensor:
    """uint8 3 x H x W -> float [-1, 1] 3 x size x size: random resized crop, flip, colour jitter, grey."""
    import torchvision.transforms.v2.functional as TF

    H = img.shape[-1]
    area = H * H * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
    logr = float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g))
    w = int(round(math.sqrt(area * math.exp(logr))))
    h = int(round(math.sqrt(area / math.exp(logr))))
    w, h = min(max(w, 8), H), min(max(h, 8), H)
    top = int(torch.randint(0, H - h + 1, (1,), generator=g))
    left = int(torch.randint(0, H - w + 1, (1,), generator=g))
    x = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    if torch.rand(1, generator=g) < 0.5:
        x = TF.horizontal_flip(x)
    if dihedral:
        x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=g)), dims=(-2, -1))
    x = x.float() / 255.0
    if torch.rand(1, generator=g) < 0.8:
        b, c, s = (float(torch.empty(1).uniform_(0.6, 1.4, generator=g)) for _ in range(3))
        hue = float(torch.empty(1).uniform_(-hue_range, hue_range, generator=g))
        x = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s), hue)
    if torch.rand(1, generator=g) < 0.2:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    return x.clamp(0, 1) * 2 - 1


class ViewSource:
    """Batches of global (and local) views for one step, a function of (seed, step, rank)."""

    def __init__(self, cfg: DinoConfig):
        self.cfg = cfg
        spec = dataset_spec(cfg.data)
        self.renderer = spec.view_renderer(cfg.resolution, cfg.seed) if spec.views is not None else None
        if self.renderer is None:
            if cfg.views != "crops":
                raise ValueError(f"DinoConfig.views={cfg.views!r} needs data that redraws its objects "
                                 f"(DatasetSpec.views); data {cfg.data!r} has none: use views='crops'")
            from ..data.folders import ImageFolderDataset

            self.folder = ImageFolderDataset(cfg.data_root, cfg.resolution, split="train", convert_mode=True)

    def _images(self, idx: int, step: int) -> list[torch.Tensor]:
        if self.renderer is not None:
            if self.cfg.views in ("swap", "swap-repose"):
                views = self.renderer.views(idx, 2, view_seed=step, repose=self.cfg.views == "swap-repose")
            else:
                views = [self.renderer.item(idx)] * 2
            return [torch.from_numpy(v).permute(2, 0, 1) for v in views]
        img = ((self.folder[idx % len(self.folder)]["image"] + 1) * 127.5).round().to(torch.uint8)
        return [img, img]

    def batch(self, step: int, rank: int, batch_size: int) -> list[torch.Tensor]:
        g = step_generator(self.cfg.seed, step, rank)
        n = len(self.folder) if self.renderer is None else self.renderer.size
        idx = torch.randint(0, n, (batch_size,), generator=g).tolist()
        crops = [[] for _ in range(2 + self.cfg.n_local)]
        for i in idx:
            a, b = self._images(i, step)
            aug = dict(g=g, hue_range=self.cfg.hue, dihedral=self.cfg.dihedral)
            crops[0].append(_augment(a, self.cfg.resolution, self.cfg.global_crop_scale, **aug))
            crops[1].append(_augment(b, self.cfg.resolution, self.cfg.global_crop_scale, **aug))
            for k in range(self.cfg.n_local):
                crops[2 + k].append(_augment(a if k % 2 == 0 else b, self.cfg.local_size,
                                             self.cfg.local_crop_scale, **aug))
        return [torch.stack(c) for c in crops]


# ---------------------------------------------------------------------------------------------
# probe (the training curve): linear probe and kNN on mean patch tokens, shapes train -> val
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def probe_backbone(backbone, resolution: int, n_train: int, n_val: int, device, spec) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for split, n in (("train", n_train), ("val", n_val)):
        arr = spec.read_arrays(resolution, split, n)
        x = torch.from_numpy(arr["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        from ..encoders.base import to_imagenet_normalized

        out = []
        for i in range(0, n, 256):
            t = backbone.forward_features(to_imagenet_normalized(x[i:i + 256].to(device)))
            out.append(t[:, backbone.num_prefix_tokens:].mean(1).cpu())
        feats.append(torch.cat(out).numpy())
        labels.append(arr["labels"])
    backbone.train(was_training)
    scaler = StandardScaler().fit(feats[0])
    ftr, fva = scaler.transform(feats[0]), scaler.transform(feats[1])
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(ftr, labels[0])
    # kNN (k=20, cosine, T=0.07 weighting) as in DINO
    a = torch.nn.functional.normalize(torch.from_numpy(feats[1]), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(feats[0]), dim=1)
    sim, nn_idx = (a @ b.T).topk(20, dim=1)
    votes = torch.zeros(len(a), 10).scatter_add_(1, torch.from_numpy(labels[0])[nn_idx], (sim / 0.07).exp())
    knn = float((votes.argmax(1).numpy() == labels[1]).mean())
    return {"probe_top1": float(clf.score(fva, labels[1])), "knn_top1": knn}


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------

def build(cfg: DinoConfig):
    from ..encoders.dino import ENCODER_CONFIGS as DINO_CONFIGS
    from ..encoders.dino import build_timm_dino

    preset = DINO_CONFIGS[cfg.encoder]
    student_bb = build_timm_dino(preset, cfg.resolution)
    dim = student_bb.embed_dim
    student = DINOModel(student_bb, DINOHead(dim, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck, cfg.head_bn),
                        cfg.pool)
    teacher = copy.deepcopy(student).requires_grad_(False)
    return student, teacher


def train_dino(cfg: DinoConfig, log=print, on_step=None) -> TrainResult:
    """Run (or resume) DINO / SimCLR training; the result's model is the teacher (EMA), whose backbone is exported."""
    run, rank, world, device = start_run(cfg)
    student, teacher = build(cfg)
    student.to(device)
    teacher.to(device)
    params_reg = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim > 1]
    params_noreg = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": params_reg}, {"params": params_noreg, "weight_decay": 0.0}], lr=cfg.lr)
    loss_fn = DINOLoss(cfg.out_dim, 2, cfg.student_temp, cfg.center_momentum).to(device)
    start, state = resume(run, {"student": student, "teacher": teacher, "opt": opt}, log)
    if state is not None:
        loss_fn.center.copy_(state["center"])
    model = student
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(student)
    views = ViewSource(cfg)
    probe_spec = dataset_spec(cfg.data)  # the training-time probe reads a whole split in memory (spec.arrays)
    n_crops = 2 + cfg.n_local
    lr_peak = cfg.lr * cfg.batch_size * world / 256
    last = {}
    t0 = time.perf_counter()
    batches = prefetch(lambda st: views.batch(st, rank, cfg.batch_size), start, cfg.steps, cfg.data_workers)
    for step in range(start, cfg.steps):
        lr = cosine(step, cfg.steps, lr_peak, cfg.min_lr, cfg.warmup)
        wd = cosine(step, cfg.steps, cfg.weight_decay_end, cfg.weight_decay)  # rises: start/end swapped
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lr
            if i == 0:
                group["weight_decay"] = wd
        m = cosine(step, cfg.steps, cfg.momentum_end, cfg.momentum)
        t_temp = (cfg.teacher_temp_start + (cfg.teacher_temp - cfg.teacher_temp_start) * step / cfg.teacher_temp_warmup
                  if step < cfg.teacher_temp_warmup else cfg.teacher_temp)
        crops = [c.to(device, non_blocking=True) for c in next(batches)]
        from ..encoders.base import to_imagenet_normalized

        crops = [to_imagenet_normalized(c) for c in crops]
        t_out = None
        if cfg.objective == "simclr":
            loss = info_nce(model(crops, contrastive=True), cfg.simclr_temp)
        else:
            with torch.no_grad():
                t_out = teacher(crops[:2])
            loss = loss_fn(model(crops), t_out, t_temp, n_crops)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"DINO loss is {loss.item()} at step {step}; lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_(student.parameters(), cfg.clip_grad)
        if step < cfg.freeze_last_layer:
            for p in student.head.last_layer.parameters():
                p.grad = None
        opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            for bs, bt in zip(student.buffers(), teacher.buffers()):
                bt.copy_(bs)
        done = step + 1
        if is_main():
            row = {"step": done, "loss": round(loss.item(), 5), "lr": lr, "wall_s": round(time.perf_counter() - t0, 1)}
            if t_out is not None:  # DINO: how peaked the centred teacher is (collapse -> 0 or log K)
                tp = F.log_softmax((t_out - loss_fn.center) / t_temp, -1)
                row["teacher_entropy"] = round(float(-(tp.exp() * tp).sum(-1).mean()), 4)
            probe_now = cfg.probe_every and (done % cfg.probe_every == 0 or done == cfg.steps)
            if probe_now and probe_spec.arrays is not None:
                row |= probe_backbone(unwrap(teacher).backbone, cfg.resolution, cfg.probe_train, cfg.probe_val, device,
                                      probe_spec)
            if done % 20 == 0 or "probe_top1" in row:
                run.log(row)
                log(" ".join(f"{k}={v}" for k, v in row.items()))
            last = row
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                run.save({"student": student.state_dict(), "teacher": teacher.state_dict(), "opt": opt.state_dict(),
                          "center": loss_fn.center, "rng": rng_state(), "step": done})
        if on_step is not None:  # after the step's checkpoint: tests interrupt runs here
            on_step(done)
    return TrainResult(last, teacher)


def export_backbone(run_dir: str, dest: str, encoder: str = "tiny-ssl") -> None:
    """The teacher backbone of a finished run -> the DINO preset's safetensors (timm layout)."""
    from ..checkpoints import save_safetensors

    state = RunDir(run_dir).load()
    if state is None:
        raise FileNotFoundError(f"no checkpoint under {run_dir}")
    bb = {k[len("backbone."):]: v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    save_safetensors(bb, dest, metadata={"format": "svgbench.dino", "encoder": encoder, "step": str(state["step"])})


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser("svgbench train dino")
    p.add_argument("--preset", default="tiny", choices=sorted(TRAIN_PRESETS))
    p.add_argument("--export", metavar="DEST", help="export the run's teacher backbone instead of training")
    add_config_args(p, DinoConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(TRAIN_PRESETS[args.preset], args)
    if args.export:
        export_backbone(cfg.out, args.export, cfg.encoder)
        return
    train_dino(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
