"""Classification images packed the ways real data is shipped: hub parquet shards, webdataset tars, a zip.

Each reader is a map-style dataset with the item contract of `ImageFolderDataset` (same ADM centre
crop, labels, `classes`, `limit` spread, `scan`/`validate`), so the feature cache, DataLoader workers
and distributed sharding use it unchanged, and one image set gives the same records in every format.

Nothing is loaded whole: construction reads only an index (parquet footers and the label column, tar
headers and the tiny .cls members, the zip's central directory); an item reads one encoded image (a
parquet reader keeps one row group of its shard in memory per process). Open files are per process and
dropped on pickling, so forked or spawned DataLoader workers open their own. Images are decoded by PIL
(SVGBENCH_GPU_DECODE applies to JPEG files on disk only), exactly as a folder's are by default.

- parquet: the Hugging Face hub layout of ImageNet-1k, `ROOT/data/<split>-00000-of-00294.parquet` with
  columns `image` (struct {bytes, path}) and `label` (int); class names from the `huggingface` schema
  metadata when present. Read with pyarrow directly, not the `datasets` library: `datasets` gives random
  access only after copying every shard into its Arrow cache (a second ~150 GB copy of ImageNet), and its
  streaming mode has no index, which the `--num-images` spread and rank sharding need.
- webdataset: uncompressed tar shards `ROOT/<split>-*.tar` (or `ROOT/<split>/*.tar`, or one .tar file),
  samples `{key}.jpg|jpeg|png|webp|bmp` + `{key}.cls` (the integer label); optional `ROOT/classes.txt`,
  one class name a line. Read with the stdlib tarfile: an item is a seek and a read at the member's
  offset, which the `webdataset` package (iterable pipelines) does not offer.
- zipfolder: a .zip of an image folder, `<split>/<class>/<image>` under any common top folder (or
  `<class>/<image>` in a zip named after the split), ordered as `ImageFolderDataset` orders a folder.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .folders import (IMG_EXTENSIONS, ImageScan, _check_all, _check_index, _check_resolution, _hwc_uint8_to_chw,
                      _is_image_file, _load_rgb, _spread, center_crop_arr, convert_mode_of, scan_images)

FORMATS = ("parquet", "webdataset", "zipfolder")
_SPLIT_ALIASES = {"val": "validation", "validation": "val"}  # the hub names ImageNet's val split "validation"
_ARCHIVE_FIX = "replace that image in the archive (or drop its sample) and rebuild the file"


class _PackedImages(Dataset):
    """Shared item contract and arguments (as ImageFolderDataset's); a subclass implements `_index()` -> (refs: one
    locator per sample, its first element (or itself) the name errors give; labels; class names or None) and
    `_read(ref) -> bytes`."""

    def __init__(self, root, resolution: int, split: str | None = "val", limit: int | None = None,
                 convert_mode: bool = False):
        self.resolution, self.convert_mode, self.split = _check_resolution(resolution), convert_mode_of(convert_mode), split
        self.source = Path(root)
        self._finish(*self._index(), limit)

    def _finish(self, refs: list, labels: list[int], classes: list[str] | None, limit: int | None) -> None:
        if not refs:
            raise DataError(f"{self.source}: no images ({', '.join(IMG_EXTENSIONS)}) for split {self.split!r}; "
                            f"check --data-root and --split", input=str(self.source))
        bad = [(r, lab) for r, lab in zip(refs, labels) if lab < 0]
        if bad:
            raise DataError(f"{bad[0][0]}: label {bad[0][1]} (no label; {len(bad)} such samples): this split is "
                            f"unlabelled; use a labelled split (--split train or val)", input=str(self.source))
        n_cls = max(labels) + 1
        self.classes = list(classes) if classes else [str(i) for i in range(n_cls)]
        if n_cls > len(self.classes):
            raise DataError(f"{self.source}: label {n_cls - 1} but only {len(self.classes)} class names; fix the "
                            f"class names (or the labels)", input=str(self.source))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        keep = _spread(len(refs), limit)
        self._refs = [refs[i] for i in keep]
        self.targets = [int(labels[i]) for i in keep]
        self._handles: dict = {}
        # one reader at a time: a pyarrow ParquetFile, a TarFile and this class's row-group cache are not safe to
        # share between threads (concurrent row-group reads of one ParquetFile were seen to deadlock); the image
        # decoding after a read runs in parallel
        self._lock = threading.Lock()

    def __getstate__(self):  # open files (and the lock) stay in the process that made them
        state = dict(self.__dict__)
        state["_handles"] = {}
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _handle(self, key, opener):
        entry = self._handles.get(key)
        if entry is None or entry[0] != os.getpid():
            entry = self._handles[key] = (os.getpid(), opener())
        return entry[1]

    def _name(self, ref) -> str:
        return ref if isinstance(ref, str) else ref[0]

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index: int) -> dict:
        i = _check_index(index, len(self))
        name = self._name(self._refs[i])
        arr = center_crop_arr(_load_rgb(name, self.convert_mode, self._read_name, _ARCHIVE_FIX), self.resolution)
        return {"image": _hwc_uint8_to_chw(arr), "label": torch.tensor(self.targets[i], dtype=torch.int64),
                "index": i, "path": name}

    def _read_name(self, name: str) -> bytes:
        try:
            with self._lock:
                return self._read(self._by_name()[name])
        except DataError:
            raise
        except (OSError, KeyError, ValueError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise DataError(f"{name}: cannot read ({type(e).__name__}: {e}); {_ARCHIVE_FIX}", input=name,
                            fix=_ARCHIVE_FIX) from None

    def _by_name(self) -> dict:
        if getattr(self, "_name_index", None) is None:
            self._name_index = {self._name(r): r for r in self._refs}
        return self._name_index

    def scan(self, decode: bool = False, num_workers: int = 0) -> ImageScan:
        """`scan_images` over this dataset's images (headers only unless decode=True)."""
        return scan_images([self._name(r) for r in self._refs], self.resolution, self.convert_mode, decode,
                           num_workers, read=self._read_name, fix=_ARCHIVE_FIX)

    def validate(self, num_workers: int = 0) -> int:
        """Decode every image once and report all failures in one DataError (as ImageFolderDataset.validate)."""
        return _check_all([self._name(r) for r in self._refs],
                          lambda n: _load_rgb(n, self.convert_mode, self._read_name, _ARCHIVE_FIX),
                          "images", str(self.source), num_workers)


def _split_names(split: str | None) -> list[str]:
    if split is None:
        return []
    return [split] + ([_SPLIT_ALIASES[split]] if split in _SPLIT_ALIASES else [])


def _find_shards(root: Path, split: str | None, suffix: str, what: str) -> list[Path]:
    """The shard files of `split` under `root` (hub and webdataset naming), or `root` itself if it is one."""
    if not root.exists():
        raise DataError(f"{root}: dataset root does not exist; check --data-root", input=str(root))
    if root.is_file():
        if root.suffix != suffix:
            raise DataError(f"{root}: not a {suffix} file; --data {what} takes a folder of {suffix} shards or one "
                            f"{suffix} file", input=str(root))
        return [root]
    for name in _split_names(split) or [""]:
        for d in (root / "data", root):
            found = sorted(d.glob(f"{name}-*{suffix}")) + sorted(d.glob(f"{name}_*{suffix}")) if name else []
            found = found or (sorted((d / name).glob(f"*{suffix}")) if name and (d / name).is_dir() else [])
            if found:
                return found
    present = sorted({p.name.split("-")[0].split("_")[0] for p in root.rglob(f"*{suffix}")})
    raise DataError(f"{root}: no {suffix} shards of split {split!r} (looked for data/{split}-*{suffix}, "
                    f"{split}-*{suffix}, {split}/*{suffix}); splits found: {', '.join(present) or 'none'}; "
                    f"pass --split with one of them or check --data-root", input=str(root))


# ----------------------------------------------------------------------------------------------
# Hub parquet


class ParquetImageDataset(_PackedImages):
    """ImageNet-1k as the hub ships it: parquet shards with `image` {bytes, path} and `label` columns."""

    def _index(self) -> tuple[list, list[int], list[str] | None]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError("--data parquet needs pyarrow, which is not installed; pip install pyarrow",
                            input="--data parquet", fix="pip install pyarrow") from None
        self.files = _find_shards(self.source, self.split, ".parquet", "parquet")
        refs, labels, classes = [], [], None
        for fi, f in enumerate(self.files):
            try:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                if "image" not in names or "label" not in names:
                    raise DataError(f"{f}: columns {', '.join(names)}; a hub image parquet has `image` (bytes, path) "
                                    f"and `label`: convert it to that layout", input=str(f))
                col = pf.read(columns=["label"]).column("label").to_pylist()
                classes = classes or _hub_class_names(pf.schema_arrow.metadata)
            except DataError:
                raise
            except Exception as e:  # pyarrow's ArrowInvalid, OSError: a damaged or foreign file
                raise DataError(f"{f}: cannot read parquet ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                f"re-download or rebuild that shard", input=str(f)) from None
            if any(v is None for v in col):
                raise DataError(f"{f}: {sum(v is None for v in col)} rows have no label; this split is unlabelled: "
                                f"use a labelled split (--split train or val)", input=str(f))
            groups = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            row = 0
            for g, n in enumerate(groups):
                refs.extend((f"{f}:row{row + r}", fi, g, r) for r in range(n))
                row += n
            labels.extend(int(v) for v in col)
        return refs, labels, classes

    def _read(self, ref) -> bytes:
        import pyarrow.parquet as pq

        _, fi, g, r = ref
        cached = self._handles.get("group")
        if cached is None or cached[0] != os.getpid() or cached[1][:2] != (fi, g):
            pf = self._handle(fi, lambda: pq.ParquetFile(self.files[fi]))
            # pyarrow's own thread pool is not used: reads come one at a time (the lock) from svgbench's threads
            table = pf.read_row_group(g, columns=["image"], use_threads=False)
            self._handles["group"] = cached = (os.getpid(), (fi, g, table.column("image").to_pylist()))
        cell = cached[1][2][r]
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data:
            raise DataError(f"{ref[0]}: image cell holds no bytes; {_ARCHIVE_FIX}", input=ref[0])
        return data


def _hub_class_names(metadata) -> list[str] | None:
    """ClassLabel names the hub writes into the schema metadata (b"huggingface": {"info": {"features": ...}})."""
    try:
        feats = json.loads(metadata[b"huggingface"])["info"]["features"]
        names = feats["label"].get("names")
        return [str(n) for n in names] if names else None
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


# ----------------------------------------------------------------------------------------------
# webdataset tar shards


class WebDatasetImages(_PackedImages):
    """webdataset shards: samples `{key}.<image ext>` + `{key}.cls`, indexed by one pass over the tar headers."""

    def _index(self) -> tuple[list, list[int], list[str] | None]:
        self.shards = _find_shards(self.source, self.split, ".tar", "webdataset")
        refs, labels = [], []
        for si, shard in enumerate(self.shards):
            images, cls = {}, {}
            try:
                with tarfile.open(shard, "r:") as tf:  # "r:": uncompressed only, so an item is a seek
                    for m in tf:
                        if not m.isfile():
                            continue
                        d, base = os.path.split(m.name)
                        key, _, ext = base.partition(".")
                        key = f"{d}/{key}" if d else key
                        if ext == "cls":
                            text = tf.extractfile(m).read().decode("utf-8", "replace").strip()
                            try:
                                cls[key] = int(text)
                            except ValueError:
                                raise DataError(f"{shard}:{m.name}: label {text[:40]!r} is not an integer; a "
                                                f".cls member holds the class index", input=str(shard)) from None
                        elif ("." + ext).lower() in IMG_EXTENSIONS and key not in images:
                            images[key] = (m.name, m.offset_data, m.size)
            except tarfile.ReadError as e:
                raise DataError(f"{shard}: not an uncompressed tar ({e}); decompress the shard (gunzip) or rebuild it "
                                f"as a plain .tar", input=str(shard)) from None
            unlabelled = [k for k in images if k not in cls]
            if unlabelled:
                raise DataError(f"{shard}:{images[unlabelled[0]][0]}: no {unlabelled[0]}.cls label ({len(unlabelled)} "
                                f"such samples in the shard); add the .cls members", input=str(shard))
            for key, (name, offset, size) in images.items():
                refs.append((f"{shard}:{name}", si, offset, size))
                labels.append(cls[key])
        names_file = (self.source if self.source.is_dir() else self.source.parent) / "classes.txt"
        classes = names_file.read_text().split("\n") if names_file.is_file() else None
        return refs, labels, [c for c in classes if c.strip()] if classes else None

    def _read(self, ref) -> bytes:
        _, si, offset, size = ref
        # pread: no shared file position, so the threads of scan/validate can share the descriptor
        data = os.pread(self._handle(si, lambda: os.open(self.shards[si], os.O_RDONLY)), size, offset)
        if len(data) != size:
            raise DataError(f"{ref[0]}: the shard ends inside this image ({len(data)} of {size} bytes); "
                            f"re-copy the shard", input=ref[0])
        return data


# ----------------------------------------------------------------------------------------------
# zip of an image folder


class ZipFolderDataset(_PackedImages):
    """A zipped ImageNet-layout folder: `[top/]<split>/<class>/<image>` (or `<class>/<image>` in `<split>.zip`)."""

    def _index(self) -> tuple[list, list[int], list[str] | None]:
        if not self.source.is_file():
            raise DataError(f"{self.source}: no such zip file; --data zipfolder takes the .zip of an image folder",
                            input=str(self.source))
        try:
            with zipfile.ZipFile(self.source) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{self.source}: not a readable zip ({e}); re-create it (zip -r)", input=str(self.source)) from None
        parts = [n.split("/") for n in names
                 if _is_image_file(n.rsplit("/", 1)[-1]) and not n.startswith("__MACOSX/") and n.count("/") >= 1]
        chosen = [p for p in parts if len(p) >= 3 and p[-3] in _split_names(self.split)]
        if chosen:
            prefixes = {tuple(p[:-3]) for p in chosen}
            if len(prefixes) > 1:
                raise DataError(f"{self.source}: split {self.split!r} appears under {len(prefixes)} folders "
                                f"({', '.join('/'.join(x) or '.' for x in sorted(prefixes)[:4])}); zip one image "
                                f"folder", input=str(self.source))
            chosen = [p for p in chosen if p[-3] == chosen[0][-3]]
        elif self.split is None or self.source.stem in _split_names(self.split):
            chosen = parts
        else:
            found = sorted({p[-3] for p in parts if len(p) >= 3})
            raise DataError(f"{self.source}: no {self.split}/<class>/<image> entries; splits found: "
                            f"{', '.join(found[:8]) or 'none'}; pass --split with one of them (or name the zip "
                            f"<split>.zip when it holds <class>/<image>)", input=str(self.source))
        # the order ImageFolderDataset gives a folder: classes sorted, then file names sorted within each
        chosen.sort(key=lambda p: (p[-2], p[-1]))
        classes = sorted({p[-2] for p in chosen})
        idx = {c: i for i, c in enumerate(classes)}
        refs = [(f"{self.source}:{'/'.join(p)}", "/".join(p)) for p in chosen]
        return refs, [idx[p[-2]] for p in chosen], classes

    def _read(self, ref) -> bytes:
        return self._handle("zip", lambda: zipfile.ZipFile(self.source)).read(ref[1])


def kind_of_root(root: str) -> str:
    """The format a --data-root given without --data is read as: a .zip, .tar or .parquet file, or a folder whose
    shards (directly or in data/) are .parquet or .tar; any other folder is an imagefolder."""
    p = Path(root)
    for kind, suffix in (("zipfolder", ".zip"), ("webdataset", ".tar"), ("parquet", ".parquet")):
        if p.suffix == suffix or (p.is_dir() and any(p.glob(f"*{suffix}")) or any(p.glob(f"data/*{suffix}"))):
            return kind
    return "imagefolder"


READERS = {"parquet": ParquetImageDataset, "webdataset": WebDatasetImages, "zipfolder": ZipFolderDataset}
