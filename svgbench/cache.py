"""Encoder features on disk, keyed by everything that produced them, in sharded stores.

One entry per (encoder name, encoder spec, weights hash, dataset config key, kind, CACHE_VERSION,
and the batch size when the encoder's output depends on its batch-mates): a svgbench.store entry
whose first shard is `<cache_dir>/<encoder>/<data key>/<kind>-<digest>.npy` (N x D pooled,
N x T x D patch tokens or N x C x h x w latents), with `.labels.npy` and the index `.json` beside
it (see svgbench.store for the layout). Shards are fp16 when that is safe, else fp32.

Extraction streams: each batch goes into the shard it belongs to, a full shard is written and
dropped, so memory holds a shard per kind, never the set. Under torch.distributed, rows are cut in
units of whole shards and unit j is encoded by rank j % world; rank 0 writes the index after a
barrier. A killed extraction resumes at the first missing shard; a shard that fails its size or
checksum is named in a warning and recomputed alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from . import distributed as dist
from .checkpoints import nearest_existing
from .errors import UserError
from .registry import file_name
from .store import (FP16_MAX, FP16_MAX_REL_ERROR, Fp16Check, ShardedStore, StoreError, check_shard,  # noqa: F401
                    npy_header, read_index, shard_path, shard_rows, write_index, write_shard)

# Bump when extraction changes what is stored (preprocessing, pooling, storage rules).
CACHE_VERSION = "features-v2"
KINDS = ("pooled", "patch", "latent")  # latent: encode() output, N x C x h x w (what diffusion models)
# Entries up to this size are checksummed on every read; larger ones by their owning rank when an
# extraction resumes or repairs, else by size only (a full read of ImageNet latents costs minutes).
VERIFY_BYTES = 2 << 30


class CacheError(ValueError):
    """A dataset or request the feature cache cannot key or serve."""


class CacheSpaceError(UserError):
    """The feature cache's disk cannot hold a store about to be written."""


# free space kept beyond a store's own size (its index, the records and tables written beside it)
SPACE_MARGIN = 64 << 20


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_space(entry_path: Path, rows: int, row_shape: tuple[int, ...], has_labels: bool) -> None:
    """Refuse to start a store of `rows` rows of `row_shape` whose fp16 shards (their smallest form; fp32
    takes twice that) would not fit in the free space of the disk under `entry_path`."""
    need = rows * (2 * int(np.prod(row_shape, dtype=np.int64)) + (8 if has_labels else 0)) + SPACE_MARGIN
    where = nearest_existing(entry_path.parent)
    free = shutil.disk_usage(where).free
    if free < need:
        raise CacheSpaceError(
            f"feature cache {where}: {rows} rows of {'x'.join(map(str, row_shape))} need at least "
            f"{_size(need)} (fp16; fp32 twice that), {_size(free)} free; free space there or "
            f"set SVGBENCH_CACHE to a folder on a larger disk", input=str(where), fix="free space or set SVGBENCH_CACHE")


class CachedFeatures:
    """Features of one (encoder, dataset, kind).

    `store` streams them (svgbench.store.ShardedStore); `features` is all of them as a float32 cpu
    tensor, N x D or N x T x D, read on first use (for sets that fit in memory); `labels` int64 N or
    None; `path` the first shard; `hit` True when a finished entry was found and nothing was encoded.
    """

    def __init__(self, store: ShardedStore, path: Path, hit: bool):
        self.store, self.path, self.hit = store, Path(path), hit
        self._features: torch.Tensor | None = None
        self.labels = store.labels()

    @property
    def features(self) -> torch.Tensor:
        if self._features is None:
            self._features = self.store.to_tensor()
        return self._features


def default_cache_dir() -> Path:
    """$SVGBENCH_CACHE, else .cache/features under the current directory."""
    env = os.environ.get("SVGBENCH_CACHE")
    return Path(env) if env else Path.cwd() / ".cache" / "features"


def _spec_digest(encoder) -> str:
    spec = encoder.spec.as_dict()
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def batch_dependent(encoder) -> bool:
    """Whether an item's output depends on its batch-mates.

    Encoders say so with a `batch_dependent` attribute; SVG encoders built with align="batch" (batch
    statistics in the distribution alignment, spec.extra["svg_config"]["align"]) are detected without it.
    """
    flag = getattr(encoder, "batch_dependent", None)
    if flag is not None:
        return bool(flag)
    extra = getattr(encoder.spec, "extra", None) or {}
    return (extra.get("svg_config") or {}).get("align") == "batch"


def key_parts(encoder, dataset, kind: str, weights_hash: str | None = None, batch_size: int | None = None) -> dict:
    """Everything the stored features depend on; raises CacheError for a dataset without `data_config`.

    `batch_size` enters the key only for a batch-dependent encoder (batches are then also aligned
    to shards, so their composition does not depend on the number of ranks).
    """
    if kind not in KINDS:
        raise CacheError(f"feature kind must be one of {KINDS}, got {kind!r}")
    cfg = getattr(dataset, "data_config", None)
    if cfg is None:
        raise CacheError(
            f"{type(dataset).__name__} has no `data_config`, so its features cannot be keyed in the cache; "
            "build datasets with svgbench.data.build_dataset(DataConfig(...))"
        )
    parts = {
        "encoder": encoder.spec.name,
        "spec": _spec_digest(encoder),  # build arguments that change outputs without changing weights
        "weights": weights_hash or encoder.weights_hash(),
        "data": cfg.key(),
        "num_images": len(dataset),
        "kind": kind,
        "version": CACHE_VERSION,
    }
    if batch_size is not None and batch_dependent(encoder):
        parts["batch_size"] = int(batch_size)
    return parts


def entry_path(cache_dir: Path, parts: dict) -> Path:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / file_name(parts["encoder"]) / parts["data"] / f"{parts['kind']}-{digest}.npy"


def storage_dtype(x: np.ndarray) -> np.dtype:
    """float16 when `x` survives the round trip (finite, max |x| < 6e4, small error), else float32."""
    check = Fp16Check(x.shape, keep=False)
    if x.size:
        check.add(0, x)
    return np.dtype(np.float16 if check.safe() else np.float32)


def _collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """A batch of what feature extraction reads: the images and, when the dataset has them, the labels
    (masks and other fields are left out rather than stacked for nothing)."""
    batch = {"image": torch.stack([it["image"] for it in items])}
    if "label" in items[0]:
        batch["label"] = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.int64)
    return batch


def _warn(path: Path, why: str) -> None:
    warnings.warn(f"feature cache entry {path} is unusable ({why}); recomputing (whole shards on disk are kept)",
                  RuntimeWarning, stacklevel=4)


class _Entry:
    """One kind's store while it is checked and filled by this rank."""

    def __init__(self, kind: str, path: Path, parts: dict, n: int, unit: int, has_labels: bool, batch_size: int):
        self.kind, self.path, self.parts, self.n, self.unit, self.has_labels = kind, path, parts, n, unit, has_labels
        self.batch_size = batch_size
        self.meta: dict | None = None
        self.rows: int | None = None  # rows per shard, once known
        self.row_shape: tuple[int, ...] | None = None
        self.done: dict[int, dict] = {}  # shard -> index entry, for shards valid on disk or written here
        self.todo_units: set[int] = set()
        self.wrote = False

    def shards_of_unit(self, j: int) -> range:
        per = self.unit // self.rows
        return range(j * per, min((j + 1) * per, -(-self.n // self.rows)))

    def shard_range(self, i: int) -> tuple[int, int]:
        return i * self.rows, min((i + 1) * self.rows, self.n)

    def check(self, units: list[int], verify: bool) -> None:
        """Find the valid shards of `units`; the others' units go to `todo_units`."""
        try:
            if self.path.with_suffix(".json").exists():
                self.meta = read_index(self.path, self.parts)
                if self.unit % self.meta["shard_rows"]:
                    raise StoreError(f"shard layout of {self.meta['shard_rows']} rows does not fit units of "
                                     f"{self.unit}")
                self.rows, self.row_shape = self.meta["shard_rows"], tuple(self.meta["shape"][1:])
        except StoreError as e:
            _warn(self.path, str(e))
            self.meta = None
        if self.rows is None:
            existing = sorted(self.path.parent.glob(self.path.name[:-4] + "*.npy"))
            data = [p for p in existing if not p.name.endswith(".labels.npy")]
            if data:  # an unfinished extraction: its shards tell the layout
                try:
                    shape, _, _ = npy_header(data[0])
                    self.row_shape = tuple(shape[1:])
                    self.rows = shard_rows(4 * int(np.prod(self.row_shape, dtype=np.int64)), self.batch_size)
                except (OSError, ValueError) as e:
                    warnings.warn(f"ignoring unreadable shard {data[0]} ({e})", RuntimeWarning, stacklevel=3)
        if self.rows is None:
            self.todo_units.update(units)
            return
        for j in units:
            for i in self.shards_of_unit(j):
                s, e = self.shard_range(i)
                expected = self.meta["shards"][i] if self.meta is not None else None
                try:
                    self.done[i] = check_shard(self.path, i, s, e - s, self.has_labels, expected, hash_files=verify)
                except StoreError as err:
                    if expected is not None or shard_path(self.path, i).exists():
                        _warn(self.path, str(err))
                    self.todo_units.add(j)


class _ShardBuffer:
    """Rows of the shard being filled for one kind: float32 values, fp16 check, labels."""

    def __init__(self, entry: _Entry, i: int):
        s, e = entry.shard_range(i)
        self.entry, self.i, self.start, self.fill = entry, i, s, 0
        self.values = np.empty((e - s,) + entry.row_shape, np.float32)
        self.labels = np.empty(e - s, np.int64) if entry.has_labels else None
        self.check = Fp16Check(self.values.shape)

    def take(self, rows: torch.Tensor, labels: torch.Tensor | None) -> None:
        dest = self.values[self.fill:self.fill + rows.shape[0]]
        torch.from_numpy(dest).copy_(rows)
        self.check.add(self.fill, dest)
        if self.labels is not None:
            self.labels[self.fill:self.fill + rows.shape[0]] = labels.numpy()
        self.fill += rows.shape[0]

    def write(self) -> None:
        self.entry.done[self.i] = write_shard(self.entry.path, self.i, self.start, self.values, self.labels,
                                              self.check)
        self.entry.wrote = True


def _batches(units: list[int], unit: int, batch_size: int, n: int) -> list[list[int]]:
    return [list(range(s, min(s + batch_size, (j + 1) * unit, n)))
            for j in units for s in range(j * unit, min((j + 1) * unit, n), batch_size)]


@torch.no_grad()
def _encode(encoder, dataset, entries: list[_Entry], batch_size: int, device: str,
            progress: Callable[[int], object] | None, num_workers: int) -> int:
    """Encode this rank's units that some entry lacks, writing shards as they fill; returns images encoded.

    Shard buffers are filled and written on a helper thread while the encoder computes the next batch
    (at most one batch in flight), so the fp16 check and the disk cost no wall time on a spare core.
    """
    units = sorted(set().union(*(e.todo_units for e in entries)))
    if not units:
        return 0
    unit = entries[0].unit
    encoder = encoder.to(device).eval()
    cuda = torch.device(device).type == "cuda"
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_batches(units, unit, batch_size, len(dataset)), num_workers=num_workers,
        collate_fn=_collate, pin_memory=cuda, persistent_workers=num_workers > 0)
    open_: dict[str, _ShardBuffer] = {}
    encoded = 0

    def take(batch_start: int, rows: dict[str, torch.Tensor], labels: torch.Tensor | None) -> None:
        for e in entries:
            if e.kind not in rows:
                continue
            r = rows[e.kind]
            if e.rows is None:  # first output of a fresh entry: its layout follows from the row size
                e.row_shape = tuple(r.shape[1:])
                e.rows = shard_rows(4 * int(np.prod(e.row_shape, dtype=np.int64)), e.batch_size)
                # before its first shard is written: the rows this rank still has to store must fit
                todo = [e.shard_range(i) for j in e.todo_units for i in e.shards_of_unit(j) if i not in e.done]
                check_space(e.path, sum(b - a for a, b in todo), e.row_shape, e.has_labels)
            i = batch_start // e.rows
            buf = open_.get(e.kind)
            if buf is None or buf.i != i:
                buf = open_[e.kind] = _ShardBuffer(e, i)
            buf.take(r, labels)
            if buf.fill == buf.values.shape[0]:
                if i not in e.done:
                    buf.write()
                del open_[e.kind]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="svgbench-cache") as helper:
        pending = None
        for idx, batch in zip(loader.batch_sampler, loader):
            j = idx[0] // unit
            kinds = {e.kind for e in entries if j in e.todo_units}
            images = batch["image"].to(device, non_blocking=True)
            out = encoder.features(images) if kinds - {"latent"} else {}
            if "latent" in kinds:
                out = dict(out, latent=encoder.encode(images))
            b = images.shape[0]
            rows = {}
            for k in kinds:
                rows[k] = out[k].float().cpu()
                if rows[k].shape[0] != b:
                    raise ValueError(f"encoder {encoder.spec.name!r} returned {k} features for {rows[k].shape[0]} "
                                     f"images from a batch of {b}")
            if pending is not None:
                pending.result()
            pending = helper.submit(take, idx[0], rows, batch.get("label"))
            encoded += b
            if progress is not None:
                progress(b)
        if pending is not None:
            pending.result()
    if open_:
        raise ValueError(f"dataset yielded fewer images than its length of {len(dataset)}")
    return encoded


def cached_features_all(encoder, dataset, *, kinds: Iterable[str] = ("pooled", "patch"), batch_size: int = 64,
                        device: str = "cpu", cache_dir: str | os.PathLike | None = None,
                        progress: Callable[[int], object] | None = None,
                        num_workers: int | None = None) -> dict[str, CachedFeatures]:
    """Features of every kind in `kinds`, from the cache where present.

    The missing shards are computed together: one frozen-encoder forward per batch (eval mode,
    no grad), each batch streamed into its shards. `progress(n)` is called with the number of images
    served: per batch when computing, then once for the rest. `num_workers`: DataLoader workers
    ($SVGBENCH_WORKERS, default 0). Under torch.distributed every rank calls this; each encodes its
    own units and all return the same entries.
    """
    kinds = tuple(dict.fromkeys(kinds))
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if num_workers is None:
        num_workers = int(os.environ.get("SVGBENCH_WORKERS", "0"))
    whash = encoder.weights_hash()
    parts_of = {k: key_parts(encoder, dataset, k, whash, batch_size) for k in kinds}
    n = len(dataset)
    if n == 0:
        raise CacheError("cannot extract features of an empty dataset")
    unit = shard_rows(0, batch_size)  # shards of every kind nest in units of this many rows
    rank, world = dist.rank(), dist.world_size()
    mine = [j for j in range(-(-n // unit)) if j % world == rank]
    has_labels = None
    entries = []
    for k in kinds:
        path = entry_path(cache_dir, parts_of[k])
        if has_labels is None:
            has_labels = "label" in dataset[0]
        e = _Entry(k, path, parts_of[k], n, unit, has_labels, batch_size)
        e.check(mine, verify=_verify(path))
        entries.append(e)
    encoded = _encode(encoder, dataset, entries, batch_size, device, progress, num_workers)
    if progress is not None and world == 1 and n - encoded > 0:
        progress(n - encoded)
    for e in entries:
        gathered = dist.all_gather_objects((e.done, e.wrote or e.meta is None, e.row_shape, e.rows))
        if dist.is_main():
            done = {i: s for d, _, _, _ in gathered for i, s in d.items()}
            e.rows = next(r for _, _, _, r in gathered if r is not None)
            e.row_shape = next(s for _, _, s, _ in gathered if s is not None)
            if any(w for _, w, _, _ in gathered):
                e.path.parent.mkdir(parents=True, exist_ok=True)
                write_index(e.path, e.parts, (n,) + e.row_shape, has_labels, e.rows,
                            [done[i] for i in range(-(-n // e.rows))])
        e.hit = not any(w for _, w, _, _ in gathered)
    dist.barrier()  # every index is on disk before anyone opens it
    return {e.kind: CachedFeatures(ShardedStore.open(e.path, e.parts), e.path, e.hit) for e in entries}


def _verify(path: Path) -> bool:
    """Checksum every shard when the entry is small; see VERIFY_BYTES."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        size = sum(f["bytes"] for s in meta["shards"] for f in s["files"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return True  # no usable index: shards found on disk are hashed for the new one anyway
    return size <= VERIFY_BYTES


def cached_features(encoder, dataset, *, kind: str = "pooled", batch_size: int = 64, device: str = "cpu",
                    cache_dir: str | os.PathLike | None = None,
                    progress: Callable[[int], object] | None = None,
                    num_workers: int | None = None) -> CachedFeatures:
    """Features of one kind ("pooled": N x D, "patch": N x T x D, "latent": N x C x h x w), float32, with labels."""
    return cached_features_all(encoder, dataset, kinds=(kind,), batch_size=batch_size, device=device,
                               cache_dir=cache_dir, progress=progress, num_workers=num_workers)[kind]
