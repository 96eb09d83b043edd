"""Semantic segmentation with DINOv2's linear protocol on frozen patch tokens.

Protocol (DINOv2, "linear" ADE20K head, built from mmsegmentation's BaseDecodeHead as DINOv2's BNHead is):
- features: the encoder's frozen patch tokens, B x N x D, laid out on their B x D x h x w grid
  (h = H / spec.downsample, row-major token order), extracted once per split through svgbench.cache;
- head: BatchNorm (SyncBN over the global batch in DINOv2; plain BN here, one process) then a 1x1 conv
  to num_classes, conv initialised N(0, 0.01) with zero bias (mmseg's decode-head default);
- loss: logits bilinearly upsampled to the label size (mmseg `resize`, align_corners=False), mmseg's
  CrossEntropyLoss with ignore index 255 and its default averaging over all pixels (avg_non_ignore=False,
  as in DINOv2's config);
- optimisation: AdamW (betas 0.9/0.999, weight decay 1e-4), lr 1e-3 with mmcv's linear warmup (ratio 1e-6,
  DINOv2: 1500 of 40k iterations) and poly decay (power 1) to 0, global batch 16;
- evaluation: logits upsampled to the label size, argmax, mIoU / mAcc / aAcc via mmseg's IoU code
  (svgbench.metrics.segmentation).
Differences from DINOv2's ADE20K runs: images are the dataset's resolution x resolution centre crops,
there is no augmentation and no sliding-window inference, and training counts epochs over `train_size`
images rather than 40k iterations.

The head trains on a training split derived from the evaluation dataset's DataConfig
(`split=train_split`, `size=train_size`; shapes: "train", ADE20K layout: "training") and is evaluated
on the dataset passed in. CPU runs are bit-reproducible for a given seed; on CUDA the bilinear
upsampling's backward pass accumulates with atomics, so the last digits can vary between runs.
"""

from __future__ import annotations
# a change here that can move a number bumps VERSIONS["seg"] in svgbench/tasks/builtin.py

import functools
import math
import time
import warnings
from dataclasses import dataclass

import torch

from ..encoders.base import LatentEncoder
from ..metrics.segmentation import SegMetric, per_image_areas



@dataclass(frozen=True)
class SegConfig:
    """DINOv2 linear segmentation protocol; defaults follow DINOv2's ADE20K linear config where they apply.

    batch_size: images per encoder forward when extracting tokens (speed only).
    train_split: split of the training images; None: the dataset's training split (its DatasetSpec's).
    train_size: training images (also bounds memory: tokens and label maps are held in memory).
    epochs: passes over the training images; train_batch_size: images per optimiser step (DINOv2: 16).
    lr, weight_decay, warmup_frac: AdamW and its schedule (linear warmup over warmup_frac of the steps,
        then poly decay to 0).
    num_classes: None: from the dataset (shapes: 11 including background; ADE20K: 150).
    ignore_index: label value excluded from loss and metrics.
    """

    batch_size: int = 32
    train_split: str | None = None
    train_size: int = 2000
    epochs: int = 30
    train_batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 1500 / 40000
    seed: int = 0
    num_classes: int | None = None
    ignore_index: int = 255
    ci_resamples: int = 1000  # bootstrap resamples (images) for the mIoU / mAcc intervals
    max_area_values: int = 1_000_000  # per-image areas go into the record when images x classes <= this


# ------------------------------------------------------------------------------------------------
# Data: masks and token grids


def _num_classes(dataset, cfg: SegConfig) -> int:
    if cfg.num_classes is not None:
        return int(cfg.num_classes)
    from ..data.folders import SegFolderDataset
    from ..data.shapes import NUM_SEG_CLASSES, ShapesDataset

    # ShapesDataset.num_classes counts shape classes (its image labels); its masks add background.
    if isinstance(dataset, ShapesDataset):
        return NUM_SEG_CLASSES
    if isinstance(dataset, SegFolderDataset):
        return dataset.num_classes
    raise ValueError(f"cannot tell the number of segmentation classes of {type(dataset).__name__}: "
                     "set SegConfig.num_classes")


def train_dataset_for(dataset, cfg: SegConfig):
    """The training split that goes with evaluation `dataset` (built from its `data_config`)."""
    from ..data import build_dataset

    data = getattr(dataset, "data_config", None)
    if data is None:
        raise ValueError(f"{type(dataset).__name__} has no `data_config`: build it with "
                         "svgbench.data.build_dataset so the segmentation task can derive its training split")
    spec = data.spec()
    why = spec.lacks("masks") or (None if cfg.train_split else spec.lacks("train"))
    if why:
        raise ValueError(f"segmentation: {why}")
    split = cfg.train_split or spec.train_split
    if split == data.split:
        raise ValueError(f"the segmentation head would train and be evaluated on the same split {split!r}; "
                         f"evaluate on another split or set train_split")
    return build_dataset(data.replace(split=split, size=cfg.train_size))


def _masks(dataset, batch_size: int, num_classes: int, ignore_index: int) -> torch.Tensor:
    """uint8 N x H x W label maps (values < num_classes or ignore_index)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    out = []
    for batch in loader:
        if "mask" not in batch:
            raise ValueError(f"{type(dataset).__name__} items have no 'mask': segmentation needs per-pixel labels")
        m = batch["mask"]
        bad = (m != ignore_index) & ((m < 0) | (m >= num_classes))
        if bad.any():
            raise ValueError(f"mask values must be in 0..{num_classes - 1} or {ignore_index}; found "
                             f"{sorted(m[bad].unique().tolist())[:10]}")
        out.append(m.to(torch.uint8))
    if not out:
        raise ValueError("segmentation: the dataset is empty")
    return torch.cat(out)


def _token_grid(tokens: torch.Tensor, encoder: LatentEncoder, height: int, width: int) -> torch.Tensor:
    """N x T x D patch tokens -> N x D x h x w, h = height / downsample."""
    ds = encoder.spec.downsample
    h, w = height // ds, width // ds
    n, t, d = tokens.shape
    if t != h * w:
        raise ValueError(f"encoder {encoder.spec.name!r} gives {t} patch tokens for {height}x{width} images, but "
                         f"its spec.downsample={ds} implies a {h}x{w} grid ({h * w} tokens)")
    return tokens.transpose(1, 2).reshape(n, d, h, w)


def _patch_tokens(encoder, dataset, cfg: SegConfig, device: str, progress) -> torch.Tensor:
    """Patch tokens of `dataset`; progress(n) per batch, or, when None, a bar of its own (the training split)."""
    from ..cache import cached_features
    from ..metrics.probe import phase_bar

    if progress is None:
        with phase_bar(f"{encoder.spec.name}: seg training tokens", len(dataset), "img") as bar:
            return cached_features(encoder, dataset, kind="patch", batch_size=cfg.batch_size, device=device,
                                   progress=bar.update).features

    return cached_features(encoder, dataset, kind="patch", batch_size=cfg.batch_size, device=device,
                           progress=progress).features


# ------------------------------------------------------------------------------------------------
# Head


@functools.cache
def _head_class():
    from ..metrics._mmcv_guard import import_mmseg_models

    import_mmseg_models()
    from mmengine.model.weight_init import normal_init
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead

    class LinearBNHead(BaseDecodeHead):
        """DINOv2's BNHead for one feature map: BN over the tokens' channels, then cls_seg (1x1 conv)."""

        def __init__(self, in_channels: int, num_classes: int, ignore_index: int):
            with warnings.catch_warnings():
                # mmseg's own deprecation notice for its internal build_loss call, and its reminder that
                # avg_non_ignore defaults to False: DINOv2 trains with that default, kept on purpose.
                warnings.filterwarnings("ignore", message=r"``build_loss`` would be deprecated")
                warnings.filterwarnings("ignore", message=r"Default ``avg_non_ignore`` is False")
                super().__init__(in_channels=in_channels, channels=in_channels, num_classes=num_classes,
                                 dropout_ratio=0.0, ignore_index=ignore_index, align_corners=False,
                                 loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
            self.bn = torch.nn.BatchNorm2d(in_channels)
            # mmseg's init_cfg for decode heads, applied without mmengine's logging init_weights().
            normal_init(self.conv_seg, mean=0, std=0.01, bias=0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.cls_seg(self.bn(x))

    return LinearBNHead


def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
    from mmseg.models.utils import resize

    return resize(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _lr_factor(step: int, total: int, warmup: int, warmup_ratio: float = 1e-6, power: float = 1.0) -> float:
    """mmcv's poly schedule (min_lr 0) with linear warmup, as a multiple of the base lr."""
    factor = (1 - step / total) ** power
    if step < warmup:
        factor *= 1 - (1 - step / warmup) * (1 - warmup_ratio)
    return factor


def _train_head(feats: torch.Tensor, masks: torch.Tensor, num_classes: int, cfg: SegConfig, device: str,
                progress: str | None = None):
    """-> (trained head in eval mode, final-epoch mean loss). feats N x D x h x w, masks N x H x W uint8.
    progress: the description of a bar over the optimiser steps (on a terminal only), or None."""
    from ..metrics.probe import phase_bar

    n = feats.shape[0]
    bs = min(cfg.train_batch_size, n)
    steps_per_epoch = n // bs  # full batches only: every BN step sees the same batch size
    total = max(1, cfg.epochs * steps_per_epoch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head = _head_class()(feats.shape[1], num_classes, cfg.ignore_index)
    head = head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, warmup))
    gen = torch.Generator().manual_seed(cfg.seed)
    epoch_loss = math.nan
    bar = phase_bar(progress, total, "step")
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        losses = []
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            x = feats[idx].to(device, non_blocking=True)
            y = masks[idx].to(device, non_blocking=True).long()
            logits = _upsample(head(x), y.shape[-2:])
            loss = head.loss_decode(logits, y, ignore_index=cfg.ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            bar.update(1)
        epoch_loss = float(torch.stack(losses).mean())
        bar.set_postfix(loss=f"{epoch_loss:.3f}", refresh=False)
        if not math.isfinite(epoch_loss):
            break
    bar.close()
    return head.eval(), epoch_loss


@torch.no_grad()
def _evaluate(head, feats: torch.Tensor, masks: torch.Tensor, num_classes: int, cfg: SegConfig,
              device: str) -> dict:
    """-> SegMetric.compute()'s dict plus "areas": per-image {"intersect", "union", "label"} N x C counts."""
    metric = SegMetric(num_classes, cfg.ignore_index)
    areas = []
    for i in range(0, feats.shape[0], cfg.batch_size):
        x = feats[i:i + cfg.batch_size].to(device)
        y = masks[i:i + cfg.batch_size]
        pred = _upsample(head(x), y.shape[-2:]).argmax(1).cpu()
        metric.update(pred, y.long())
        areas.append(per_image_areas(pred, y.long(), num_classes, cfg.ignore_index))
    import numpy as np

    return metric.compute() | {"areas": {k: np.concatenate([a[k] for a in areas]) for k in areas[0]}}


def _intervals(out: dict, areas: dict, cfg: SegConfig) -> None:
    """ci["miou"], ci["macc"] by resampling images (svgbench.metrics.stats.seg_ci) and, when small enough,
    the per-image areas a paired comparison needs (metrics["per_image_areas"])."""
    from ..metrics.stats import ci_entry, seg_ci

    n, c = areas["intersect"].shape
    if n >= 2:
        res = seg_ci(areas["intersect"], areas["union"], areas["label"], n_resamples=cfg.ci_resamples, seed=cfg.seed)
        out["ci"] = {k: ci_entry(res[k]) for k in ("miou", "macc")}
    else:
        out["unavailable"]["ci"] = "an interval needs at least 2 evaluation images"
    if n * c <= cfg.max_area_values:
        out["per_image_areas"] = {k: v.tolist() for k, v in areas.items()}
    else:
        out["unavailable"]["per_image_areas"] = (f"{n} images x {c} classes > max_area_values={cfg.max_area_values}: "
                                                 "per-image areas not stored (no paired seg comparison)")


# ------------------------------------------------------------------------------------------------
# Task


def _not_available(reason: str, num_images: int, num_classes: int) -> dict:
    return {"miou": None, "macc": None, "aacc": None, "num_images": num_images, "num_classes": num_classes,
            "train_images": None, "train_s": None,
            "unavailable": {m: reason for m in ("miou", "macc", "aacc")}}


def _nonfinite(name: str, split: str, t: torch.Tensor) -> str | None:
    bad = int((~torch.isfinite(t)).sum())
    if bad == 0:
        return None
    return f"encoder {name!r} gives non-finite patch tokens on the {split} split ({bad} of {t.numel()} values)"


def run_segmentation(encoder: LatentEncoder, dataset, cfg: SegConfig = SegConfig(), device: str = "cpu",
                     progress=None, train_dataset=None) -> dict:
    """Train the linear head on the training split, evaluate on `dataset`.

    -> {"miou", "macc", "aacc": percent (mmseg's definitions, see svgbench.metrics.segmentation),
        "num_images": evaluation images, "num_classes", "train_images", "train_s": seconds training the head
        (token extraction excluded), "unavailable": metric -> reason, "ci": {"miou", "macc"} bootstrap
        intervals over images, "per_image_areas": {"intersect", "union", "label"} N x C lists, "stats_s"}.
    Metrics are None, with the reason under "unavailable", when the encoder's tokens are non-finite or the
    head's training loss diverges. `train_dataset` replaces the derived training split (it must have
    `data_config` for the feature cache). `progress(n)` counts evaluation images as their tokens are read.
    """
    if cfg.epochs < 1 or cfg.train_batch_size < 1 or cfg.batch_size < 1:
        raise ValueError(f"epochs, train_batch_size and batch_size must be >= 1, got {cfg}")
    train_ds = train_dataset if train_dataset is not None else train_dataset_for(dataset, cfg)
    num_classes = _num_classes(dataset, cfg)
    if not 2 <= num_classes <= 255 or 0 <= cfg.ignore_index < num_classes:
        raise ValueError(f"num_classes must be in 2..255 and ignore_index ({cfg.ignore_index}) outside "
                         f"0..num_classes-1; got num_classes={num_classes}")
    name = encoder.spec.name
    encoder = encoder.to(device).eval()

    eval_masks = _masks(dataset, cfg.batch_size, num_classes, cfg.ignore_index)
    train_masks = _masks(train_ds, cfg.batch_size, num_classes, cfg.ignore_index)
    n_eval = eval_masks.shape[0]
    train_tokens = _patch_tokens(encoder, train_ds, cfg, device, None)
    eval_tokens = _patch_tokens(encoder, dataset, cfg, device, progress)
    for split, tokens in (("training", train_tokens), ("evaluation", eval_tokens)):
        why = _nonfinite(name, split, tokens)
        if why:
            return _not_available(why, n_eval, num_classes)
    train_feats = _token_grid(train_tokens, encoder, *train_masks.shape[-2:])
    eval_feats = _token_grid(eval_tokens, encoder, *eval_masks.shape[-2:])

    _head_class()  # mmseg import outside the timed region
    t0 = time.perf_counter()
    head, final_loss = _train_head(train_feats, train_masks, num_classes, cfg, device,
                                   progress=f"{name}: seg head")
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    if not math.isfinite(final_loss):
        return _not_available(f"the linear head's training loss diverged ({final_loss}) on {name!r}'s tokens",
                              n_eval, num_classes)
    m = _evaluate(head, eval_feats, eval_masks, num_classes, cfg, device)
    out = {"miou": m["miou"], "macc": m["macc"], "aacc": m["aacc"], "num_images": n_eval,
           "num_classes": num_classes, "train_images": train_feats.shape[0], "train_s": train_s,
           "unavailable": {}}
    t0 = time.perf_counter()
    _intervals(out, m["areas"], cfg)
    out["stats_s"] = time.perf_counter() - t0
    return out
