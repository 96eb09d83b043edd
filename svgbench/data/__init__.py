"""Datasets: the embedded procedural `shapes`, image folders (ImageNet layout), segmentation folders (ADE20K),
ImageNet-layout images packed as hub parquet shards, webdataset tars or a zip (`formats`), and any dataset
registered with `register_dataset` (`registry`: each dataset's `DatasetSpec`).

Every dataset yields dicts with "image" (float 3 x H x W in [-1, 1]) and, where it has them,
"label" (int64) and "mask" (int64 H x W, 255 = ignore).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ..errors import DataError, UserError  # noqa: F401  (DataError: part of this package's API)
from .registry import (BUILTIN_DATASETS, DATA_NEEDS, ENTRY_POINT_GROUP, FEATURE_NETWORKS,  # noqa: F401  (API)
                       RESOLUTION_POLICIES, DatasetSpec, UnknownDatasetError, dataset_spec, dataset_specs, find_dataset,
                       list_datasets, register_dataset, unregister_dataset)

# the built-in datasets (parquet, webdataset, zipfolder: the packed formats of svgbench.data.formats); --data takes
# any registered name (list_datasets())
DATA_KINDS = BUILTIN_DATASETS
# the embedded default's data: what svgbench's own tiny models were trained on (the training recipes' default)
EMBEDDED_DATA = "shapes"


@dataclass(frozen=True)
class DataConfig:
    """Which images a task sees.

    name: a registered dataset: "shapes" (embedded, generated), "imagefolder" (root/<class>/<img>), "segfolder"
        (ADE20K layout), "parquet" (hub shards), "webdataset" (tar shards), "zipfolder" (a zipped imagefolder), or
        one registered with `register_dataset`.
    split: shapes: any name (train/val/test/...); folders: the sub-folder (train/val, training/validation);
        packed formats: the shard or folder prefix (val also finds the hub's "validation").
    size: shapes: images generated; folders: at most this many (spread over classes).
    """

    name: str = EMBEDDED_DATA
    root: str | None = None
    split: str = "val"
    resolution: int = 64
    size: int | None = 512
    seed: int = 0
    max_objects: int = 1
    convert_mode: bool = False

    def __post_init__(self):
        spec = find_dataset(self.name) if isinstance(self.name, str) else None
        if spec is None:
            names = list_datasets()
            raise DataError(f"--data {self.name!r} is not a registered dataset; use {', '.join(names[:-1])} or "
                            f"{names[-1]} (or register one: svgbench --plugin FILE, as examples/my_dataset.py)",
                            input="--data")
        if spec.needs_root and not self.root:
            raise DataError(f"--data {self.name} needs its files: pass --data-root", input="--data-root")
        why = spec.check_resolution(self.resolution)
        if why:
            raise DataError(why, input="--resolution")
        # size None: the whole split (folders; the procedural data draws its default 2000); 0 or fewer is refused
        # rather than read as "all" (a record saying 0 images over a run of thousands)
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1):
            raise DataError(f"--num-images {self.size!r}: takes a positive number of images (or none for the whole "
                            "split)", input="--num-images")

    def spec(self) -> DatasetSpec:
        """The registered spec of this dataset: what it has (labels, masks, a training split) and how it is read."""
        return dataset_spec(self.name)

    def key(self) -> str:
        """Short stable id of these images, for record and cache names."""
        d = dataclasses.asdict(self) | self.spec().extra_key()
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.name}-{self.split}-{self.resolution}px-{digest}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **kw) -> "DataConfig":
        return dataclasses.replace(self, **kw)


def build_dataset(cfg: DataConfig):
    """The dataset of `cfg` (its spec's factory); it carries `data_config` (this cfg) so tasks can derive other
    splits and cache keys."""
    ds = cfg.spec().build(cfg)
    ds.data_config = cfg
    return ds


def class_names(dataset) -> list[str]:
    """The class names of a built dataset, in label order (the procedural shapes' where it names none)."""
    if getattr(dataset, "classes", None):
        return [str(c) for c in dataset.classes]
    from .shapes import SHAPE_CLASSES

    return list(SHAPE_CLASSES)


def num_classes_of(dataset) -> int:
    return len(class_names(dataset))
