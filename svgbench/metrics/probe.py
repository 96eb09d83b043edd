"""Frozen-feature read-outs: linear probe, kNN, class separation, a PCA map.

Protocols follow DINOv2's evaluation: linear heads over a grid of learning rates (and weight
decays) on standardised frozen features, the best head chosen on a validation split carved from
the training features, then scored on held-out test features; kNN with cosine similarity and
exp(sim / 0.07)-weighted votes. Accuracies are percentages (0-100).

Features are N x D float tensors, labels int64 N in [0, num_classes). Features that are non-finite
or constant raise `DegenerateFeaturesError` with the reason before any fitting starts.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
DEFAULT_WDS = (0.0, 1e-4, 1e-3)


class DegenerateFeaturesError(ValueError):
    """Features no read-out can be fitted to (NaN/inf values, no variance); the message says which."""


def phase_bar(desc: str | None, total: int, unit: str):
    """A tqdm bar for an inner phase of a task (fitting, encoding a training split), apart from the runner's
    count of evaluation images. Shown on a terminal only: disable=None is tqdm's own non-tty test, so it is
    quiet under pytest and in logs; desc None: no bar at all. tqdm prints the rate and the ETA."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, mininterval=0.5,
                disable=True if desc is None else None)


##################################################################################################
# Checks and standardisation
##################################################################################################


def degenerate_reason(x: torch.Tensor, *, allow_constant: bool = False) -> str | None:
    """Why `x` (N x D) cannot be probed, or None when it can."""
    x = torch.as_tensor(x)
    if x.ndim != 2:
        return f"features must be N x D, got shape {tuple(x.shape)}"
    if x.shape[0] == 0 or x.shape[1] == 0:
        return f"no features (shape {tuple(x.shape)})"
    finite = torch.isfinite(x)
    if not finite.all():
        bad_rows = int((~finite).any(1).sum())
        return (f"features contain {int((~finite).sum())} NaN/inf values "
                f"({bad_rows} of {x.shape[0]} images affected)")
    if not allow_constant:
        x64 = x.double()
        spread = float((x64.amax(0) - x64.amin(0)).max())
        if spread <= 1e-6 * max(float(x64.abs().max()), 1e-30):
            return (f"features are constant across all {x.shape[0]} images "
                    f"(no variance in any of {x.shape[1]} dimensions)")
    return None


def check_features(x: torch.Tensor, what: str = "features", *, allow_constant: bool = False) -> None:
    reason = degenerate_reason(x, allow_constant=allow_constant)
    if reason is not None:
        raise DegenerateFeaturesError(f"{what}: {reason}")


def _check_labels(y: torch.Tensor, n: int, what: str) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{what}: expected {n} labels, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{what}: labels must be integers, got {y.dtype}")
    if n and int(y.min()) < 0:
        raise ValueError(f"{what}: labels must be >= 0, got {int(y.min())}")
    return y.long()


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """(x - mean) / std with the mean and std of `train`, applied to `train` and each of `others`.

    Dimensions without variance in `train` keep std 1 (they become 0), so they add nothing.
    """
    t64 = train.double()
    mean = t64.mean(0)
    std = t64.std(0, unbiased=False)
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-30), std, torch.ones_like(std))
    return [((x.double() - mean) / std).to(train.dtype) for x in (train, *others)]


def split_validation(y: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices): a seeded split, stratified by class when every class allows it."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    y = np.asarray(y)
    if len(y) < 2:
        raise ValueError(f"need at least 2 training samples to carve a validation split, got {len(y)}")
    n_val = max(1, int(round(fraction * len(y))))
    zeros = np.zeros(len(y))
    try:
        fit, val = next(StratifiedShuffleSplit(1, test_size=n_val, random_state=seed).split(zeros, y))
    except ValueError:  # a class with one member, or fewer validation slots than classes
        fit, val = next(ShuffleSplit(1, test_size=n_val, random_state=seed).split(zeros))
    return np.sort(fit), np.sort(val)


def _topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == y[..., None]).any(-1)


##################################################################################################
# Linear probe (torch, a grid of heads trained together)
##################################################################################################


@dataclass
class ProbeResult:
    """Test accuracy (%) of the head with the best validation top-1, and how the grid fared."""

    top1: float
    top5: float | None  # None when there are 5 classes or fewer (top-5 would be trivially 100)
    val_top1: float
    lr: float
    wd: float
    fit_s: float
    num_classes: int
    grid: list[dict] = field(default_factory=list)  # per head: lr, wd, val_top1, val_loss
    test_correct: list[bool] = field(default_factory=list)  # per test item, in order: top-1 right (top1 = mean)


def _head_scores(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head: (top-1 correct count, summed cross-entropy) over x, in row chunks to bound memory."""
    correct = torch.zeros(weight.shape[0], dtype=torch.float64, device=x.device)
    loss = torch.zeros(weight.shape[0], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], chunk):
        logits = torch.matmul(x[s:s + chunk], weight) + bias[:, None, :]  # H x n x C
        yy = y[s:s + chunk]
        correct += (logits.argmax(-1) == yy).sum(1).double()
        loss += F.cross_entropy(logits.permute(0, 2, 1), yy.expand(logits.shape[0], -1),
                                reduction="none").sum(1).double()
    return correct, loss


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 lrs=DEFAULT_LRS, wds=DEFAULT_WDS, epochs: int = 100, batch_size: int = 256,
                 momentum: float = 0.9, val_fraction: float = 0.1, seed: int = 0,
                 device: str | torch.device = "cpu", progress: str | None = None) -> ProbeResult:
    """Fit len(lrs) x len(wds) softmax-regression heads at once and score the best on the test set.

    Features are standardised with the mean/std of the fitting part of `train_x`. Every head
    starts at zero and sees the same seeded batch order; SGD with momentum, cosine-decayed lr,
    weight decay on the weights (not the biases). The head with the best validation top-1 (ties:
    lower validation loss, then grid order) is evaluated on `test_x`. Same inputs and seed, same
    device -> same result. progress: the description of a bar over the optimiser steps (`phase_bar`), or None.
    """
    check_features(train_x, "training features")
    check_features(test_x, "test features", allow_constant=True)
    train_y = _check_labels(train_y, train_x.shape[0], "training labels").cpu()
    test_y = _check_labels(test_y, test_x.shape[0], "test labels").cpu()
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"training features are {train_x.shape[1]}-d but test features {test_x.shape[1]}-d")
    if len(torch.unique(train_y)) < 2:
        raise ValueError("the linear probe needs at least 2 classes in the training labels")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    fit_idx, val_idx = split_validation(train_y.numpy(), val_fraction, seed)
    t0 = time.perf_counter()
    fit_idx, val_idx = torch.from_numpy(fit_idx), torch.from_numpy(val_idx)
    xf, xv, xt = (t.float().to(device) for t in standardize(train_x[fit_idx].float(), train_x[val_idx].float(),
                                                            test_x.float()))
    yf, yv, yt = train_y[fit_idx].to(device), train_y[val_idx].to(device), test_y.to(device)

    grid = [(float(lr), float(wd)) for lr in lrs for wd in wds]
    heads, dim, c = len(grid), xf.shape[1], num_classes
    # The whole grid as one D x (H C) weight matrix: head h owns columns h C .. (h + 1) C, its loss depends
    # on its own columns only, so one GEMM serves all heads. The softmax cross-entropy gradient is written
    # out (d loss / d logits = softmax - one-hot): on these small batches autograd's bookkeeping and
    # batched matmuls cost twice the two plain GEMMs (measured on 2 CPU cores).
    weight = torch.zeros(dim, heads * c, device=device)
    bias = torch.zeros(heads * c, device=device)
    # torch optimisers take one lr per parameter group; a per-head lr and wd on one tensor is a
    # hand-written SGD-momentum step (same update rule as torch.optim.SGD, dampening 0).
    lr_c = torch.tensor([g[0] for g in grid], device=device).repeat_interleave(c)
    wd_c = torch.tensor([g[1] for g in grid], device=device).repeat_interleave(c)
    buf_w, buf_b = torch.zeros_like(weight), torch.zeros_like(bias)
    gen = torch.Generator().manual_seed(seed)
    n = xf.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    bar = phase_bar(progress, total, "step")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            xb, yb, b = xf[idx], yf[idx], idx.shape[0]
            grad = torch.softmax(torch.addmm(bias, xb, weight).view(b, heads, c), dim=-1)  # B x H x C
            grad[torch.arange(b, device=device), :, yb] -= 1.0
            grad = grad.view(b, heads * c) / b  # d (mean cross-entropy of each head) / d logits
            scale = lr_c * (0.5 * (1.0 + math.cos(math.pi * step / total)))
            buf_w.mul_(momentum).add_(xb.T @ grad + wd_c * weight)
            buf_b.mul_(momentum).add_(grad.sum(0))
            weight.sub_(scale * buf_w)
            bias.sub_(scale * buf_b)
            step += 1
        bar.update(steps_per_epoch)
    bar.close()
    weight = weight.view(dim, heads, c).permute(1, 0, 2)  # H x D x C
    bias = bias.view(heads, c)

    with torch.no_grad():
        correct, loss = _head_scores(xv, yv, weight, bias)
        val_top1 = (100.0 * correct / len(yv)).cpu()
        val_loss = (loss / len(yv)).cpu()
        finite_loss = torch.nan_to_num(val_loss, nan=float("inf"))
        best = min(range(heads), key=lambda h: (-float(val_top1[h]), float(finite_loss[h]), h))
        logits = torch.cat([xt[s:s + 4096] @ weight[best] + bias[best] for s in range(0, xt.shape[0], 4096)])
        correct1 = _topk_correct(logits, yt, 1)
        top1 = 100.0 * float(correct1.double().mean())
        top5 = 100.0 * float(_topk_correct(logits, yt, 5).double().mean()) if num_classes > 5 else None
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    fit_s = time.perf_counter() - t0
    table = [{"lr": lr, "wd": wd, "val_top1": float(val_top1[h]), "val_loss": float(val_loss[h])}
             for h, (lr, wd) in enumerate(grid)]
    return ProbeResult(top1=top1, top5=top5, val_top1=float(val_top1[best]), lr=grid[best][0], wd=grid[best][1],
                       fit_s=fit_s, num_classes=num_classes, grid=table, test_correct=correct1.cpu().tolist())


def sklearn_probe(train_x, train_y, test_x, test_y, *, Cs=(1e-3, 1e-2, 1e-1, 1.0), val_fraction: float = 0.1,
                  seed: int = 0, max_iter: int = 1000, progress: str | None = None) -> dict:
    """Independent cross-check: standardised L2 logistic regression (scikit-learn, lbfgs).

    Like `linear_probe`: standardised with the fit part's mean/std, each inverse regularisation
    strength in `Cs` fitted on the same seeded fit / validation split, the best validation top-1
    (ties: the smaller C) scored on the test set. -> {top1, top5, C, fit_s}, accuracies in %.
    progress: the description of a bar over the values of C (`phase_bar`), or None.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train_x, test_x = torch.as_tensor(train_x).cpu(), torch.as_tensor(test_x).cpu()
    check_features(train_x, "training features")
    check_features(test_x, "test features", allow_constant=True)
    train_y = _check_labels(train_y, train_x.shape[0], "training labels").cpu().numpy()
    test_y = _check_labels(test_y, test_x.shape[0], "test labels").cpu().numpy()
    if len(np.unique(train_y)) < 2:
        raise ValueError("the logistic-regression probe needs at least 2 classes in the training labels")
    Cs = sorted(float(c) for c in Cs)
    if not Cs:
        raise ValueError("Cs must hold at least one value")
    x = train_x.double().numpy()
    fit, val = split_validation(train_y, val_fraction, seed)
    t0 = time.perf_counter()
    scaler = StandardScaler().fit(x[fit])
    xf = scaler.transform(x[fit])
    # Ascending C with warm starts: each fit starts from the more regularised solution.
    model = LogisticRegression(max_iter=max_iter, warm_start=True)
    best = None
    # lbfgs multiplies small matrices (N x D by D x C) a few hundred times per C: BLAS threads cost more than
    # they give there (2.5x slower on 2 cores, measured on the embedded tiny-svg features), so one thread
    with phase_bar(progress, len(Cs), "fit") as bar, threadpool_limits(limits=1, user_api="blas"):
        for c in Cs:
            model.set_params(C=c).fit(xf, train_y[fit])
            score = float(np.mean(model.predict(scaler.transform(x[val])) == train_y[val]))
            if best is None or score > best[0]:
                best = (score, c, model.coef_.copy(), model.intercept_.copy())
            bar.update(1)
    fit_s = time.perf_counter() - t0
    _, c, model.coef_, model.intercept_ = best
    proba = model.predict_proba(scaler.transform(test_x.double().numpy()))
    classes = model.classes_
    ranked = classes[np.argsort(-proba, axis=1, kind="stable")]
    top1 = 100.0 * float(np.mean(ranked[:, 0] == test_y))
    top5 = 100.0 * float(np.mean((ranked[:, :5] == test_y[:, None]).any(1))) if len(classes) > 5 else None
    return {"top1": top1, "top5": top5, "C": c, "fit_s": fit_s}


##################################################################################################
# kNN (DINO's weighted vote)
##################################################################################################


def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, *, ks=(10, 20),
                temperature: float = 0.07, chunk: int = 1024,
                device: str | torch.device = "cpu") -> dict[int, torch.Tensor]:
    """k -> predicted labels of `test_x`: cosine similarity to l2-normalised training features, the k most
    similar vote with weight exp(sim / temperature), argmax of the votes (ties: the lowest label).

    k larger than the training set is clamped to its size.
    """
    check_features(train_x, "training features", allow_constant=True)
    check_features(test_x, "test features", allow_constant=True)
    train_y = _check_labels(train_y, train_x.shape[0], "training labels").to(device)
    num_classes = int(train_y.max()) + 1
    train = F.normalize(train_x.float().to(device), dim=1)
    ks = [int(k) for k in ks]
    if min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {ks}")
    kmax = min(max(ks), train.shape[0])
    preds = {k: [] for k in ks}
    for s in range(0, test_x.shape[0], chunk):
        q = F.normalize(test_x[s:s + chunk].float().to(device), dim=1)
        sims, idx = (q @ train.T).topk(kmax, dim=1)
        neighbours = train_y[idx]
        weights = (sims / temperature).exp()
        for k in ks:
            kk = min(k, kmax)
            votes = torch.zeros(q.shape[0], num_classes, device=device, dtype=weights.dtype)
            votes.scatter_add_(1, neighbours[:, :kk], weights[:, :kk])
            preds[k].append(votes.argmax(1).cpu())
    return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.long) for k, v in preds.items()}


def knn_correct(train_x, train_y, test_x, test_y, *, ks=(10, 20), temperature: float = 0.07,
                device: str | torch.device = "cpu") -> dict[int, torch.Tensor]:
    """k -> bool tensor over the test items: is `knn_predict`'s label right (kept for paired comparisons)."""
    test_y = _check_labels(test_y, test_x.shape[0], "test labels")
    preds = knn_predict(train_x, train_y, test_x, ks=ks, temperature=temperature, device=device)
    return {k: p == test_y for k, p in preds.items()}


def knn_top1(train_x, train_y, test_x, test_y, *, ks=(10, 20), temperature: float = 0.07,
             device: str | torch.device = "cpu") -> dict[int, float]:
    """k -> top-1 accuracy (%) of `knn_predict` on `test_y`."""
    return {k: accuracy(c) for k, c in
            knn_correct(train_x, train_y, test_x, test_y, ks=ks, temperature=temperature, device=device).items()}


def accuracy(correct: torch.Tensor) -> float:
    """Percentage of True in a bool tensor."""
    return 100.0 * float(correct.double().mean())


##################################################################################################
# Class separation
##################################################################################################


def _check_classes(x: torch.Tensor, y: torch.Tensor, what: str) -> np.ndarray:
    check_features(x, what)
    y = _check_labels(y, x.shape[0], f"{what} labels").cpu().numpy()
    k = len(np.unique(y))
    if not 2 <= k <= x.shape[0] - 1:
        raise DegenerateFeaturesError(
            f"{what}: needs 2 <= classes <= samples - 1, got {k} classes in {x.shape[0]} samples")
    return y


def variance_ratio(x: torch.Tensor, y: torch.Tensor) -> float:
    """trace(between-class scatter) / trace(within-class scatter) of `x` (N x D) under labels `y`.

    Equals Calinski-Harabasz * (K - 1) / (N - K) for K classes; 0 when the class means coincide,
    large when classes are tight and far apart.
    """
    y = _check_classes(x, y, "features")
    x64 = torch.as_tensor(x).double().cpu()
    yy = torch.from_numpy(y)
    classes, inverse, counts = torch.unique(yy, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), x64.shape[1], dtype=torch.float64).index_add_(0, inverse, x64)
    means = sums / counts[:, None]
    between = float((counts[:, None] * (means - x64.mean(0)) ** 2).sum())
    within = float(((x64 - means[inverse]) ** 2).sum())
    if within <= 0.0:
        raise DegenerateFeaturesError("features: every class collapses to one point (zero within-class scatter)")
    return between / within


def silhouette(x: torch.Tensor, y: torch.Tensor, *, max_points: int = 2000, seed: int = 0) -> float:
    """Mean silhouette (euclidean, in [-1, 1]) of `x` under labels `y`, on a seeded sample of at most
    `max_points` rows (sklearn.metrics.silhouette_score)."""
    from sklearn.metrics import silhouette_score

    y = _check_classes(x, y, "features")
    x = torch.as_tensor(x).double().cpu().numpy()
    if len(y) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(y), size=max_points, replace=False))
        x, y = x[rows], y[rows]
        if not 2 <= len(np.unique(y)) <= len(y) - 1:
            raise DegenerateFeaturesError(f"features: the {max_points}-point sample holds a single class")
    return float(silhouette_score(x, y, metric="euclidean"))


##################################################################################################
# PCA map
##################################################################################################


def pca_projection(x: torch.Tensor, y: torch.Tensor | None = None, *, max_points: int = 5000,
                   seed: int = 0) -> dict:
    """The first two principal components of standardised `x` (N x D), on a seeded sample of at most
    `max_points` rows. -> {"xy": M x 2 array, "labels": M int array or None, "explained_variance": fraction
    of the variance the 2 axes hold}. With one feature dimension the second axis is 0."""
    from sklearn.decomposition import PCA

    check_features(x, "features")
    (z,) = standardize(torch.as_tensor(x).double().cpu())
    z = z.numpy()
    labels = None if y is None else _check_labels(y, z.shape[0], "labels").cpu().numpy()
    if len(z) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(z), size=max_points, replace=False))
        z = z[rows]
        labels = None if labels is None else labels[rows]
    pca = PCA(n_components=min(2, z.shape[1]), random_state=seed).fit(z)
    pts = pca.transform(z)
    if pts.shape[1] == 1:
        pts = np.concatenate([pts, np.zeros_like(pts)], 1)
    return {"xy": pts, "labels": labels, "explained_variance": float(pca.explained_variance_ratio_.sum())}


def pca_points(projection: dict, max_points: int = 512, *, decimals: int = 4, seed: int = 0) -> dict:
    """A JSON-ready excerpt of `pca_projection`'s output: at most `max_points` seeded rows, coordinates
    rounded to `decimals`. -> {"xy": [[x, y], ...], "labels": [int, ...] or None, "explained_variance"}."""
    xy, labels = np.asarray(projection["xy"]), projection["labels"]
    rows = np.arange(len(xy))
    if len(xy) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(xy), size=max_points, replace=False))
    return {"xy": [[round(float(a), decimals), round(float(b), decimals)] for a, b in xy[rows]],
            "labels": None if labels is None else [int(v) for v in np.asarray(labels)[rows]],
            "explained_variance": round(projection["explained_variance"], 6)}


def pca_figure(projection: dict, path: str | Path, *, title: str = "", class_names: list[str] | None = None) -> dict:
    """Scatter a `pca_projection`, coloured by its labels, into a PNG at `path` (written atomically).
    Returns {"path", "explained_variance"}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..checkpoints import atomic_write_bytes

    pts, labels, ev = np.asarray(projection["xy"]), projection["labels"], projection["explained_variance"]
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6)
    else:
        labels = np.asarray(labels)
        for c in np.unique(labels):
            m = labels == c
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(pts[m, 0], pts[m, 1], s=4, alpha=0.6, label=name)
        if len(np.unique(labels)) <= 20:
            ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{title}\n(2 PCs hold {100 * ev:.1f}% of the variance)" if title else
                 f"2 PCs hold {100 * ev:.1f}% of the variance", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return {"path": str(path), "explained_variance": ev}


def pca_map(x: torch.Tensor, y: torch.Tensor | None, path: str | Path, *, title: str = "",
            class_names: list[str] | None = None, max_points: int = 5000, seed: int = 0) -> dict:
    """Scatter the first two principal components of standardised `x`, coloured by `y`, into a PNG at
    `path` (written atomically). Returns {"path", "explained_variance"} (fraction held by the 2 axes)."""
    return pca_figure(pca_projection(x, y, max_points=max_points, seed=seed), path, title=title,
                      class_names=class_names)
