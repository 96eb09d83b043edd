"""Tests for the procedural `shapes` dataset."""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch

from svgbench.data import shapes
from svgbench.data.shapes import (
    NUM_SEG_CLASSES,
    SHAPE_CLASSES,
    ShapesConfig,
    ShapesDataset,
    cache_path,
    render_item,
    render_shape,
    shapes_arrays,
    split_code,
)


@pytest.fixture(scope="module")
def train_arrays():
    return shapes_arrays(ShapesConfig(split="train", size=2000, seed=0))


@pytest.fixture(scope="module")
def test_arrays():
    return shapes_arrays(ShapesConfig(split="test", size=1000, seed=0))


# ------------------------------------------------------------------------------------------
# API constants


def test_classes():
    assert len(SHAPE_CLASSES) >= 10
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)
    assert NUM_SEG_CLASSES == len(SHAPE_CLASSES) + 1


# ------------------------------------------------------------------------------------------
# Determinism


def test_same_item_is_identical():
    cfg = ShapesConfig(size=50, seed=3)
    for i in (0, 7, 49):
        a, b = render_item(cfg, i), render_item(cfg, i)
        assert a[0].tobytes() == b[0].tobytes()
        assert a[1] == b[1]
        assert a[2].tobytes() == b[2].tobytes()


def test_order_does_not_matter():
    ds = ShapesDataset(ShapesConfig(size=20, seed=1))
    forward = [ds[i]["image"] for i in range(20)]
    backward = [ds[i]["image"] for i in reversed(range(20))][::-1]
    for f, b in zip(forward, backward):
        assert torch.equal(f, b)


def test_workers_give_same_arrays():
    cfg = ShapesConfig(size=300, seed=2, max_objects=2)
    one = shapes_arrays(cfg, workers=1)
    two = shapes_arrays(cfg, workers=2)
    for k in ("images", "labels", "masks"):
        np.testing.assert_array_equal(one[k], two[k])
    image, label, mask = render_item(cfg, 123)
    np.testing.assert_array_equal(one["images"][123], image)
    assert one["labels"][123] == label
    np.testing.assert_array_equal(one["masks"][123], mask)


def test_splits_and_seeds_differ():
    names = ("train", "val", "test", "seg-train", "seg-val")
    assert len({split_code(n) for n in names}) == len(names)
    base = ShapesConfig(size=20, split="train", seed=0)
    imgs = {}
    for cfg in [dataclasses.replace(base, split=n) for n in names] + [
        dataclasses.replace(base, seed=1)
    ]:
        imgs[(cfg.split, cfg.seed)] = np.stack([render_item(cfg, i)[0] for i in range(20)])
    keys = list(imgs)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            # No item may coincide, not even at a different index.
            x, y = imgs[keys[a]], imgs[keys[b]]
            diff = np.abs(x[:, None].astype(int) - y[None].astype(int)).reshape(20, 20, -1)
            assert diff.max(axis=2).min() > 0, (keys[a], keys[b])


def test_main_object_independent_of_max_objects():
    one = ShapesConfig(size=40, max_objects=1)
    many = dataclasses.replace(one, max_objects=4)
    labels_one = [render_item(one, i)[1] for i in range(40)]
    labels_many = [render_item(many, i)[1] for i in range(40)]
    assert labels_one == labels_many


# ------------------------------------------------------------------------------------------
# Item contents


def test_dataset_item_format():
    ds = ShapesDataset(resolution=32, size=5)
    assert len(ds) == 5
    item = ds[2]
    assert set(item) == {"image", "label", "mask", "index"}
    img, label, mask = item["image"], item["label"], item["mask"]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert -1.0 <= img.min().item() and img.max().item() <= 1.0
    assert img.max().item() - img.min().item() > 0.3
    assert label.dtype == torch.int64 and label.ndim == 0
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert item["index"] == 2
    assert ds[-1]["index"] == 4
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 32, 32)
    assert batch["label"].shape == (2,)


def test_labels_in_range_and_balanced(train_arrays):
    labels = train_arrays["labels"]
    assert labels.dtype == np.int64 and labels.shape == (2000,)
    assert labels.min() >= 0 and labels.max() < len(SHAPE_CLASSES)
    counts = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    expected = len(labels) / len(SHAPE_CLASSES)
    # About 5 binomial standard deviations (sd ~ 13.4 for 200 expected).
    assert np.all(np.abs(counts - expected) < 70), counts


def test_images_use_full_range(train_arrays):
    images = train_arrays["images"]
    assert images.dtype == np.uint8 and images.shape == (2000, 64, 64, 3)
    per_image_std = images.reshape(len(images), -1).std(axis=1)
    assert per_image_std.min() > 5  # no blank images
    means = images.reshape(-1, 3).mean(axis=0)
    assert np.all((means > 60) & (means < 195))


def test_mask_consistent_with_label(train_arrays):
    labels, masks = train_arrays["labels"], train_arrays["masks"]
    assert masks.dtype == np.uint8 and masks.shape == (2000, 64, 64)
    for label, mask in zip(labels, masks):
        ids = set(np.unique(mask).tolist())
        assert ids <= {0, int(label) + 1}
        frac = float((mask == label + 1).mean())
        # Smallest: a thin crescent at 20% radius; largest: a circle at 45% radius (~64%).
        assert 0.02 < frac < 0.7, (label, frac)


def test_mask_matches_object_pixels():
    # Where the mask says "object", pixels differ from the pure background render.
    cfg = ShapesConfig(size=10, seed=5)
    for i in range(10):
        image, label, mask = render_item(cfg, i)
        assert mask.max() == label + 1
        inside = image[mask > 0].astype(float).mean(axis=0)
        outside = image[mask == 0].astype(float).mean(axis=0)
        assert np.linalg.norm(inside - outside) > 10


def test_multi_object_masks():
    cfg = ShapesConfig(size=200, max_objects=3, seed=4)
    arrays = shapes_arrays(cfg)
    n_classes_seen = []
    for label, mask in zip(arrays["labels"], arrays["masks"]):
        assert mask.max() < NUM_SEG_CLASSES
        assert (mask == label + 1).any()
        n_classes_seen.append(len(np.unique(mask)) - 1)
    assert max(n_classes_seen) >= 2


@pytest.mark.parametrize("background", shapes.BACKGROUND_KINDS)
def test_background_kinds(background):
    image, label, mask = render_item(ShapesConfig(size=3, background=background), 1)
    assert image.shape == (64, 64, 3) and 0 <= label < len(SHAPE_CLASSES)


def test_every_class_renders():
    coverages = []
    for k, name in enumerate(SHAPE_CLASSES):
        by_index = render_shape(k, 64, radius=0.4, rotation=30.0)
        by_name = render_shape(name, 64, radius=0.4, rotation=30.0)
        np.testing.assert_array_equal(by_index, by_name)
        assert by_index.dtype == np.float32
        assert 0.0 <= by_index.min() and by_index.max() <= 1.0
        assert 0.05 < by_index.mean() < 0.6, name
        coverages.append(by_index)
    # Pairwise different outlines (anti-aliased coverage differs by many pixels).
    for a in range(len(coverages)):
        for b in range(a + 1, len(coverages)):
            diff = np.abs((coverages[a] >= 0.5).astype(int) - (coverages[b] >= 0.5))
            assert diff.sum() > 20, (SHAPE_CLASSES[a], SHAPE_CLASSES[b])


def test_every_class_appears(train_arrays):
    assert set(np.unique(train_arrays["labels"]).tolist()) == set(range(len(SHAPE_CLASSES)))


def test_other_resolutions():
    for res in (16, 24, 128):
        image, label, mask = render_item(ShapesConfig(resolution=res, size=2), 0)
        assert image.shape == (res, res, 3) and mask.shape == (res, res)
        assert (mask == label + 1).any()


# ------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"resolution": 12}, ("resolution", "12")),
        ({"resolution": 60}, ("resolution", "60")),
        ({"size": 0}, ("size", "0")),
        ({"size": -5}, ("size", "-5")),
        ({"background": "plaid"}, ("background", "plaid")),
        ({"seed": -1}, ("seed", "-1")),
        ({"max_objects": 0}, ("max_objects", "0")),
        ({"split": ""}, ("split",)),
    ],
)
def test_bad_config(kwargs, words):
    with pytest.raises(ValueError) as info:
        ShapesConfig(**kwargs)
    for w in words:
        assert w in str(info.value)


def test_bad_render_shape_args():
    with pytest.raises(ValueError, match="shape"):
        render_shape("oval", 64)
    with pytest.raises(ValueError, match="shape"):
        render_shape(len(SHAPE_CLASSES), 64)
    with pytest.raises(ValueError, match="resolution"):
        render_shape(0, 20)


def test_index_out_of_range():
    ds = ShapesDataset(size=7, split="val")
    for bad in (7, 100, -8):
        with pytest.raises(IndexError) as info:
            ds[bad]
        msg = str(info.value)
        assert "ShapesDataset" in msg and "7" in msg
    with pytest.raises(IndexError):
        render_item(ds.cfg, 7)


def test_bad_workers():
    with pytest.raises(ValueError, match="workers"):
        shapes_arrays(ShapesConfig(size=2), workers=0)


# ------------------------------------------------------------------------------------------
# Cache


def test_cache_roundtrip(tmp_path, monkeypatch):
    cfg = ShapesConfig(size=40, resolution=32, seed=9)
    first = shapes_arrays(cfg, cache_dir=tmp_path)
    path = cache_path(cfg, tmp_path)
    assert path.exists() and path.suffix == ".npz"
    assert os.listdir(tmp_path) == [path.name]  # no temp files left behind

    def no_generation(*args, **kwargs):
        raise AssertionError("should have been loaded from the cache")

    monkeypatch.setattr(shapes, "_generate", no_generation)
    second = shapes_arrays(cfg, cache_dir=tmp_path)
    for k in ("images", "labels", "masks"):
        np.testing.assert_array_equal(first[k], second[k])
        assert first[k].dtype == second[k].dtype


def test_cache_name_depends_on_config(tmp_path):
    a = ShapesConfig(size=40)
    assert cache_path(a, tmp_path) != cache_path(dataclasses.replace(a, split="val"), tmp_path)
    assert cache_path(a, tmp_path) != cache_path(dataclasses.replace(a, max_objects=2), tmp_path)
    assert cache_path(a, tmp_path) == cache_path(ShapesConfig(size=40), tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_is_regenerated(tmp_path, damage):
    cfg = ShapesConfig(size=30, resolution=16, seed=11)
    good = shapes_arrays(cfg, cache_dir=tmp_path)
    path = cache_path(cfg, tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        np.savez(path, key=np.array(cfg.key()), images=good["images"][:5],
                 labels=good["labels"][:5], masks=good["masks"][:5])
    with pytest.warns(RuntimeWarning, match="regenerating"):
        again = shapes_arrays(cfg, cache_dir=tmp_path)
    for k in ("images", "labels", "masks"):
        np.testing.assert_array_equal(good[k], again[k])
    # The rewritten file is valid again and loads silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = shapes_arrays(cfg, cache_dir=tmp_path)
    np.testing.assert_array_equal(good["images"], third["images"])


# ------------------------------------------------------------------------------------------
# Benchmark hardness: shape identity is not linearly readable from raw pixels.


def _pixels16(images: np.ndarray) -> np.ndarray:
    n, res = images.shape[0], images.shape[1]
    f = res // 16
    x = images.reshape(n, 16, f, 16, f, 3).astype(np.float32).mean(axis=(2, 4))
    return x.reshape(n, -1) / 255.0


def test_raw_pixel_linear_probe_is_weak(train_arrays, test_arrays):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = _pixels16(train_arrays["images"]), _pixels16(test_arrays["images"])
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    best = 0.0
    for c in (0.01, 0.1):
        clf = LogisticRegression(C=c, max_iter=1000).fit(x_train, train_arrays["labels"])
        best = max(best, clf.score(x_test, test_arrays["labels"]))
    assert best < 0.35, f"raw-pixel linear probe reaches {best:.3f}"


def test_large_split_items_come_from_the_array_cache_unchanged(tmp_path, monkeypatch):
    """A split of MATERIALIZE_MIN+ items is rendered once into the array cache; its items equal render_item."""
    monkeypatch.setenv("SVGBENCH_DATA_CACHE", str(tmp_path))
    monkeypatch.setattr(ShapesDataset, "MATERIALIZE_MIN", 64)
    ds = ShapesDataset(resolution=32, split="val", size=80)
    for i in (0, 37, 79):
        img, label, mask = render_item(ds.cfg, i)
        item = ds[i]
        assert torch.equal(item["image"], torch.from_numpy(img).permute(2, 0, 1).float().div(127.5).sub(1.0))
        assert item["label"].item() == label and torch.equal(item["mask"], torch.from_numpy(mask.astype(np.int64)))
    assert len(list(tmp_path.glob("shapes-32px-*.npz"))) == 1
