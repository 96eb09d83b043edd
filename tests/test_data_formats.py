"""Packed formats (hub parquet, webdataset tar, zip): the same images give the same items and records as a folder,
and bad input is one line naming the file."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from svgbench.data import DataConfig, DataError, build_dataset
from svgbench.data.synthetic import write_stripes_imagefolder

pq = pytest.importorskip("pyarrow.parquet")  # a main dependency; skipped only in a broken install
import pyarrow as pa  # noqa: E402

SPLITS = {"train": 8, "val": 8}  # 4 classes x (8 + 8) = the 64-image set


def _samples(folder: Path, split: str):
    """(class, file name, bytes) of `folder/split` in ImageFolderDataset's order."""
    out = []
    for cdir in sorted(p for p in (folder / split).iterdir() if p.is_dir()):
        for f in sorted(cdir.iterdir()):
            out.append((cdir.name, f.name, f.read_bytes()))
    return out


def _present(folder: Path) -> list[str]:
    return [s for s in SPLITS if (folder / s).is_dir()]


def write_parquet(folder: Path, out: Path, rows_per_group: int = 5) -> Path:
    for split in _present(folder):
        s = _samples(folder, split)
        classes = sorted({c for c, _, _ in s})
        table = pa.table({"image": [{"bytes": b, "path": n} for _, n, b in s],
                          "label": [classes.index(c) for c, _, _ in s]})
        features = {"image": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
        (out / "data").mkdir(parents=True, exist_ok=True)
        half = len(s) // 2  # two shards, several row groups each: reads cross both boundaries
        hub_split = "validation" if split == "val" else split
        for i, part in enumerate((table.slice(0, half), table.slice(half))):
            pq.write_table(part, out / "data" / f"{hub_split}-{i:05d}-of-00002.parquet", row_group_size=rows_per_group)
    return out


def write_webdataset(folder: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for split in _present(folder):
        s = _samples(folder, split)
        classes = sorted({c for c, _, _ in s})
        (out / "classes.txt").write_text("\n".join(classes) + "\n")
        with tarfile.open(out / f"{split}-000000.tar", "w") as tf:
            for i, (c, name, data) in enumerate(s):
                for ext, payload in (("jpg", data), ("cls", str(classes.index(c)).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    return out


def write_zip(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:  # stored in reverse order: the reader must sort as a folder does
        for split in _present(folder):
            for c, name, data in reversed(_samples(folder, split)):
                zf.writestr(f"imgs/{split}/{c}/{name}", data)
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    folder = write_stripes_imagefolder(root / "folder", SPLITS, num_classes=4, resolution=40, seed=3)
    return {"imagefolder": folder, "parquet": write_parquet(folder, root / "pq"),
            "webdataset": write_webdataset(folder, root / "wds"), "zipfolder": write_zip(folder, root / "imgs.zip")}


@pytest.mark.parametrize("kind", ["parquet", "webdataset", "zipfolder"])
def test_items_equal_the_folder_items(packed, kind):
    ref = build_dataset(DataConfig("imagefolder", str(packed["imagefolder"]), resolution=32, size=None))
    ds = build_dataset(DataConfig(kind, str(packed[kind]), resolution=32, size=None))
    assert len(ds) == len(ref) == 32 and ds.classes == ref.classes and ds.targets == ref.targets
    # a pickled copy (a spawned DataLoader worker) opens its own files
    for i in (0, 7, 8, 31, 5):
        a, b = pickle.loads(pickle.dumps(ds))[i], ref[i]
        assert torch.equal(a["image"], b["image"]) and int(a["label"]) == int(b["label"])
    # DataLoader workers (forked here) read the same batches as the folder's
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)
    for a, b in zip(loader, torch.utils.data.DataLoader(ref, batch_size=8)):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    lim = build_dataset(DataConfig(kind, str(packed[kind]), split="train", resolution=32, size=5))
    ref_lim = build_dataset(DataConfig("imagefolder", str(packed["imagefolder"]), split="train", resolution=32, size=5))
    assert lim.targets == ref_lim.targets and torch.equal(lim[4]["image"], ref_lim[4]["image"])
    scan = ds.scan(decode=True, num_workers=2)
    assert scan.count == 32 and not scan.unreadable and scan.modes == {"RGB": 32}
    assert ds.validate(num_workers=2) == 32


def test_same_records_in_every_format(packed, tmp_path, monkeypatch):
    """One encoder and task over the same 64 images: identical metrics whichever way they are stored."""
    from svgbench.runner import RunConfig, run_matrix

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))  # every format encodes its own images

    metrics = {}
    for kind, root in packed.items():
        data = DataConfig(kind, str(root), resolution=32, size=None)
        cfg = RunConfig(encoders=("pixels",), tasks=("knn",), data=data, device="cpu",
                        results_dir=str(tmp_path / kind), batch_size=16,
                        task_overrides={"knn": {"train_size": 32, "ks": (3,), "ci_resamples": 50,
                                                "silhouette_points": 32, "pca_record_points": 8}})
        summary = run_matrix(cfg)
        assert not summary.failures, summary.failures
        (rec,) = summary.records
        m = dict(rec.metrics)
        m.pop("extract_s", None)
        metrics[kind] = json.dumps({k: v for k, v in m.items() if not k.endswith("_s")}, sort_keys=True)
    assert len(set(metrics.values())) == 1, metrics
    top1 = json.loads(metrics["parquet"])["knn_top1_k3"]
    assert 25.0 < top1 <= 100.0  # 4 separable classes: well above chance, so the labels were read
    assert json.loads(metrics["parquet"])["features_cached"] is False


def _one_line_error(cfg: DataConfig) -> str:
    with pytest.raises(DataError) as e:
        ds = build_dataset(cfg)
        ds.validate()
    return str(e.value)


def test_bad_files_named_in_one_line(packed, tmp_path):
    # a damaged image inside each format names the archive and the member
    folder = packed["imagefolder"]
    bad = tmp_path / "bad"
    (bad / "val" / "a").mkdir(parents=True)
    good = next((folder / "val").rglob("*.JPEG")).read_bytes()
    (bad / "val" / "a" / "x.jpg").write_bytes(good[: len(good) // 3])
    for kind, path in (("parquet", write_parquet(bad, tmp_path / "pq")), ("webdataset", write_webdataset(bad, tmp_path / "w")),
                       ("zipfolder", write_zip(bad, tmp_path / "b.zip"))):
        ds = build_dataset(DataConfig(kind, str(path), resolution=32, size=None))
        with pytest.raises(DataError) as e:
            ds[0]
        msg = str(e.value)
        assert "\n" not in msg and "cannot read image" in msg and str(path) in msg, msg
        scan = ds.scan(decode=True)
        assert len(scan.unreadable) == 1 and scan.unreadable[0][0] in msg
    # compressed tar, foreign parquet, missing labels, missing split: one line with the fix
    gz = tmp_path / "gz"
    gz.mkdir()
    with tarfile.open(gz / "val-0.tar", "w:gz") as tf:
        tf.add(next((folder / "val").rglob("*.JPEG")), "k.jpg")
    msg = _one_line_error(DataConfig("webdataset", str(gz), resolution=32))
    assert "val-0.tar" in msg and "decompress" in msg
    nolab = tmp_path / "nolab"
    nolab.mkdir()
    with tarfile.open(nolab / "val-0.tar", "w") as tf:
        tf.add(next((folder / "val").rglob("*.JPEG")), "k.jpg")
    msg = _one_line_error(DataConfig("webdataset", str(nolab), resolution=32))
    assert "val-0.tar" in msg and "k.cls" in msg and "\n" not in msg
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pq.write_table(pa.table({"pixels": [b"x"]}), foreign / "val-0.parquet")
    msg = _one_line_error(DataConfig("parquet", str(foreign), resolution=32))
    assert "val-0.parquet" in msg and "`image`" in msg and "\n" not in msg
    unl = tmp_path / "unlabelled"
    unl.mkdir()
    pq.write_table(pa.table({"image": [{"bytes": good, "path": "a.jpg"}], "label": [-1]}), unl / "test-0.parquet")
    msg = _one_line_error(DataConfig("parquet", str(unl), split="test", resolution=32))
    assert "test-0.parquet:row0" in msg and "unlabelled" in msg and "\n" not in msg
    msg = _one_line_error(DataConfig("parquet", str(packed["parquet"]), split="test", resolution=32))
    assert "splits found: train, validation" in msg and "--split" in msg
    msg = _one_line_error(DataConfig("zipfolder", str(packed["zipfolder"]), split="test", resolution=32))
    assert "splits found: train, val" in msg


def test_preflight_data_check_reads_packed_images(packed, tmp_path):
    from svgbench.validate import check_data

    assert check_data(DataConfig("zipfolder", str(packed["zipfolder"]), resolution=32)) == []
    zpath = tmp_path / "gray.zip"
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (40, 40), 128).save(buf, "PNG")
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("val/a/g.png", buf.getvalue())
    (p,) = check_data(DataConfig("zipfolder", str(zpath), resolution=32))
    assert "gray.zip:val/a/g.png" in str(p) and "--convert-mode" in str(p)


def test_kind_told_by_the_root(packed):
    from svgbench.data.formats import kind_of_root

    assert {k: kind_of_root(str(v)) for k, v in packed.items()} == {k: k for k in packed}
