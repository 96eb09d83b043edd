"""Understanding: what a frozen encoder's pooled features say about image classes.

`probe`: DINOv2-style linear probe (a grid of heads, best on a validation split) plus a
scikit-learn logistic-regression cross-check. `knn`: DINO's weighted kNN, and how well the
classes separate (silhouette, between/within-class variance ratio), with a 2-D PCA map.

The dataset the runner passes is the evaluation split; the training split is derived from its
`data_config` (same data, `train_split`, `train_size` images). Features come from the shared
on-disk cache, so the two tasks extract each split once per encoder. Accuracies are in %.
"""

from __future__ import annotations
# a change here that can move a number bumps VERSIONS["probe"] / ["knn"] in svgbench/tasks/builtin.py

import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import cached_features
from ..data import build_dataset
from ..encoders.base import LatentEncoder
from ..metrics.probe import (DEFAULT_LRS, DEFAULT_WDS, accuracy, degenerate_reason, knn_correct, linear_probe,
                             pca_figure, pca_points, pca_projection, phase_bar, silhouette, sklearn_probe,
                             standardize, variance_ratio)


@dataclass(frozen=True)
class ProbeConfig:
    batch_size: int = 64  # encoder batch for feature extraction
    train_split: str = "train"
    train_size: int = 5000
    test_size: int | None = None  # None: the whole evaluation dataset
    epochs: int = 100
    lrs: tuple[float, ...] = DEFAULT_LRS
    wds: tuple[float, ...] = DEFAULT_WDS
    probe_batch_size: int = 256
    val_fraction: float = 0.1
    seed: int = 0
    sklearn_Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    sklearn_max_train: int = 20000  # above this the lbfgs cross-check is skipped (reported n/a)
    spread_seeds: int = 3  # head-training seeds seed, seed+1, ...: the spread of probe_top1 over them (< 3: none)
    ci_resamples: int = 1000  # bootstrap resamples for the intervals over test images


@dataclass(frozen=True)
class KnnConfig:
    batch_size: int = 64
    train_split: str = "train"
    train_size: int = 5000
    test_size: int | None = None
    ks: tuple[int, ...] = (10, 20)
    temperature: float = 0.07
    silhouette_points: int = 2000
    seed: int = 0
    figure_dir: str | None = None  # where the PCA map goes; None: no figure
    pca_record_points: int = 512  # PCA coordinates of at most this many evaluation images go into the record
    ci_resamples: int = 1000  # bootstrap resamples for the intervals over test images


def _splits(dataset, cfg):
    """(train dataset, eval dataset) derived from `dataset.data_config`."""
    data_cfg = getattr(dataset, "data_config", None)
    if data_cfg is None:
        raise ValueError(f"{type(dataset).__name__} has no `data_config`: build it with svgbench.data.build_dataset")
    if data_cfg.split == cfg.train_split:
        raise ValueError(f"the evaluation split is {data_cfg.split!r}, the same as the probe's training split; "
                         f"evaluate on another split (e.g. 'val') or set train_split")
    if cfg.test_size is not None and cfg.test_size != len(dataset):
        dataset = build_dataset(data_cfg.replace(size=cfg.test_size))
    train = build_dataset(data_cfg.replace(split=cfg.train_split, size=cfg.train_size))
    return train, dataset


def _features(encoder, dataset, cfg, device, progress):
    """`progress(n)` counts evaluation images only (the runner's bar has their number as its total); the
    training split has its own bar."""
    train_ds, test_ds = _splits(dataset, cfg)
    t0 = time.perf_counter()
    with phase_bar(f"{encoder.spec.name}: {cfg.train_split} features", len(train_ds), "img") as bar:
        tr = cached_features(encoder, train_ds, kind="pooled", batch_size=cfg.batch_size, device=device,
                             progress=bar.update)
    te = cached_features(encoder, test_ds, kind="pooled", batch_size=cfg.batch_size, device=device,
                         progress=progress)
    if tr.labels is None or te.labels is None:
        raise ValueError(f"dataset {test_ds.data_config.key()} has no class labels: the understanding tasks need them")
    info = {"num_train": int(tr.features.shape[0]), "num_test": int(te.features.shape[0]),
            "feature_dim": int(tr.features.shape[1]), "extract_s": time.perf_counter() - t0,
            "features_cached": bool(tr.hit and te.hit)}
    return tr, te, test_ds, info


def _degenerate(train, test) -> str | None:
    """Why these features cannot be read out, or None. Constant test features are allowed (they score chance)."""
    why = degenerate_reason(train.features)
    if why:
        return f"training features: {why}"
    why = degenerate_reason(test.features, allow_constant=True)
    return f"test features: {why}" if why else None


def _item_ci(metrics: dict, key: str, correct, cfg) -> None:
    """Put the per-item 0/100 correctness of `key` and its bootstrap interval into `metrics`."""
    from ..metrics.stats import ci_entry, mean_ci

    values = [100.0 if c else 0.0 for c in correct]
    metrics.setdefault("per_item", {})[key] = values
    if len(values) >= 2:
        metrics.setdefault("ci", {})[key] = ci_entry(mean_ci(values, n_resamples=cfg.ci_resamples, seed=cfg.seed))
    else:
        metrics.setdefault("unavailable", {})[f"ci.{key}"] = "an interval needs at least 2 test images"


def run_probe(encoder: LatentEncoder, dataset, cfg: ProbeConfig = ProbeConfig(), device: str = "cpu",
              progress=None) -> dict:
    """-> {probe_top1, probe_top5, probe_top1_sklearn, probe_val_top1, probe_lr, probe_wd, probe_fit_s,
    sklearn_fit_s, num_train, num_test, num_classes, feature_dim, extract_s, features_cached, unavailable,
    ci, per_item, seed_spread, stats_s}.

    probe_fit_s is the wall time of the torch grid fit over cached features (standardisation
    included, extraction excluded). Degenerate features give None metrics with the reason.
    ci["probe_top1"]: bootstrap interval over test images (svgbench.metrics.stats.mean_ci);
    per_item["probe_top1"]: 100.0 / 0.0 per test image in dataset order (seed cfg.seed's head);
    seed_spread["probe_top1"]: top-1 over cfg.spread_seeds head-training seeds (cfg.seed's result is
    probe_top1; the others retrain the head cfg.seed selected); stats_s: seconds spent on intervals and the
    extra seeds.
    """
    tr, te, _, info = _features(encoder, dataset, cfg, device, progress)
    metrics = ("probe_top1", "probe_top5", "probe_top1_sklearn", "probe_val_top1", "probe_lr", "probe_wd",
               "probe_fit_s", "sklearn_fit_s")
    out = {m: None for m in metrics} | info | {"num_classes": None}
    unavailable = {}
    why = _degenerate(tr, te)
    if why:
        out["unavailable"] = {m: why for m in metrics}
        return out
    name = encoder.spec.name
    res = linear_probe(tr.features, tr.labels, te.features, te.labels, lrs=cfg.lrs, wds=cfg.wds, epochs=cfg.epochs,
                       batch_size=cfg.probe_batch_size, val_fraction=cfg.val_fraction, seed=cfg.seed, device=device,
                       progress=f"{name}: probe grid, seed {cfg.seed}")
    out.update(probe_top1=res.top1, probe_top5=res.top5, probe_val_top1=res.val_top1, probe_lr=res.lr,
               probe_wd=res.wd, probe_fit_s=res.fit_s, num_classes=res.num_classes)
    if res.top5 is None:
        unavailable["probe_top5"] = f"only {res.num_classes} classes: top-5 would be trivially 100%"
    if info["num_train"] > cfg.sklearn_max_train:
        why = (f"cross-check skipped: {info['num_train']} training images > sklearn_max_train="
               f"{cfg.sklearn_max_train} (lbfgs would be slow)")
        unavailable["probe_top1_sklearn"] = unavailable["sklearn_fit_s"] = why
    else:
        sk = sklearn_probe(tr.features, tr.labels, te.features, te.labels, Cs=cfg.sklearn_Cs,
                           val_fraction=cfg.val_fraction, seed=cfg.seed, progress=f"{name}: logreg cross-check")
        out.update(probe_top1_sklearn=sk["top1"], sklearn_fit_s=sk["fit_s"])
    out["unavailable"] = unavailable
    t0 = time.perf_counter()
    _item_ci(out, "probe_top1", res.test_correct, cfg)
    if cfg.spread_seeds >= 3:
        from ..metrics.stats import seed_spread

        # the other seeds retrain the selected head (lr, wd fixed by seed cfg.seed's validation): the spread
        # of the head's training (batch order, held-out split), at 1/len(grid) of a grid fit's cost
        seeds = [cfg.seed + i for i in range(cfg.spread_seeds)]
        tops = [res.top1] + [linear_probe(tr.features, tr.labels, te.features, te.labels, lrs=(res.lr,),
                                          wds=(res.wd,), epochs=cfg.epochs, batch_size=cfg.probe_batch_size,
                                          val_fraction=cfg.val_fraction, seed=s, device=device,
                                          progress=f"{name}: selected head, seed {s}").top1
                             for s in seeds[1:]]
        out["seed_spread"] = {"probe_top1": seed_spread(tops, seeds)}
    else:
        unavailable["seed_spread"] = f"spread_seeds={cfg.spread_seeds}: a spread needs at least 3 seeds"
    out["stats_s"] = time.perf_counter() - t0
    return out


def run_knn(encoder: LatentEncoder, dataset, cfg: KnnConfig = KnnConfig(), device: str = "cpu",
            progress=None) -> dict:
    """-> {knn_top1_k<k> for k in cfg.ks, silhouette, variance_ratio, pca_figure, pca_points, num_train,
    num_test, feature_dim, extract_s, features_cached, unavailable, ci, per_item, stats_s}.

    ci / per_item: as in `run_probe`, for every knn_top1_k<k>.
    kNN: cosine similarity to the training features (DINO's protocol). Silhouette and variance
    ratio: on the evaluation features standardised with the training mean/std. pca_figure: the
    PNG written under cfg.figure_dir, or None. pca_points: the first two principal components of
    the evaluation features at up to cfg.pca_record_points images, {"xy": [[x, y], ...] (4 decimals),
    "labels": [...], "classes": class names or None, "explained_variance"}, or None.
    """
    tr, te, test_ds, info = _features(encoder, dataset, cfg, device, progress)
    knn_keys = [f"knn_top1_k{k}" for k in cfg.ks]
    metrics = (*knn_keys, "silhouette", "variance_ratio")
    out = {m: None for m in metrics} | {"pca_figure": None, "pca_points": None} | info
    why = _degenerate(tr, te)
    if why:
        out["unavailable"] = {m: why for m in metrics}
        return out
    unavailable = out["unavailable"] = {}
    correct = knn_correct(tr.features, tr.labels, te.features, te.labels, ks=cfg.ks, temperature=cfg.temperature,
                          device=device)
    out.update({f"knn_top1_k{k}": accuracy(c) for k, c in correct.items()})
    t0 = time.perf_counter()
    for k, c in correct.items():
        _item_ci(out, f"knn_top1_k{k}", c.tolist(), cfg)
    out["stats_s"] = time.perf_counter() - t0
    _, z = standardize(tr.features.double(), te.features.double())
    why = degenerate_reason(te.features)
    if why:  # constant evaluation features: no spread to measure
        unavailable.update({m: f"test features: {why}" for m in ("silhouette", "variance_ratio")})
    else:
        out["silhouette"] = silhouette(z, te.labels, max_points=cfg.silhouette_points, seed=cfg.seed)
        out["variance_ratio"] = variance_ratio(z, te.labels)
        names = getattr(test_ds, "classes", None)
        names = list(names) if names is not None else None
        proj = pca_projection(te.features, te.labels, seed=cfg.seed)
        if cfg.pca_record_points > 0:
            out["pca_points"] = pca_points(proj, cfg.pca_record_points, seed=cfg.seed) | {"classes": names}
        if cfg.figure_dir is not None:
            path = Path(cfg.figure_dir) / f"pca-{encoder.spec.name}-{test_ds.data_config.key()}.png"
            fig = pca_figure(proj, path, title=f"{encoder.spec.name} on {test_ds.data_config.key()}",
                             class_names=names)
            out["pca_figure"] = fig["path"]
    out["unavailable"] = unavailable
    return out
