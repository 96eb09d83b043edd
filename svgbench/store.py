"""A sharded, memory-mapped store of per-item arrays (features, latents) and one-pass statistics.

An entry is named by its first shard's path `P` (`<stem>.npy`):
  - shard 0: `P` and `<stem>.labels.npy`; shard i > 0: `<stem>.<i:05d>.npy` and `<stem>.<i:05d>.labels.npy`
    (NumPy .npy files, rows [i * shard_rows, ...) of the entry; labels int64, when the data has them);
  - the index `<stem>.json`: key, shape, dtype, has_labels, shard_rows and per shard its rows, dtype
    and each file's size and sha256. It is written last, after every shard is on disk.
A small entry is thus one .npy (+ labels) and one .json, readable by anything that reads .npy.

Each shard is written atomically (temporary file + fsync + rename) by the process that encoded
it, and is fp16 when its values survive the round trip (`Fp16Check`), else fp32. A shard file at
its final name is therefore whole unless damaged later; the index's sizes and checksums catch that.
Readers map one shard at a time, so memory is bounded by a shard, never by the entry.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .checkpoints import atomic_write, atomic_write_bytes

STORE_VERSION = 1
SHARD_BYTES = 64 << 20  # fp32 bytes per shard at most (beyond one batch): bounds every buffer
MAX_SHARD_ROWS = 1024  # rows per shard at most: the unit of work spread over ranks
FP16_MAX = 6.0e4
# fp16 keeps ~11 bits of mantissa (rms relative error ~3e-4); refuse it when the rounding error is
# larger than this fraction of the values' standard deviation (tiny-magnitude features, subnormals).
FP16_MAX_REL_ERROR = 1e-3
_CHECK_CHUNK = 1 << 20  # elements per step of the fp16 check: float64 temporaries stay small
_HASH_CHUNK = 8 << 20


class StoreError(ValueError):
    """A shard or index that is missing, damaged or disagrees with what was asked for."""


##################################################################################################
# Layout
##################################################################################################


def shard_path(path: Path, i: int, labels: bool = False) -> Path:
    """File of shard `i` of the entry whose first shard is `path` (see the module docstring)."""
    path = Path(path)
    stem = path.name[: -len(".npy")] if path.name.endswith(".npy") else path.name
    tail = ".labels.npy" if labels else ".npy"
    return path.with_name(stem + (f".{i:05d}" if i else "") + tail)


def index_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def shard_rows(row_bytes: int, batch_size: int, max_bytes: int | None = None, max_rows: int | None = None) -> int:
    """Rows per shard: batch_size * 2^k, the largest within max_bytes (fp32) and max_rows, at least one batch.

    Multiples of the batch size keep batches inside shards (an encoder whose output depends on its
    batch-mates sees the same batches whatever the number of ranks); powers of two make the shards of
    different kinds nest, so one encoder pass fills several kinds shard by shard.
    """
    max_bytes = SHARD_BYTES if max_bytes is None else max_bytes  # read at call time: tests shrink them
    max_rows = MAX_SHARD_ROWS if max_rows is None else max_rows
    rows = batch_size
    while rows * 2 * row_bytes <= max_bytes and rows * 2 <= max_rows:
        rows *= 2
    return rows


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, expected file size) from a .npy header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise StoreError(f"unsupported .npy format version {version} in {path}")
        header = f.tell()
    return tuple(shape), np.dtype(dtype), header + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _HashingFile:
    """A write-only file object that hashes what passes through (np.lib.format.write_array writes in chunks)."""

    def __init__(self, f):
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        b = memoryview(b).cast("B")
        self.h.update(b)
        self.size += len(b)
        return self.f.write(b)


def write_npy(path: Path, array: np.ndarray) -> dict:
    """Atomically write `array` as .npy; returns its receipt {"bytes", "sha256"}."""
    hashed = {}

    def write(f):
        hashed["f"] = hf = _HashingFile(f)
        np.lib.format.write_array(hf, np.ascontiguousarray(array), allow_pickle=False)

    atomic_write(path, write)
    hf = hashed["f"]
    return {"bytes": hf.size, "sha256": hf.h.hexdigest()}


##################################################################################################
# fp16 decision
##################################################################################################


class Fp16Check:
    """The fp16 storage decision, accumulated over row blocks as they are produced.

    fp16 is safe when every value is finite with |x| < 6e4 and the rms rounding error is at most
    FP16_MAX_REL_ERROR times the values' standard deviation. With `keep=True` the fp16 values are
    kept (`half`), so the rows are converted once while still in the CPU cache. The rounding error of
    fp32 -> fp16 is exact in fp32.
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


def write_shard(path: Path, i: int, start: int, values: np.ndarray, labels: np.ndarray | None,
                check: Fp16Check | None = None) -> dict:
    """Write shard `i` (float32 `values`, rows start..; int64 `labels` or None); returns its index entry.

    `check`: the fp16 decision already accumulated over `values` (with its fp16 copy), else made here.
    """
    if check is None:
        check = Fp16Check(values.shape)
        check.add(0, values)
    half = check.half if check.safe() else None
    files = {}
    if labels is not None:
        files[shard_path(path, i, labels=True).name] = write_npy(shard_path(path, i, labels=True),
                                                                 labels.astype(np.int64))
    files[shard_path(path, i).name] = write_npy(shard_path(path, i), values if half is None else half)
    return {"start": start, "rows": int(values.shape[0]), "dtype": "float32" if half is None else "float16",
            "files": files}


def check_shard(path: Path, i: int, start: int, rows: int, has_labels: bool,
                expected: dict | None = None, hash_files: bool = True) -> dict:
    """Validate shard `i` on disk; its index entry (hashing the files when `expected` gives none).

    Raises StoreError naming the file when it is missing, truncated or padded, of the wrong shape,
    or (with `hash_files`) its checksum differs from `expected`.
    """
    files, dtype = {}, None
    for lab in (True, False) if has_labels else (False,):
        f = shard_path(path, i, labels=lab)
        if not f.exists():
            raise StoreError(f"shard {f.name} is missing")
        try:
            shape, dt, size = npy_header(f)
        except (OSError, ValueError) as e:
            raise StoreError(f"shard {f.name} has an unreadable header ({e})") from None
        actual = f.stat().st_size
        if actual != size:
            raise StoreError(f"shard {f.name} is truncated or padded ({actual} bytes, header says {size})")
        if shape[:1] != (rows,) or (lab and (shape != (rows,) or dt != np.int64)):
            raise StoreError(f"shard {f.name} holds {shape} {dt}, expected {rows} rows")
        want = None if expected is None else expected["files"].get(f.name)
        if want is not None and want["bytes"] != actual:
            raise StoreError(f"shard {f.name} is truncated or padded ({actual} bytes, index says {want['bytes']})")
        if want is None or hash_files:
            digest = file_sha256(f)
            if want is not None and digest != want["sha256"]:
                raise StoreError(f"shard {f.name} fails its checksum (sha256 {digest[:12]}, index says "
                                 f"{want['sha256'][:12]})")
            files[f.name] = {"bytes": actual, "sha256": digest}
        else:
            files[f.name] = want
        if not lab:
            dtype = str(dt)
    return {"start": start, "rows": rows, "dtype": dtype, "files": files}


def write_index(path: Path, key: dict, shape: tuple[int, ...], has_labels: bool, rows_per_shard: int,
                shards: list[dict]) -> None:
    """The entry's commit mark: written last, atomically, once every shard is on disk."""
    dtypes = {s["dtype"] for s in shards}
    meta = {"key": key, "shape": list(shape), "dtype": "float16" if dtypes == {"float16"} else "float32",
            "has_labels": has_labels, "shard_rows": rows_per_shard, "shards": shards,
            "store_version": STORE_VERSION}
    data = (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode()
    atomic_write_bytes(index_path(path), data)


def read_index(path: Path, key: dict | None = None) -> dict:
    """The index of the entry at `path`; StoreError when unreadable, of another key or inconsistent."""
    try:
        meta = json.loads(index_path(path).read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"index {index_path(path).name} is unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("store_version") != STORE_VERSION:
        raise StoreError(f"index {index_path(path).name} is not a version-{STORE_VERSION} store index")
    if key is not None and meta.get("key") != key:
        raise StoreError("index key differs from the requested key")
    shards, n = meta["shards"], meta["shape"][0]
    starts = [s["start"] for s in shards]
    if starts != [i * meta["shard_rows"] for i in range(len(shards))] or sum(s["rows"] for s in shards) != n:
        raise StoreError(f"index shape {meta['shape']} does not match its shards")
    return meta


##################################################################################################
# Reading
##################################################################################################


class ShardedStore:
    """A finished entry: N rows of shape `row_shape`, read as float32 one shard at a time.

    `open` checks every shard's size (cheap) and, with verify=True, its sha256 (reads everything).
    """

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = Path(path), meta
        self.shape = tuple(meta["shape"])
        self.row_shape = self.shape[1:]
        self.has_labels = bool(meta["has_labels"])
        self._starts = [s["start"] for s in meta["shards"]]

    @classmethod
    def open(cls, path: Path, key: dict | None = None, verify: bool = False) -> "ShardedStore":
        meta = read_index(path, key)
        for i, s in enumerate(meta["shards"]):
            check_shard(path, i, s["start"], s["rows"], meta["has_labels"], s, hash_files=verify)
        return cls(path, meta)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def num_shards(self) -> int:
        return len(self._starts)

    def shard(self, i: int) -> np.ndarray:
        """Shard i memory-mapped (fp16 or fp32, read-only); drop it to release its pages."""
        return np.load(shard_path(self.path, i), mmap_mode="r", allow_pickle=False)

    def labels(self) -> torch.Tensor | None:
        """int64 N (one scalar per item: small even at ImageNet scale)."""
        if not self.has_labels:
            return None
        return torch.from_numpy(np.concatenate(
            [np.load(shard_path(self.path, i, labels=True), allow_pickle=False) for i in range(self.num_shards)]))

    def iter_batches(self, batch_size: int, shards: list[int] | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(float32 rows, int64 labels or None) batches in row order, within one shard at a time."""
        for i in range(self.num_shards) if shards is None else shards:
            arr = self.shard(i)
            lab = np.load(shard_path(self.path, i, labels=True), allow_pickle=False) if self.has_labels else None
            for s in range(0, arr.shape[0], batch_size):
                x = torch.from_numpy(np.array(arr[s:s + batch_size], dtype=np.float32))
                yield x, None if lab is None else torch.from_numpy(lab[s:s + batch_size])
            del arr  # unmap: resident pages of a finished shard leave the process

    def to_tensor(self) -> torch.Tensor:
        """All rows as one float32 tensor: for sets that fit in memory."""
        out = torch.empty(self.shape, dtype=torch.float32)
        for i in range(self.num_shards):
            s = self.meta["shards"][i]
            out.numpy()[s["start"]:s["start"] + s["rows"]] = self.shard(i)  # fp16 -> fp32 is exact
        return out

    def dataset(self) -> "StoreDataset":
        return StoreDataset(self)


class StoreDataset(torch.utils.data.Dataset):
    """Random access to a store's rows: item i -> (float32 row, int64 label or -1).

    Keeps at most `open_shards` shards mapped per process (each DataLoader worker has its own), so a
    shuffled pass holds a few shards' pages, not the set. Use with DistributedSampler for per-rank shuffling.
    """

    def __init__(self, store: ShardedStore, open_shards: int = 2):
        self.store, self.open_shards = store, open_shards
        self._maps: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, idx: int):
        i = bisect.bisect_right(self.store._starts, idx) - 1
        if i not in self._maps:
            if len(self._maps) >= self.open_shards:
                self._maps.pop(next(iter(self._maps)))  # oldest first
            lab = (np.load(shard_path(self.store.path, i, labels=True), allow_pickle=False)
                   if self.store.has_labels else None)
            self._maps[i] = (self.store.shard(i), lab)
        arr, lab = self._maps[i]
        j = idx - self.store._starts[i]
        return torch.from_numpy(np.array(arr[j], dtype=np.float32)), (-1 if lab is None else int(lab[j]))


##################################################################################################
# One-pass statistics
##################################################################################################


class _Blocks:
    """Feeds rows to `_add` in fixed blocks of `block` rows (the last one shorter).

    The float64 sums are then the same sequence of operations whatever the batches the rows arrive
    in, so streamed statistics equal the in-memory ones bit for bit. Holds at most one block.
    """

    def __init__(self, block: int):
        self.block, self.count = block, 0
        self._pending: list[torch.Tensor] = []
        self._held = 0

    def update(self, x: torch.Tensor) -> None:
        x = torch.as_tensor(x)
        while x.shape[0]:
            take = min(self.block - self._held, x.shape[0])
            self._pending.append(x[:take])
            self._held += take
            x = x[take:]
            if self._held == self.block:
                self._flush()

    def _flush(self) -> None:
        if self._held:
            b = torch.cat(self._pending).to(torch.float64)
            self._pending, self._held = [], 0
            self.count += b.shape[0]
            self._add(b)

    def _add(self, b: torch.Tensor) -> None:
        raise NotImplementedError


class ChannelStats(_Blocks):
    """Per-channel mean and std (dim 1) over rows and every other dim, float64, for N x C x ... rows.

    Sums are of x - shift, shift the first block's channel means: keeps E[x^2] - E[x]^2 accurate.
    """

    def __init__(self, block: int = 16):
        super().__init__(block)
        self.shift = self.s1 = self.s2 = None
        self.per_row = 0

    def _add(self, b: torch.Tensor) -> None:
        dims = (0,) + tuple(range(2, b.ndim))
        if self.shift is None:
            self.shift = b.mean(dim=dims)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros_like(self.shift)
            self.per_row = int(np.prod(b.shape[2:], dtype=np.int64))
        d = b - self.shift.view((1, -1) + (1,) * (b.ndim - 2))
        self.s1 += d.sum(dim=dims)
        self.s2 += (d * d).sum(dim=dims)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean C, std C) float64; std is the population std (divides by the count)."""
        self._flush()
        m = self.count * self.per_row
        if m == 0:
            raise StoreError("no rows to compute statistics of")
        mean_d = self.s1 / m
        return self.shift + mean_d, (self.s2 / m - mean_d * mean_d).clamp_min(0).sqrt()


class FidMoments(_Blocks):
    """Mean (D) and covariance (D x D, divided by N - 1 like numpy.cov) of N x D features, float64."""

    def __init__(self, block: int = 256):
        super().__init__(block)
        self.shift = self.s1 = self.s2 = None

    def _add(self, b: torch.Tensor) -> None:
        b = b.reshape(b.shape[0], -1)
        if self.shift is None:
            self.shift = b.mean(dim=0)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros((b.shape[1], b.shape[1]), dtype=torch.float64)
        d = b - self.shift
        self.s1 += d.sum(dim=0)
        self.s2 += d.T @ d

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._flush()
        n = self.count
        if n < 2:
            raise StoreError("FID moments need at least 2 rows")
        mean_d = self.s1 / n
        cov = (self.s2 - n * torch.outer(mean_d, mean_d)) / (n - 1)
        return self.shift + mean_d, cov


def _stream(acc: _Blocks, source, batch_size: int):
    if isinstance(source, ShardedStore):
        for x, _ in source.iter_batches(batch_size):
            acc.update(x)
    else:
        acc.update(torch.as_tensor(source))
    return acc.result()


def channel_stats(source, batch_size: int = 64, block: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) float64 of a ShardedStore (streamed) or an in-memory N x C x ... array."""
    return _stream(ChannelStats(block), source, batch_size)


def fid_moments(source, batch_size: int = 256, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean D, covariance D x D) float64 of a ShardedStore (streamed) or an in-memory N x D array."""
    return _stream(FidMoments(block), source, batch_size)
