"""Segmentation: mmseg-based metrics against a direct confusion matrix, and the DINOv2 linear-head task
end to end (oracle / constant / NaN tokens on shapes, an ADE20K-layout folder through the runner)."""

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from svgbench.data import DataConfig, build_dataset
from svgbench.data.shapes import NUM_SEG_CLASSES
from svgbench.encoders import EncoderSpec, LatentEncoder, register_encoder, unregister_encoder
from svgbench.metrics.segmentation import SegMetric, confusion_matrix, metrics_from_confusion, per_image_areas
from svgbench.metrics.stats import seg_ci
from svgbench.tasks.segmentation import SegConfig, run_segmentation, train_dataset_for


@pytest.fixture(autouse=True)
def _one_thread_and_private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "feature-cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# metrics


def _assert_same(a: dict, b: dict, tol=1e-6):
    for k in ("miou", "macc", "aacc"):
        assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])
    for k in ("iou", "acc"):
        x, y = np.array(a[k]), np.array(b[k])
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        np.testing.assert_allclose(x[~np.isnan(x)], y[~np.isnan(y)], rtol=0, atol=tol)
    assert a["num_pixels"] == b["num_pixels"]


def test_metrics_agree_with_direct_confusion_matrix():
    g = torch.Generator().manual_seed(0)
    c = 9
    metric, cm = SegMetric(c), np.zeros((c, c), np.int64)
    for _ in range(6):
        label = torch.randint(0, 6, (3, 24, 20), generator=g)  # classes 6, 7, 8 never labelled
        label[torch.rand(label.shape, generator=g) < 0.15] = 255
        pred = torch.where(torch.rand(label.shape, generator=g) < 0.6, label.clamp(max=6),
                           torch.randint(0, 5, label.shape, generator=g))  # 5 rarely, 6 where ignored, 7/8 never
        pred[0, 0, 0] = 7  # predicted but never labelled
        metric.update(pred, label)
        cm += confusion_matrix(pred, label, c)
    ours, direct = metric.compute(), metrics_from_confusion(cm)
    _assert_same(ours, direct)
    iou, acc = np.array(ours["iou"]), np.array(ours["acc"])
    assert np.isnan(iou[8]) and np.isnan(acc[8])  # absent everywhere: excluded from both means
    assert iou[7] == 0.0 and np.isnan(acc[7])  # predicted only: lowers mIoU, excluded from mAcc
    assert ours["miou"] == pytest.approx(np.nanmean(iou) * 100, abs=1e-9)
    assert ours["num_pixels"] == int((cm.sum()))


def test_per_image_areas_sum_to_mmseg_areas_and_seg_ci_recomputes_its_value():
    g = torch.Generator().manual_seed(1)
    c = 7
    label = torch.randint(0, 5, (12, 16, 16), generator=g)  # 5, 6 never labelled
    label[torch.rand(label.shape, generator=g) < 0.1] = 255
    pred = torch.where(torch.rand(label.shape, generator=g) < 0.7, label.clamp(max=5),
                       torch.randint(0, 6, label.shape, generator=g))
    metric = SegMetric(c)
    metric.update(pred, label)
    areas = per_image_areas(pred, label, c)
    inter, union, _, lab = (a.numpy() for a in metric.areas)
    np.testing.assert_array_equal(areas["intersect"].sum(0), inter)
    np.testing.assert_array_equal(areas["union"].sum(0), union)
    np.testing.assert_array_equal(areas["label"].sum(0), lab)
    for i in range(12):  # each image's row is its own confusion matrix's diagonal / row sums
        cm = confusion_matrix(pred[i], label[i], c)
        np.testing.assert_array_equal(areas["intersect"][i], np.diag(cm))
        np.testing.assert_array_equal(areas["label"][i], cm.sum(1))
    ref = metric.compute()
    res = seg_ci(areas["intersect"], areas["union"], areas["label"], n_resamples=1000, seed=0)
    for k in ("miou", "macc"):
        assert res[k]["value"] == pytest.approx(ref[k], abs=1e-9)
        assert res[k]["ci_low"] < ref[k] < res[k]["ci_high"] and res[k]["n"] == 12


def test_metrics_split_large_inputs_into_exact_histc_chunks(monkeypatch):
    import svgbench.metrics.segmentation as seg

    g = torch.Generator().manual_seed(1)
    label, pred = torch.randint(0, 5, (2, 30, 30), generator=g), torch.randint(0, 5, (2, 30, 30), generator=g)
    whole = SegMetric(5)
    whole.update(pred, label)
    monkeypatch.setattr(seg, "_HISTC_EXACT", 97)
    chunked = SegMetric(5)
    chunked.update(pred, label)
    _assert_same(chunked.compute(), whole.compute(), tol=0)


def test_metrics_hand_example():
    # label [[0, 0], [1, 255]], pred [[0, 1], [1, 2]]: class 0: I=1, U=2; class 1: I=1, U=2; class 2 absent
    # from labels and only predicted on an ignored pixel, so it is absent from both after ignoring.
    m = SegMetric(3)
    m.update(torch.tensor([[0, 1], [1, 2]]), torch.tensor([[0, 0], [1, 255]]))
    out = m.compute()
    assert out["iou"][:2] == [0.5, 0.5] and math.isnan(out["iou"][2])
    assert out["acc"][:2] == [0.5, 1.0] and math.isnan(out["acc"][2])
    assert out["miou"] == pytest.approx(50.0) and out["macc"] == pytest.approx(75.0)
    assert out["aacc"] == pytest.approx(200 / 3) and out["num_pixels"] == 3


def test_metrics_refuse_bad_input():
    m = SegMetric(4)
    with pytest.raises(ValueError, match="label values"):
        m.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 4))
    with pytest.raises(ValueError, match="predicted class ids"):
        m.update(torch.full((2, 2), 9), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        m.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    m.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255))
    with pytest.raises(ValueError, match="no labelled pixels"):
        m.compute()


def test_mmseg_models_import_with_or_without_compiled_mmcv_ops():
    from svgbench.metrics._mmcv_guard import MmcvOpsUnavailable, ensure_mmcv_ops, import_mmseg_models

    assert hasattr(import_mmseg_models(), "BaseSegmentor")
    if ensure_mmcv_ops() is None:
        pytest.skip("full mmcv is installed: the real mmcv.ops is in use")
    import mmcv.ops

    # point_sample is mmcv's pure-PyTorch function: the centre of a 2x2 map is the mean of its values
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert mmcv.ops.point_sample(x, torch.full((1, 1, 2), 0.5)).item() == pytest.approx(1.5)
    with pytest.raises(MmcvOpsUnavailable, match="sigmoid_focal_loss"):
        mmcv.ops.sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 2.0, 0.25)
    with pytest.raises(ModuleNotFoundError, match="compiled extensions"):  # what mmseg's optional imports catch
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    assert not hasattr(mmcv.ops, "__wrapped__")


# ------------------------------------------------------------------------------------------------
# the task on shapes


def _image_key(img: torch.Tensor) -> str:
    return hashlib.sha1(img.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


class MaskTokens(LatentEncoder):
    """Test encoder: patch tokens are the true mask's class fractions per 8x8 cell (looked up by image),
    or constant / NaN tokens."""

    def __init__(self, datasets=(), mode="oracle", num_classes=NUM_SEG_CLASSES, down=8, resolution=64):
        super().__init__(EncoderSpec(name=f"test-seg-{mode}", family="test", latent_channels=num_classes,
                                     downsample=down, resolution=resolution, has_decoder=False, weights="none"))
        self.mode, self.table = mode, {}
        for ds in datasets:
            for i in range(len(ds)):
                item = ds[i]
                onehot = F.one_hot(item["mask"], num_classes).permute(2, 0, 1).float()[None]
                self.table[_image_key(item["image"])] = F.avg_pool2d(onehot, 8)[0]

    def _encode(self, x):
        b, _, h, w = x.shape
        shape = (b, self.spec.latent_channels, h // 8, w // 8)
        if self.mode == "constant":
            return torch.ones(shape)
        if self.mode == "nan":
            return torch.full(shape, float("nan"))
        return torch.stack([self.table[_image_key(img)] for img in x])


QUICK = SegConfig(train_size=128, epochs=4, lr=1e-2, batch_size=64)


@pytest.fixture(scope="module")
def shapes_eval():
    return build_dataset(DataConfig(split="val", size=64))


def test_oracle_tokens_give_high_miou_and_runs_repeat_exactly(shapes_eval):
    train = train_dataset_for(shapes_eval, QUICK)
    assert train.data_config == shapes_eval.data_config.replace(split="train", size=128)
    enc = MaskTokens([train, shapes_eval])
    first = run_segmentation(enc, shapes_eval, QUICK)
    assert first["unavailable"] == {} and first["num_images"] == 64 and first["train_images"] == 128
    assert first["num_classes"] == NUM_SEG_CLASSES
    assert first["miou"] > 70 and first["aacc"] > 90, first
    for k in ("miou", "macc"):
        assert first["ci"][k]["ci_low"] <= first[k] <= first["ci"][k]["ci_high"] and first["ci"][k]["n"] == 64
    areas = first["per_image_areas"]
    assert np.array(areas["intersect"]).shape == (64, NUM_SEG_CLASSES)
    assert seg_ci(areas["intersect"], areas["union"], areas["label"], n_resamples=10)["miou"]["value"] == \
        pytest.approx(first["miou"], abs=1e-9)
    again = run_segmentation(enc, shapes_eval, QUICK)  # tokens now come from the feature cache
    timing = ("train_s", "stats_s")
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in first.items() if k not in timing}


def test_constant_tokens_predict_background_only(shapes_eval):
    out = run_segmentation(MaskTokens(mode="constant"), shapes_eval, QUICK)
    masks = torch.stack([shapes_eval[i]["mask"] for i in range(len(shapes_eval))])
    present = len(masks.unique())
    background = float((masks == 0).double().mean() * 100)
    # argmax of the bias alone: background everywhere, so aAcc = background share, mAcc = 1 / present classes
    assert out["aacc"] == pytest.approx(background, abs=1e-6)
    assert out["macc"] == pytest.approx(100 / present, abs=1e-6)
    assert out["miou"] == pytest.approx(background / present, abs=1e-6)


def test_nan_tokens_are_reported_not_crashed(shapes_eval):
    out = run_segmentation(MaskTokens(mode="nan"), shapes_eval, QUICK)
    assert out["miou"] is None and out["macc"] is None and out["aacc"] is None
    assert "non-finite" in out["unavailable"]["miou"]


def test_refuses_wrong_grid_same_split_and_maskless_data(shapes_eval):
    wrong = MaskTokens(mode="constant")
    wrong.spec = wrong.spec.replace(downsample=16)  # claims 4x4 tokens but gives 8x8
    with pytest.raises(ValueError, match="grid"):
        run_segmentation(wrong, shapes_eval, QUICK)
    train_split = build_dataset(DataConfig(split="train", size=8))
    with pytest.raises(ValueError, match="same split"):
        run_segmentation(MaskTokens(mode="constant"), train_split, QUICK)
    with pytest.raises(ValueError, match="data_config"):
        run_segmentation(MaskTokens(mode="constant"), torch.utils.data.Subset(shapes_eval, range(4)), QUICK)


# ------------------------------------------------------------------------------------------------
# an ADE20K-layout folder through the runner

PALETTE = {1: (230, 20, 20), 2: (20, 230, 20), 3: (20, 20, 230)}  # raw label -> colour


def _write_ade(root, split, n, seed):
    """32x32 images made of 8x8 blocks; raw label 1..3 = coloured block, 0 = grey block (ignored after
    reduce_zero_label)."""
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    for i in range(n):
        blocks = rng.integers(0, 4, (4, 4))
        label = blocks.repeat(8, 0).repeat(8, 1).astype(np.uint8)
        img = np.full((32, 32, 3), 128, np.uint8)
        for raw, colour in PALETTE.items():
            img[label == raw] = colour
        img = np.clip(img.astype(int) + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img, "RGB").save(root / "images" / split / f"img{i:03d}.png")
        Image.fromarray(label, "L").save(root / "annotations" / split / f"img{i:03d}.png")


class MeanColour(LatentEncoder):
    """Test encoder: one token per 8x8 cell, its mean colour."""

    def __init__(self):
        super().__init__(EncoderSpec(name="test-seg-mean-colour", family="test", latent_channels=3, downsample=8,
                                     resolution=32, has_decoder=False, weights="none"))

    def _encode(self, x):
        return F.avg_pool2d(x, 8)


def test_ade20k_layout_folder_through_runner_and_report(tmp_path):
    from svgbench.report import write_reports
    from svgbench.runner import RunConfig, run_matrix

    root = tmp_path / "ade"
    _write_ade(root, "training", 16, seed=1)
    _write_ade(root, "validation", 6, seed=2)
    data = DataConfig(name="segfolder", root=str(root), split="validation", resolution=32, size=None)
    results = tmp_path / "results"
    register_encoder("test-seg-mean-colour", MeanColour)
    try:
        cfg = RunConfig(encoders=("test-seg-mean-colour",), tasks=("seg",), data=data, device="cpu",
                        results_dir=str(results), batch_size=8,
                        task_overrides={"seg": {"train_size": 16, "epochs": 15, "train_batch_size": 4, "lr": 3e-2}})
        summary = run_matrix(cfg, log=lambda m: None)
    finally:
        unregister_encoder("test-seg-mean-colour")
    assert not summary.failures, summary.failures
    record = summary.records[0]
    m = record.metrics
    assert record.config == dataclasses.asdict(SegConfig(batch_size=8, train_size=16, epochs=15,
                                                             train_batch_size=4, lr=3e-2))
    assert m["num_images"] == 6 and m["train_images"] == 16 and m["num_classes"] == 150
    # three colour-coded classes; the other 147 ADE20K ids never occur and are excluded (NaN), not counted as 0
    assert m["miou"] > 80 and m["aacc"] > 90, m
    md = write_reports(results)["seg"].read_text()
    assert "mIoU (%)" in md and "test-seg-mean-colour" in md
