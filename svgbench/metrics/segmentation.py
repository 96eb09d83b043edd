"""Semantic-segmentation metrics: mIoU, mAcc and aAcc as mmsegmentation computes them.

`SegMetric` accumulates mmseg's per-class areas (`IoUMetric.intersect_and_union`, then
`IoUMetric.total_area_to_metrics`) over batches. `confusion_matrix` / `metrics_from_confusion` are an
independent bincount implementation of the same definitions, kept for cross-checking.

Definitions (pixels whose label is `ignore_index` are dropped first; class c over all images):
- IoU_c = |pred = c and label = c| / |pred = c or label = c|
- Acc_c = |pred = c and label = c| / |label = c|
- aAcc = |pred = label| / |labelled pixels|
- mIoU, mAcc = nanmean over classes.

Absent classes follow mmseg: a class that appears in neither predictions nor labels has IoU 0/0 = NaN
and is left out of mIoU; a class absent from the labels has Acc NaN and is left out of mAcc (even if it
is predicted; a predicted-but-absent class still has IoU 0 and lowers mIoU). Values are fractions in
[0, 1] in the per-class lists and percentages in "miou" / "macc" / "aacc" (mmseg logs the same
percentages rounded to 2 decimals; these are not rounded).
"""

from __future__ import annotations

import math

import numpy as np
import torch

IGNORE_INDEX = 255
# torch.histc counts in float32, exact up to 2**24 per call; larger inputs are split.
_HISTC_EXACT = 2**24


def _as_long_tensor(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer class ids, got dtype {t.dtype}")
    return t.long()


def _check_pair(pred, label, num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    pred = _as_long_tensor(pred, "pred")
    label = _as_long_tensor(label, "label").to(pred.device)
    if pred.shape != label.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and label {tuple(label.shape)} must have the same shape")
    valid = label != ignore_index
    bad = valid & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise ValueError(f"label values must be in 0..{num_classes - 1} or {ignore_index} (ignore); "
                         f"found {sorted(set(label[bad].unique().tolist()))[:10]}")
    bad = valid & ((pred < 0) | (pred >= num_classes))
    if bad.any():
        raise ValueError(f"predicted class ids must be in 0..{num_classes - 1}; "
                         f"found {sorted(set(pred[bad].unique().tolist()))[:10]}")
    return pred, label


class SegMetric:
    """mIoU / mAcc / aAcc accumulated over batches with mmseg's IoUMetric helpers.

    `update(pred, label)` takes integer class maps of the same shape (H x W, or B x H x W);
    label pixels equal to `ignore_index` are skipped. Areas are summed in float64 so large datasets
    count exactly. `compute()` -> {"miou", "macc", "aacc" (percent), "iou", "acc" (per-class
    fractions, NaN where undefined), "num_pixels" (labelled pixels)}.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with class ids 0..{num_classes - 1}")
        from mmseg.evaluation.metrics.iou_metric import IoUMetric

        self._iou = IoUMetric
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.areas = [torch.zeros(self.num_classes, dtype=torch.float64) for _ in range(4)]

    def update(self, pred, label) -> None:
        pred, label = _check_pair(pred, label, self.num_classes, self.ignore_index)
        pred, label = pred.reshape(-1), label.reshape(-1)
        for start in range(0, pred.numel(), _HISTC_EXACT):
            stop = start + _HISTC_EXACT
            chunk = self._iou.intersect_and_union(pred[start:stop], label[start:stop], self.num_classes,
                                                  self.ignore_index)
            for total, area in zip(self.areas, chunk):
                total += area.double()

    def compute(self) -> dict:
        intersect, union, pred_area, label_area = self.areas
        if label_area.sum() == 0:
            raise ValueError("no labelled pixels: every label pixel was the ignore index (or nothing was added)")
        m = self._iou.total_area_to_metrics(intersect, union, pred_area, label_area, metrics=["mIoU"])
        return _summary(np.asarray(m["IoU"], dtype=np.float64), np.asarray(m["Acc"], dtype=np.float64),
                        float(m["aAcc"]), int(label_area.sum()))


def _summary(iou: np.ndarray, acc: np.ndarray, aacc: float, num_pixels: int) -> dict:
    def nanmean_pct(x):
        return float(np.nanmean(x) * 100) if np.isfinite(x).any() else math.nan

    return {"miou": nanmean_pct(iou), "macc": nanmean_pct(acc), "aacc": aacc * 100,
            "iou": iou.tolist(), "acc": acc.tolist(), "num_pixels": num_pixels}


def confusion_matrix(pred, label, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 num_classes x num_classes matrix, rows = label class, columns = predicted class."""
    pred, label = _check_pair(pred, label, num_classes, ignore_index)
    valid = label != ignore_index
    idx = label[valid].cpu().numpy() * num_classes + pred[valid].cpu().numpy()
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def metrics_from_confusion(cm: np.ndarray) -> dict:
    """The `SegMetric.compute()` dict from a confusion matrix (same NaN rules)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    label_area, pred_area = cm.sum(1), cm.sum(0)
    if label_area.sum() == 0:
        raise ValueError("no labelled pixels")
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (label_area + pred_area - tp)
        acc = tp / label_area
    return _summary(iou, acc, float(tp.sum() / label_area.sum()), int(label_area.sum()))


def per_image_areas(pred, label, num_classes: int, ignore_index: int = IGNORE_INDEX) -> dict:
    """Per-image per-class pixel counts of B x H x W maps: {"intersect", "union", "label"}, each a B x C
    int64 array (label = pixels labelled c). Summed over images they are mmseg's total areas, from which
    `metrics_from_confusion`'s definitions give mIoU / mAcc (svgbench.metrics.stats.seg_ci resamples them)."""
    pred, label = _check_pair(pred, label, num_classes, ignore_index)
    b = pred.shape[0]
    valid = label != ignore_index
    img = torch.arange(b, device=pred.device).view(b, *([1] * (pred.ndim - 1))).expand_as(pred)
    idx = (img[valid] * num_classes + label[valid]) * num_classes + pred[valid]
    cm = torch.bincount(idx, minlength=b * num_classes * num_classes).view(b, num_classes, num_classes)
    inter = cm.diagonal(dim1=1, dim2=2)
    lab, prd = cm.sum(2), cm.sum(1)
    return {"intersect": inter.cpu().numpy(), "union": (lab + prd - inter).cpu().numpy(), "label": lab.cpu().numpy()}
