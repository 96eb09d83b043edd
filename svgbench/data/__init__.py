"""Datasets: the embedded procedural `shapes`, image folders (ImageNet layout), segmentation folders (ADE20K),
and ImageNet-layout images packed as hub parquet shards, webdataset tars or a zip (`formats`).

Every dataset yields dicts with "image" (float 3 x H x W in [-1, 1]) and, where it has them,
"label" (int64) and "mask" (int64 H x W, 255 = ignore).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ..errors import DataError, UserError  # noqa: F401  (DataError: part of this package's API)


# parquet, webdataset, zipfolder: the packed formats of svgbench.data.formats (classification, like imagefolder)
DATA_KINDS = ("shapes", "imagefolder", "segfolder", "parquet", "webdataset", "zipfolder")


@dataclass(frozen=True)
class DataConfig:
    """Which images a task sees.

    name: "shapes" (embedded, generated), "imagefolder" (root/<class>/<img>), "segfolder" (ADE20K layout),
        "parquet" (hub shards), "webdataset" (tar shards), "zipfolder" (a zipped imagefolder).
    split: shapes: any name (train/val/test/...); folders: the sub-folder (train/val, training/validation);
        packed formats: the shard or folder prefix (val also finds the hub's "validation").
    size: shapes: images generated; folders: at most this many (spread over classes).
    """

    name: str = "shapes"
    root: str | None = None
    split: str = "val"
    resolution: int = 64
    size: int | None = 512
    seed: int = 0
    max_objects: int = 1
    convert_mode: bool = False

    def __post_init__(self):
        if self.name not in DATA_KINDS:
            raise DataError(f"--data {self.name!r} is not a dataset kind; use {', '.join(DATA_KINDS[:-1])} or {DATA_KINDS[-1]}",
                            input="--data")
        if self.name != "shapes" and not self.root:
            raise DataError(f"--data {self.name} needs its files: pass --data-root", input="--data-root")

    def key(self) -> str:
        """Short stable id of these images, for record and cache names."""
        d = dataclasses.asdict(self)
        if self.name == "shapes":
            from .shapes import GENERATOR_VERSION

            d["generator_version"] = GENERATOR_VERSION
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.name}-{self.split}-{self.resolution}px-{digest}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **kw) -> "DataConfig":
        return dataclasses.replace(self, **kw)


def build_dataset(cfg: DataConfig):
    """The dataset of `cfg`; it carries `data_config` (this cfg) so tasks can derive other splits and cache keys."""
    if cfg.name == "shapes":
        from .shapes import ShapesConfig, ShapesDataset

        ds = ShapesDataset(ShapesConfig(resolution=cfg.resolution, split=cfg.split, size=cfg.size or 2000,
                                        seed=cfg.seed, max_objects=cfg.max_objects))
    elif cfg.name in ("parquet", "webdataset", "zipfolder"):
        from .formats import READERS

        ds = READERS[cfg.name](cfg.root, cfg.resolution, split=cfg.split, limit=cfg.size,
                               convert_mode=cfg.convert_mode)
    else:
        from .folders import ImageFolderDataset, SegFolderDataset

        if cfg.name == "imagefolder":
            ds = ImageFolderDataset(cfg.root, cfg.resolution, split=cfg.split, limit=cfg.size,
                                    convert_mode=cfg.convert_mode)
        else:
            ds = SegFolderDataset(cfg.root, cfg.resolution, split=cfg.split, limit=cfg.size,
                                  convert_mode=cfg.convert_mode)
    ds.data_config = cfg
    return ds
