"""Encoder features on disk, keyed by everything that produced them.

One entry per (encoder name, encoder spec, weights hash, dataset config key, kind, CACHE_VERSION):
`<cache_dir>/<encoder>/<data key>/<kind>-<digest>.npy` holds the features (N x D pooled, or
N x T x D patch tokens), `.labels.npy` the dataset labels (when it has them) and `.json` a sidecar
with shape, dtype and key parts. The sidecar is written last, so an entry without one was never
finished. Files are written atomically (temporary file in the same folder + os.replace); an entry
whose files disagree with its sidecar (truncated, wrong shape) is recomputed with a warning.

Values are stored as fp16 when that is safe (all finite, max |x| < 6e4, round-trip error small
against the spread of the values), else as fp32; they are read memory-mapped and returned as
float32 tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .checkpoints import atomic_write, atomic_write_bytes

# Bump when extraction changes what is stored (preprocessing, pooling, storage rules).
CACHE_VERSION = "features-v1"
KINDS = ("pooled", "patch", "latent")  # latent: encode() output, N x C x h x w (what diffusion models)
FP16_MAX = 6.0e4
# fp16 keeps ~11 bits of mantissa (rms relative error ~3e-4); refuse it when the rounding error is
# larger than this fraction of the values' standard deviation (tiny-magnitude features, subnormals).
FP16_MAX_REL_ERROR = 1e-3


class CacheError(ValueError):
    """A dataset or request the feature cache cannot key or serve."""


@dataclass
class CachedFeatures:
    """Features of one (encoder, dataset, kind): `features` float32 N x D or N x T x D on the cpu,
    `labels` int64 N or None, `path` the .npy file, `hit` whether they came from disk."""

    features: torch.Tensor
    labels: torch.Tensor | None
    path: Path
    hit: bool


def default_cache_dir() -> Path:
    """$SVGBENCH_CACHE, else .cache/features under the current directory."""
    env = os.environ.get("SVGBENCH_CACHE")
    return Path(env) if env else Path.cwd() / ".cache" / "features"


def _spec_digest(encoder) -> str:
    spec = encoder.spec.as_dict()
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def key_parts(encoder, dataset, kind: str, weights_hash: str | None = None) -> dict:
    """Everything the stored features depend on; raises CacheError for a dataset without `data_config`."""
    if kind not in KINDS:
        raise CacheError(f"feature kind must be one of {KINDS}, got {kind!r}")
    cfg = getattr(dataset, "data_config", None)
    if cfg is None:
        raise CacheError(
            f"{type(dataset).__name__} has no `data_config`, so its features cannot be keyed in the cache; "
            "build datasets with svgbench.data.build_dataset(DataConfig(...))"
        )
    return {
        "encoder": encoder.spec.name,
        "spec": _spec_digest(encoder),  # build arguments that change outputs without changing weights
        "weights": weights_hash or encoder.weights_hash(),
        "data": cfg.key(),
        "num_images": len(dataset),
        "kind": kind,
        "version": CACHE_VERSION,
    }


def entry_path(cache_dir: Path, parts: dict) -> Path:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    folder = re.sub(r"[^A-Za-z0-9._+-]", "_", parts["encoder"]) or "_"  # any spec name, safe as a folder
    return Path(cache_dir) / folder / parts["data"] / f"{parts['kind']}-{digest}.npy"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _labels_path(path: Path) -> Path:
    return path.with_suffix(".labels.npy")


def _row_chunks(x: np.ndarray, elements: int = 1 << 22):
    rows = max(1, elements // max(1, int(np.prod(x.shape[1:], dtype=np.int64))))
    for s in range(0, x.shape[0], rows):
        yield slice(s, s + rows)


def storage_dtype(x: np.ndarray) -> np.dtype:
    """float16 when `x` survives the round trip (finite, max |x| < 6e4, small error), else float32.

    Works in row chunks, so large patch arrays need little extra memory.
    """
    if x.size == 0:
        return np.dtype(np.float32)
    sq_err = total = total_sq = 0.0
    for rows in _row_chunks(x):
        c = x[rows].astype(np.float64)
        if not np.isfinite(c).all() or np.abs(c).max() >= FP16_MAX:
            return np.dtype(np.float32)
        sq_err += float(np.square(c.astype(np.float16).astype(np.float64) - c).sum())
        total += float(c.sum())
        total_sq += float(np.square(c).sum())
    if sq_err == 0.0:
        return np.dtype(np.float16)
    var = max(total_sq / x.size - (total / x.size) ** 2, 0.0)
    return np.dtype(np.float16 if math.sqrt(sq_err / x.size) <= FP16_MAX_REL_ERROR * math.sqrt(var) else np.float32)


def _round_trip_(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round float32 `x` in place to the values `dtype` storage gives back."""
    if dtype != x.dtype:
        for rows in _row_chunks(x):
            x[rows] = x[rows].astype(dtype)
    return x


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    # np.save straight into the temporary file: no second in-memory copy of large patch arrays.
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _expected_npy_size(path: Path) -> int:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        header = f.tell()
    return header + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _load(path: Path, parts: dict) -> CachedFeatures | None:
    """The entry at `path`, or None when it is missing or unusable (then it is recomputed)."""
    side = _sidecar(path)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
        if meta.get("key") != parts:
            raise ValueError("sidecar key differs from the requested key")
        for p in (path, _labels_path(path)) if meta.get("has_labels") else (path,):
            if p.stat().st_size != _expected_npy_size(p):
                raise ValueError(f"{p.name} is truncated or padded")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
            raise ValueError(f"array {arr.shape} {arr.dtype} does not match sidecar {meta['shape']} {meta['dtype']}")
        labels = None
        if meta.get("has_labels"):
            lab = np.load(_labels_path(path), allow_pickle=False)
            if lab.shape != (arr.shape[0],):
                raise ValueError(f"labels {lab.shape} do not match {arr.shape[0]} feature rows")
            labels = torch.from_numpy(lab.astype(np.int64))
        feats = torch.from_numpy(np.array(arr, dtype=np.float32))  # a copy: writable, file released
        return CachedFeatures(feats, labels, path, hit=True)
    except Exception as e:  # noqa: BLE001 - any unusable entry is recomputed, never half-read
        warnings.warn(f"feature cache entry {path} is unusable ({type(e).__name__}: {e}); recomputing",
                      RuntimeWarning, stacklevel=3)
        return None


def _store(path: Path, parts: dict, feats: np.ndarray, labels: np.ndarray | None) -> np.dtype:
    """Write one entry (sidecar last); returns the storage dtype."""
    dtype = storage_dtype(feats)
    _atomic_save_npy(path, feats.astype(dtype, copy=False))
    if labels is not None:
        _atomic_save_npy(_labels_path(path), labels)
    meta = {"key": parts, "shape": list(feats.shape), "dtype": str(dtype), "has_labels": labels is not None}
    atomic_write_bytes(_sidecar(path), (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    return dtype


@torch.no_grad()
def _extract(encoder, dataset, kinds: Iterable[str], batch_size: int, device: str,
             progress: Callable[[int], object] | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """One encoder forward per batch, filling every requested kind."""
    kinds = tuple(kinds)
    n = len(dataset)
    if n == 0:
        raise CacheError("cannot extract features of an empty dataset")
    encoder = encoder.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    out: dict[str, np.ndarray] = {}
    labels: list[np.ndarray] = []
    has_labels = None
    i = 0
    for batch in loader:
        images = batch["image"].to(device)
        feats = encoder.features(images) if any(k != "latent" for k in kinds) else {}
        if "latent" in kinds:
            feats = dict(feats, latent=encoder.encode(images))
        b = images.shape[0]
        for k in kinds:
            f = feats[k].float().cpu().numpy()
            if f.shape[0] != b:
                raise ValueError(f"encoder {encoder.spec.name!r} returned {k} features for {f.shape[0]} images "
                                 f"from a batch of {b}")
            if k not in out:
                out[k] = np.empty((n,) + f.shape[1:], dtype=np.float32)
            out[k][i:i + b] = f
        if has_labels is None:
            has_labels = "label" in batch
        if has_labels:
            labels.append(batch["label"].numpy().astype(np.int64).reshape(b))
        i += b
        if progress is not None:
            progress(b)
    if i != n:
        raise ValueError(f"dataset yielded {i} images, but its length is {n}")
    return out, (np.concatenate(labels) if has_labels else None)


def cached_features_all(encoder, dataset, *, kinds: Iterable[str] = ("pooled", "patch"), batch_size: int = 64,
                        device: str = "cpu", cache_dir: str | os.PathLike | None = None,
                        progress: Callable[[int], object] | None = None) -> dict[str, CachedFeatures]:
    """Features of every kind in `kinds`, from the cache where present.

    The missing kinds are computed together: one frozen-encoder forward per batch (eval mode,
    no grad), then stored. `progress(n)` is called with the number of images served, per batch
    when computing, once when everything came from disk.
    """
    kinds = tuple(dict.fromkeys(kinds))
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    whash = encoder.weights_hash()
    parts_of = {k: key_parts(encoder, dataset, k, whash) for k in kinds}
    paths = {k: entry_path(cache_dir, parts_of[k]) for k in kinds}
    result = {k: _load(paths[k], parts_of[k]) for k in kinds}
    missing = [k for k in kinds if result[k] is None]
    if not missing:
        if progress is not None:
            progress(len(dataset))
        return result
    arrays, labels = _extract(encoder, dataset, missing, batch_size, device, progress)
    for k in missing:
        dtype = _store(paths[k], parts_of[k], arrays[k], labels)
        # Return what a later hit would return: the values after the storage round trip.
        result[k] = CachedFeatures(torch.from_numpy(_round_trip_(arrays[k], dtype)),
                                   None if labels is None else torch.from_numpy(labels), paths[k], hit=False)
    return result


def cached_features(encoder, dataset, *, kind: str = "pooled", batch_size: int = 64, device: str = "cpu",
                    cache_dir: str | os.PathLike | None = None,
                    progress: Callable[[int], object] | None = None) -> CachedFeatures:
    """Features of one kind ("pooled": N x D, "patch": N x T x D), float32, with the dataset's labels."""
    return cached_features_all(encoder, dataset, kinds=(kind,), batch_size=batch_size, device=device,
                               cache_dir=cache_dir, progress=progress)[kind]
