"""The dataset registry: one name -> one `DatasetSpec`, which declares everything a task, the runner, the records
and the reports need to know about the data, so that no code outside `svgbench.data` tests a dataset's name.

A spec declares its factory ((DataConfig) -> map-style dataset whose items are dicts with "image", float
3 x H x W in [-1, 1], and where it has them "label" and "mask"), its splits and which one trains, whether it has
class labels and per-pixel masks, its class names when fixed, its resolution policy, and the feature network its
generation metrics use. A task declares what it needs (`TaskSpec.needs`: "labels", "masks", "train"); `lacks`
says, in one line, why a dataset cannot give it, and the runner records the task's cell as n/a with that reason.

Built-in datasets are declared below with lazy factories (importing svgbench imports no reader); third-party
datasets arrive through `register_dataset` in the user's code (a `--plugin` file, see examples/my_dataset.py) or
the `svgbench.datasets` entry-point group (value: "package.module:SPEC", a DatasetSpec of the same name).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DataError
from ..registry import Registry, UnknownNameError, is_reference, resolve, spec_entry_point

ENTRY_POINT_GROUP = "svgbench.datasets"

# How a dataset turns its images into resolution x resolution squares.
RESOLUTION_POLICIES = {
    "render": "drawn at the asked resolution (procedural data: no resampling)",
    "adm-center-crop": "ADM centre crop: box-halved while the short side is >= 2x, bicubic short side to the "
                       "resolution, central square (guided-diffusion, DiT, SiT)",
    "resize-center-crop": "bicubic short side to the resolution, central square (masks: nearest, alongside)",
    "resize": "resized to a square (bicubic; the aspect ratio is not kept)",
}
# The feature network of the generation metrics (FID, KID, precision/recall) on a dataset: svgbench's shapes judge
# (a classifier trained on the procedural data; its numbers are labelled judge-FID) or Inception-v3 (natural images).
FEATURE_NETWORKS = ("inception", "judge")
DATA_NEEDS = frozenset({"labels", "masks", "train"})  # what a task may need from its data (TaskSpec.needs)


class UnknownDatasetError(UnknownNameError):
    pass


@dataclass
class DatasetSpec:
    """A registered dataset.

    factory: (DataConfig) -> dataset, or a lazy "module:attribute" string.
    splits: the splits it ships with (the CLI's --split); () when any name is a split (procedural data draws a
        fresh stream per name). train_split: the split training-side tasks (probes, the segmentation head, the
        diffusion model) read; None when the dataset has none (those tasks are then n/a).
    labels / masks: whether items carry "label" (int64) / "mask" (int64 H x W, 255 = ignore).
    classes: the class names when fixed by the dataset; None when read from its files (the dataset's `classes`).
    resolution_policy: a key of RESOLUTION_POLICIES. resolution_multiple / min_resolution: the resolutions it can
        produce (checked before any work).
    feature_network: a FEATURE_NETWORKS entry, the network of its generation metrics.
    needs_root: whether it reads files (--data-root); a root given without --data to a preset whose data needs
        none is read as a folder or archive of its own kind.
    shipped_models: svgbench's shipped diffusion models were trained on it (only here may the generation task
        load them instead of training).
    label_note: said after the split in table rows ("embedded, procedural"). caveat: said once in figure titles
        of results on it ("not ImageNet numbers").
    key_extra: () -> dict, or a lazy reference: what else its pixels depend on (a generator version), folded into
        `DataConfig.key()`.
    arrays: (resolution, split, size, seed, workers, cache_dir) -> {"images": uint8 N x H x W x 3, "labels": int64 N},
        or a lazy reference: a whole split in memory, which training recipes read instead of item by item; None
        where the dataset is read item by item only.
    views: (resolution, seed) -> an object with `size`, `item(index)` (uint8 H x W x 3) and
        `views(index, n, view_seed, repose)` (the item's object redrawn on new backgrounds, optionally re-posed),
        or a lazy reference: the data-side views of self-supervised training; None where only crops exist.
    """

    name: str
    factory: Callable[..., Any] | str
    description: str = ""
    splits: tuple[str, ...] = ("train", "val")
    train_split: str | None = "train"
    labels: bool = True
    masks: bool = False
    classes: tuple[str, ...] | None = None
    resolution_policy: str = "adm-center-crop"
    resolution_multiple: int = 1
    min_resolution: int = 1
    feature_network: str = "inception"
    needs_root: bool = True
    shipped_models: bool = False
    label_note: str = ""
    caveat: str = ""
    key_extra: Callable[[], dict] | str | None = None
    arrays: Callable[..., dict] | str | None = None
    views: Callable[..., Any] | str | None = None
    source: str = "builtin"
    _resolved: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if not (callable(self.factory) or is_reference(self.factory)):
            raise TypeError(f"dataset {self.name!r}: factory must be callable or a 'module:attribute' string")
        if self.resolution_policy not in RESOLUTION_POLICIES:
            raise ValueError(f"dataset {self.name!r}: resolution_policy {self.resolution_policy!r} is not one of "
                             f"{', '.join(RESOLUTION_POLICIES)}")
        if self.feature_network not in FEATURE_NETWORKS:
            raise ValueError(f"dataset {self.name!r}: feature_network {self.feature_network!r} is not one of "
                             f"{', '.join(FEATURE_NETWORKS)}")
        self.splits = tuple(self.splits)
        if self.splits and self.train_split is not None and self.train_split not in self.splits:
            raise ValueError(f"dataset {self.name!r}: train_split {self.train_split!r} is not one of its splits "
                             f"{', '.join(self.splits)}")
        if self.classes is not None:
            self.classes = tuple(str(c) for c in self.classes)
        for attr in ("resolution_multiple", "min_resolution"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"dataset {self.name!r}: {attr} must be a positive integer, got {value!r}")

    def build(self, cfg) -> Any:
        """The dataset of `cfg` (a DataConfig naming this spec)."""
        return self._lazy("factory")(cfg)

    def _lazy(self, attr: str):
        if attr not in self._resolved:
            self._resolved[attr] = resolve(getattr(self, attr))
        return self._resolved[attr]

    def read_arrays(self, resolution: int, split: str, size: int, seed: int = 0, workers: int = 1,
                    cache_dir=None) -> dict:
        """A whole split as arrays (`arrays`); raises DataError naming the dataset where it has no such reader."""
        if self.arrays is None:
            raise DataError(f"data {self.name!r} has no in-memory reader (DatasetSpec.arrays); read it item by item")
        return self._lazy("arrays")(resolution, split, size, seed, workers, cache_dir)

    def view_renderer(self, resolution: int, seed: int = 0):
        """The data-side view renderer (`views`); raises DataError naming the dataset where it has none."""
        if self.views is None:
            raise DataError(f"data {self.name!r} has no data-side views (DatasetSpec.views); use crops")
        return self._lazy("views")(resolution, seed)

    def extra_key(self) -> dict:
        return {} if self.key_extra is None else dict(resolve(self.key_extra)())

    def check_resolution(self, resolution) -> str | None:
        """Why this dataset cannot produce `resolution` x `resolution` images, or None."""
        try:
            r = operator.index(resolution)
        except TypeError:
            return f"--resolution must be a positive integer, got {resolution!r}"
        if r < self.min_resolution or r % self.resolution_multiple:
            rule = f">= {self.min_resolution}" if self.min_resolution > 1 else "> 0"
            rule += f" and a multiple of {self.resolution_multiple}" if self.resolution_multiple > 1 else ""
            return f"--resolution {r}: data {self.name!r} takes resolutions {rule}"
        return None

    def lacks(self, need: str) -> str | None:
        """Why this dataset cannot give what a task needs ("labels", "masks", "train"), or None when it can."""
        if need == "labels" and not self.labels:
            return f"data {self.name!r} has no class labels"
        if need == "masks" and not self.masks:
            others = [s.name for s in dataset_specs() if s.masks]
            hint = f" (datasets with masks: {', '.join(others)})" if others else ""
            return f"data {self.name!r} has no per-pixel masks{hint}"
        if need == "train" and self.train_split is None:
            return f"data {self.name!r} has no training split"
        return None

    def label(self, data: dict) -> str:
        """The row label of records on this data (`data`: a record's data config)."""
        if self.needs_root:
            return f"{data['name']}:{data.get('root')}/{data['split']} {data['resolution']}px"
        note = f" ({self.label_note})" if self.label_note else ""
        return f"{data['name']}/{data['split']}{note} {data['resolution']}px"

    def as_dict(self) -> dict:
        """What `svgbench list` shows."""
        return {"name": self.name, "splits": ", ".join(self.splits) or "any", "train split": self.train_split or "-",
                "labels": self.labels, "masks": self.masks, "resolution": self.resolution_policy,
                "feature network": self.feature_network, "files": self.needs_root, "source": self.source}


# --------------------------------------------------------------------------------------------
# the built-in datasets

def _build_shapes(cfg):
    from .shapes import ShapesConfig, ShapesDataset

    return ShapesDataset(ShapesConfig(resolution=cfg.resolution, split=cfg.split, size=2000 if cfg.size is None else cfg.size,
                                      seed=cfg.seed, max_objects=cfg.max_objects))


def _shapes_key_extra() -> dict:
    from .shapes import GENERATOR_VERSION

    return {"generator_version": GENERATOR_VERSION}


def _shapes_arrays(resolution, split, size, seed, workers, cache_dir) -> dict:
    from .shapes import ShapesConfig, data_cache_dir, shapes_arrays

    return shapes_arrays(ShapesConfig(resolution=resolution, split=split, size=size, seed=seed), workers=workers,
                         cache_dir=cache_dir or data_cache_dir())


class _ShapesViews:
    """The shapes' training stream (effectively unbounded) with its objects redrawn on new backgrounds."""

    def __init__(self, resolution: int, seed: int):
        from .shapes import ShapesConfig

        self.cfg = ShapesConfig(resolution=resolution, split="train", size=10_000_000, seed=seed)
        self.size = self.cfg.size

    def item(self, index: int):
        from .shapes import render_item

        return render_item(self.cfg, index)[0]

    def views(self, index: int, n: int, view_seed: int, repose: bool = False) -> list:
        from .shapes import render_views

        return render_views(self.cfg, index, n, view_seed=view_seed, repose=repose)[0]


def _build_imagefolder(cfg):
    from .folders import ImageFolderDataset

    return ImageFolderDataset(cfg.root, cfg.resolution, split=cfg.split, limit=cfg.size, convert_mode=cfg.convert_mode)


def _build_segfolder(cfg):
    from .folders import SegFolderDataset

    return SegFolderDataset(cfg.root, cfg.resolution, split=cfg.split, limit=cfg.size, convert_mode=cfg.convert_mode)


def _packed(kind: str):
    def build(cfg):
        from .formats import READERS

        return READERS[kind](cfg.root, cfg.resolution, split=cfg.split, limit=cfg.size, convert_mode=cfg.convert_mode)

    build.__name__ = f"_build_{kind}"
    return build


def _builtin_specs() -> list[DatasetSpec]:
    from .shapes import SHAPE_CLASSES  # numpy and torch only: no reader, no image library beyond PIL

    packed = "ImageNet-layout images packed as {}: labels from the archive, ADM centre crop, Inception metrics"
    return [
        DatasetSpec("shapes", _build_shapes, "svgbench's embedded procedural shapes: coloured shapes on textured "
                    "backgrounds, a class label and a per-pixel mask per image, drawn on demand",
                    splits=(), train_split="train", masks=True, classes=tuple(SHAPE_CLASSES),
                    resolution_policy="render", resolution_multiple=8, min_resolution=16, feature_network="judge",
                    needs_root=False, shipped_models=True, label_note="embedded, procedural",
                    caveat="embedded shapes data, tiny models: not ImageNet numbers", key_extra=_shapes_key_extra,
                    arrays=_shapes_arrays, views=_ShapesViews),
        DatasetSpec("imagefolder", _build_imagefolder, "an ImageNet-layout folder: root/<split>/<class>/<image>"),
        DatasetSpec("segfolder", _build_segfolder, "an ADE20K-layout folder: root/images/<split>, "
                    "root/annotations/<split> (PNG label maps; 0 = ignore)", splits=("training", "validation"),
                    train_split="training", labels=False, masks=True, resolution_policy="resize-center-crop"),
        DatasetSpec("parquet", _packed("parquet"), packed.format("the hub's parquet shards (root/data/<split>-*)")),
        DatasetSpec("webdataset", _packed("webdataset"), packed.format("webdataset tar shards (root/<split>-*.tar)")),
        DatasetSpec("zipfolder", _packed("zipfolder"), packed.format("a zip of an image folder")),
    ]


BUILTIN_DATASETS = ("shapes", "imagefolder", "segfolder", "parquet", "webdataset", "zipfolder")


DATASETS = Registry("dataset", ENTRY_POINT_GROUP, name_re=r"^[a-z0-9][a-z0-9_-]*$",
                    name_rule="lower-case letters, digits, '_' and '-'",
                    builtins=lambda: {s.name: s for s in _builtin_specs()}, from_entry_point=spec_entry_point(DatasetSpec),
                    unknown_error=UnknownDatasetError)


def register_dataset(name: str, factory: Callable[..., Any] | str | None = None, **spec: Any):
    """Register a dataset; returns its `DatasetSpec` (used as a decorator when `factory` is omitted: returns the
    factory). `factory(cfg)` takes the run's `DataConfig` (name, root, split, resolution, size, seed,
    convert_mode) and returns a map-style dataset whose items are dicts with "image" (float 3 x H x W in
    [-1, 1]) and, as declared, "label" and "mask". The keywords are `DatasetSpec`'s fields."""
    if factory is None:
        return lambda f: (register_dataset(name, f, **spec), f)[1]
    DATASETS.check_free(name)
    spec.setdefault("source", "user")
    return DATASETS.add(name, DatasetSpec(name, factory, **spec))


unregister_dataset = DATASETS.remove
list_datasets = DATASETS.names  # the built-ins, then the others in registration order
dataset_spec = DATASETS.get  # an unknown name: UnknownDatasetError listing the registered ones
find_dataset = DATASETS.find  # None for an unknown name (records of a dataset whose plugin is not loaded report)


def dataset_specs() -> list[DatasetSpec]:
    return [dataset_spec(n) for n in list_datasets()]
