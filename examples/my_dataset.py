"""A complete third-party dataset for svgbench: labelled images listed in one CSV file per split.

    ROOT/train.csv, ROOT/val.csv   a header line "file,label", then one line per image: its path relative to ROOT
                                   and its class name (the layout many labelled image sets are shipped in)

Run every task on it with:
    svgbench --plugin examples/my_dataset.py run --data csv-images --data-root ROOT --encoders pixels

It has class labels and a training split, so the probes, kNN, reconstruction and generation tables get its rows
(and the scorecard its column values); it has no per-pixel masks, so `seg` is n/a with that reason. Images are
read with the ADM centre crop, as svgbench's image folders are, and its generation metrics use Inception.
"""

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from svgbench import register_dataset
from svgbench.data import DataError
from svgbench.data.folders import center_crop_arr


class CsvImages(Dataset):
    """Items: {"image": float 3 x H x W in [-1, 1], "label": int64}. Class ids are the sorted class names of all
    the root's CSV files, so every split numbers them alike."""

    def __init__(self, cfg):
        self.root, self.resolution = Path(cfg.root), cfg.resolution
        table = self.root / f"{cfg.split}.csv"
        if not table.is_file():
            found = ", ".join(sorted(p.stem for p in self.root.glob("*.csv"))) or "none"
            # one line naming the input and the fix, as svgbench's own datasets do
            raise DataError(f"{table}: no such file (splits found: {found}); pass --split with one of them",
                            input=str(table))
        self.classes = sorted({row["label"] for t in sorted(self.root.glob("*.csv")) for row in self._rows(t)})
        rows = self._rows(table)
        if cfg.size is not None:  # the first `size` images, spread over the list so every class keeps some
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, min(cfg.size, len(rows))).round().astype(int)]
        self.files = [self.root / r["file"] for r in rows]
        self.targets = [self.classes.index(r["label"]) for r in rows]

    @staticmethod
    def _rows(table: Path) -> list[dict]:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"file", "label"} <= set(rows[0]):
            raise DataError(f"{table}: needs a header line 'file,label' and one line per image", input=str(table))
        return rows

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            arr = center_crop_arr(im.convert("RGB"), self.resolution)
        image = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
        return {"image": image, "label": torch.tensor(self.targets[i], dtype=torch.int64), "index": i}


register_dataset(
    "csv-images", CsvImages,
    description="labelled images listed in ROOT/<split>.csv (file,label)",
    splits=("train", "val"), train_split="train", labels=True, masks=False,
    resolution_policy="adm-center-crop", feature_network="inception",
)
