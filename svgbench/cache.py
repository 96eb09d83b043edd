"""Encoder features on disk, keyed by everything that produced them.

One entry per (encoder name, encoder spec, weights hash, dataset config key, kind, CACHE_VERSION):
`<cache_dir>/<encoder>/<data key>/<kind>-<digest>.npy` holds the features (N x D pooled, or
N x T x D patch tokens), `.labels.npy` the dataset labels (when it has them) and `.json` a sidecar
with shape, dtype and key parts. The sidecar is written last, so an entry without one was never
finished. Files are written atomically (temporary file in the same folder + os.replace), the data
files synced to disk before the sidecar is written; an entry whose files disagree with its sidecar
(truncated, wrong shape) or whose sidecar is unreadable is recomputed with a warning.

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
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .checkpoints import atomic_write

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


# Elements per step of the fp16 check: a batch of features at a time, bounded so that float64
# temporaries stay small for large patch arrays.
_CHECK_CHUNK = 1 << 20


class _Fp16Check:
    """The fp16 storage decision, accumulated over row blocks as they are produced.

    fp16 is safe when every value is finite with |x| < 6e4 and the rms rounding error is at most
    FP16_MAX_REL_ERROR times the values' standard deviation. With `keep=True` the fp16 values are
    kept (`half`), so an entry stored as fp16 is converted once, while its rows are still in the CPU
    cache. The rounding error of fp32 -> fp16 is exact in fp32.
    """

    def __init__(self, shape: tuple[int, ...], keep: bool = True):
        self.half = np.empty(shape, np.float16) if keep else None
        self.ok = True
        self.size = 0
        self.sq_err = self.total = self.total_sq = 0.0

    def add(self, start: int, rows: np.ndarray) -> None:
        """Account for `rows` (float32 values), rows start.. of the whole array."""
        if not self.ok or rows.size == 0:
            return
        flat = np.ascontiguousarray(rows).reshape(-1)
        dest = None if self.half is None else self.half[start:start + rows.shape[0]].reshape(-1)
        for s in range(0, flat.size, _CHECK_CHUNK):
            c = flat[s:s + _CHECK_CHUNK]
            if c.dtype != np.float32 or not c.flags.writeable:
                c = np.array(c, dtype=np.float32)
            t = torch.from_numpy(c)
            lo, hi = (v.item() for v in torch.aminmax(t))  # NaN propagates
            if not (math.isfinite(lo) and math.isfinite(hi)) or max(hi, -lo) >= FP16_MAX:
                self.ok, self.half = False, None
                return
            if dest is None:
                h = t.to(torch.float16)
            else:
                h = torch.from_numpy(dest[s:s + _CHECK_CHUNK])
                h.copy_(t)  # torch's vectorised fp32 -> fp16, round to nearest even like numpy's
            err = h.float().sub_(t)  # exact in fp32
            self.sq_err += float(torch.dot(err, err))
            self.total += float(c.sum(dtype=np.float64))
            # fp32 accumulation (relative error ~1e-7) cannot flip the decision: fp16 passes only when
            # |mean| < ~5 std, where E[x^2] - mean^2 loses at most ~25x that relative precision.
            self.total_sq += float(np.dot(c, c))
            self.size += c.size

    def safe(self) -> bool:
        if not self.ok or self.size == 0:
            return False
        if self.sq_err == 0.0:
            return True
        var = max(self.total_sq / self.size - (self.total / self.size) ** 2, 0.0)
        return math.sqrt(self.sq_err / self.size) <= FP16_MAX_REL_ERROR * math.sqrt(var)


def storage_dtype(x: np.ndarray) -> np.dtype:
    """float16 when `x` survives the round trip (finite, max |x| < 6e4, small error), else float32.

    Works in chunks, so large patch arrays need little extra memory.
    """
    check = _Fp16Check(x.shape, keep=False)
    if x.size:
        check.add(0, x)
    return np.dtype(np.float16 if check.safe() else np.float32)


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


def _store(path: Path, parts: dict, feats: np.ndarray, labels: np.ndarray | None,
           check: _Fp16Check | None = None) -> np.dtype:
    """Write one entry (sidecar last); returns the storage dtype.

    `feats` (float32) is rounded in place to the stored values, so the caller holds exactly what a
    later cache hit returns. `check`: the fp16 decision already accumulated over `feats` (with its
    fp16 values), else it is made here. The features file is written (and synced) on a helper thread
    while the labels file is written and `feats` rounded; the sidecar follows both.
    """
    if check is None:
        check = _Fp16Check(feats.shape)
        if feats.size:
            check.add(0, feats)
    half = check.half if check.safe() else None
    dtype = np.dtype(np.float16 if half is not None else np.float32)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="svgbench-cache") as helper:
        written = helper.submit(_atomic_save_npy, path, feats if half is None else half)
        if labels is not None:
            _atomic_save_npy(_labels_path(path), labels)
        if half is not None:
            torch.from_numpy(feats).copy_(torch.from_numpy(half))  # the round trip, in place
    written.result()  # re-raises the helper's error, if any
    check.half = None
    meta = {"key": parts, "shape": list(feats.shape), "dtype": str(dtype), "has_labels": labels is not None}
    _write_sidecar(_sidecar(path), (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    return dtype


def _write_sidecar(path: Path, data: bytes) -> None:
    """Atomically (temporary file + os.replace) but without fsync: the sidecar is the entry's commit
    mark, written after the data files are synced, so a power cut can only lose or empty the sidecar,
    and an entry without a readable sidecar is recomputed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """A batch of what feature extraction reads: the images and, when the dataset has them, the labels
    (masks and other fields are left out rather than stacked for nothing)."""
    batch = {"image": torch.stack([it["image"] for it in items])}
    if "label" in items[0]:
        batch["label"] = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.int64)
    return batch


def _take_batch(out: dict[str, np.ndarray], checks: dict[str, _Fp16Check], start: int,
                rows: dict[str, torch.Tensor]) -> None:
    """Copy one batch's float32 rows of each kind into `out` and run them through the fp16 check."""
    for k, r in rows.items():
        dest = out[k][start:start + r.shape[0]]
        torch.from_numpy(dest).copy_(r)
        checks[k].add(start, dest)


@torch.no_grad()
def _extract(encoder, dataset, kinds: Iterable[str], batch_size: int, device: str,
             progress: Callable[[int], object] | None
             ) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, _Fp16Check]]:
    """One encoder forward per batch, filling every requested kind.

    Each batch's outputs are copied into the result arrays and run through the fp16 check (and
    conversion) on a helper thread while the encoder computes the next batch: on a machine with a
    spare core that bookkeeping costs no wall time, and the rows are checked while still in cache.
    """
    kinds = tuple(kinds)
    n = len(dataset)
    if n == 0:
        raise CacheError("cannot extract features of an empty dataset")
    encoder = encoder.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                                         collate_fn=_collate)
    out: dict[str, np.ndarray] = {}
    checks: dict[str, _Fp16Check] = {}
    labels: list[np.ndarray] = []
    has_labels = None
    i = 0
    pending = None  # the helper's job for the previous batch: at most one batch in flight
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="svgbench-cache") as helper:
        for batch in loader:
            images = batch["image"].to(device)
            feats = encoder.features(images) if any(k != "latent" for k in kinds) else {}
            if "latent" in kinds:
                feats = dict(feats, latent=encoder.encode(images))
            b = images.shape[0]
            if i + b > n:
                raise ValueError(f"dataset yielded more than its length of {n} images")
            rows = {}
            for k in kinds:
                rows[k] = feats[k].float().cpu()
                if rows[k].shape[0] != b:
                    raise ValueError(f"encoder {encoder.spec.name!r} returned {k} features for {rows[k].shape[0]} "
                                     f"images from a batch of {b}")
                if k not in out:
                    out[k] = np.empty((n,) + tuple(rows[k].shape[1:]), dtype=np.float32)
                    checks[k] = _Fp16Check(out[k].shape)
            if pending is not None:
                pending.result()
            pending = helper.submit(_take_batch, out, checks, i, rows)
            if has_labels is None:
                has_labels = "label" in batch
            if has_labels:
                labels.append(batch["label"].numpy().astype(np.int64).reshape(b))
            i += b
            if progress is not None:
                progress(b)
        if pending is not None:
            pending.result()
    if i != n:
        raise ValueError(f"dataset yielded {i} images, but its length is {n}")
    return out, (np.concatenate(labels) if has_labels else None), checks


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
    arrays, labels, checks = _extract(encoder, dataset, missing, batch_size, device, progress)
    for k in missing:
        _store(paths[k], parts_of[k], arrays[k], labels, checks.pop(k))  # rounds arrays[k] as a hit would
        result[k] = CachedFeatures(torch.from_numpy(arrays[k]),
                                   None if labels is None else torch.from_numpy(labels), paths[k], hit=False)
    return result


def cached_features(encoder, dataset, *, kind: str = "pooled", batch_size: int = 64, device: str = "cpu",
                    cache_dir: str | os.PathLike | None = None,
                    progress: Callable[[int], object] | None = None) -> CachedFeatures:
    """Features of one kind ("pooled": N x D, "patch": N x T x D), float32, with the dataset's labels."""
    return cached_features_all(encoder, dataset, kinds=(kind,), batch_size=batch_size, device=device,
                               cache_dir=cache_dir, progress=progress)[kind]
