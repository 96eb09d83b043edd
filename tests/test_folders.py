import io

import numpy as np
import pytest
import torch
from PIL import Image

from svgbench.data.folders import (
    DataError,
    ImageFolderDataset,
    SegFolderDataset,
    center_crop_arr,
    from_uint8,
    to_uint8,
)


def _rgb(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _jpeg_bytes(w=64, h=48, seed=0):
    buf = io.BytesIO()
    _rgb(w, h, seed).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def cls_root(tmp_path):
    """root/{cat,dog,eel}: two JPEGs and one PNG per class, mixed-case extensions, a stray .txt."""
    root = tmp_path / "imnet"
    for c, name in enumerate(["dog", "cat", "eel"]):
        d = root / name
        d.mkdir(parents=True)
        _rgb(40, 30, seed=c).save(d / "b.JPEG")
        _rgb(30, 40, seed=10 + c).save(d / "a.jpg")
        _rgb(33, 33, seed=20 + c).save(d / "c.png")
        (d / "notes.txt").write_text("not an image")
    return root


# ----------------------------------------------------------------------------------------------
# center_crop_arr


def test_center_crop_no_resize_is_a_plain_centre_crop():
    arr = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
    out = center_crop_arr(Image.fromarray(arr), 4)
    # Shorter side already 4 (< 2*4, so no halving); the resize is the identity; crop cols 2..5.
    np.testing.assert_array_equal(out, arr[:, 2:6])


def test_center_crop_box_halving_then_crop():
    # 16x8 image made of constant 2x2 blocks: BOX halving gives the block values exactly (8x4),
    # then the 4x4 centre crop takes block columns 2..5.
    blocks = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
    arr = blocks.repeat(2, axis=0).repeat(2, axis=1)
    out = center_crop_arr(Image.fromarray(arr), 4)
    np.testing.assert_array_equal(out, blocks[:, 2:6])


@pytest.mark.parametrize("w,h", [(300, 200), (200, 301), (97, 64), (64, 64), (30, 17)])
def test_center_crop_shape_and_dtype(w, h):
    out = center_crop_arr(_rgb(w, h), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_center_crop_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        center_crop_arr(Image.new("L", (10, 10)), 8)


# ----------------------------------------------------------------------------------------------
# uint8 helpers


def test_uint8_round_trip_and_rounding():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(x)), x)
    assert torch.equal(from_uint8(x.numpy()), from_uint8(x))
    y = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, 1 / 127.5 - 1])
    assert to_uint8(y).tolist() == [0, 0, 128, 255, 255, 1]  # 0.0 -> 127.5 -> 128 (half to even)
    with pytest.raises(ValueError):
        to_uint8(torch.tensor([float("nan")]))
    with pytest.raises(TypeError):
        from_uint8(torch.zeros(3))


# ----------------------------------------------------------------------------------------------
# ImageFolderDataset


def test_image_folder_labels_shapes_ranges(cls_root):
    ds = ImageFolderDataset(cls_root, 16)
    assert ds.classes == ["cat", "dog", "eel"]
    assert len(ds) == 9
    assert [p.rsplit("/", 2)[-2:] for p, _ in ds.samples[:3]] == [["cat", "a.jpg"], ["cat", "b.JPEG"], ["cat", "c.png"]]
    assert ds.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    item = ds[4]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["label"].dtype == torch.int64 and item["label"].item() == 1
    assert item["index"] == 4 and item["path"].endswith("dog/b.JPEG")
    expected = from_uint8(center_crop_arr(Image.open(item["path"]).convert("RGB"), 16)).permute(2, 0, 1)
    assert torch.equal(item["image"], expected)
    assert ds.validate() == 9
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].tolist() == [0, 0, 0, 1]


def test_image_folder_split_max_per_class_limit(cls_root, tmp_path):
    (tmp_path / "ds").mkdir()
    cls_root.rename(tmp_path / "ds" / "val")
    ds = ImageFolderDataset(tmp_path / "ds", 8, split="val", max_per_class=2)
    assert len(ds) == 6 and ds.targets == [0, 0, 1, 1, 2, 2]
    assert len(ImageFolderDataset(tmp_path / "ds" / "val", 8, split="val")) == 9
    ds = ImageFolderDataset(tmp_path / "ds", 8, split="val", limit=3)
    assert ds.targets == [0, 1, 2]  # spread over the sorted list, not the first three
    with pytest.raises(DataError, match="train"):
        ImageFolderDataset(tmp_path / "ds", 8, split="train")


def test_image_folder_empty_and_missing_roots(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders") as e:
        ImageFolderDataset(tmp_path / "empty", 8)
    assert str(tmp_path / "empty") in str(e.value)
    flat = tmp_path / "flat"
    flat.mkdir()
    _rgb(8, 8).save(flat / "x.png")
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderDataset(flat, 8)
    noimg = tmp_path / "noimg"
    (noimg / "a").mkdir(parents=True)
    (noimg / "a" / "x.txt").write_text("")
    with pytest.raises(DataError, match="no image files"):
        ImageFolderDataset(noimg, 8)


def _only(tmp_path, name, writer):
    root = tmp_path / "one"
    (root / "k").mkdir(parents=True)
    path = root / "k" / name
    writer(path)
    return ImageFolderDataset(root, 8), str(path)


def test_corrupt_file_raises_data_error_naming_it(tmp_path):
    ds, path = _only(tmp_path, "bad.jpg", lambda p: p.write_bytes(np.random.default_rng(0).bytes(500)))
    with pytest.raises(DataError, match="bad.jpg") as e:
        ds[0]
    assert path in str(e.value) and isinstance(e.value, ValueError)


def test_truncated_jpeg_and_png_raise(tmp_path):
    data = _jpeg_bytes()
    ds, path = _only(tmp_path, "trunc.jpg", lambda p: p.write_bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match="truncated") as e:
        ds[0]
    assert path in str(e.value)

    buf = io.BytesIO()
    _rgb(64, 48).save(buf, "PNG")
    png = buf.getvalue()
    (tmp_path / "p").mkdir()
    ds, path = _only(tmp_path / "p", "trunc.png", lambda p: p.write_bytes(png[: len(png) // 2]))
    with pytest.raises(DataError) as e:
        ds[0]
    assert path in str(e.value)


def test_truncation_tolerance_flag_is_refused(cls_root, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="LOAD_TRUNCATED_IMAGES"):
        ImageFolderDataset(cls_root, 8)[0]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_non_rgb_modes_refused_by_default_and_converted_on_request(tmp_path, mode):
    root = tmp_path / "modes"
    (root / "k").mkdir(parents=True)
    ext = "jpg" if mode == "CMYK" else "png"
    path = root / "k" / f"img.{ext}"
    _rgb(12, 10).convert(mode).save(path)
    with pytest.raises(DataError, match=f"img.{ext}.*'{mode}'.*--convert-mode"):
        ImageFolderDataset(root, 8)[0]
    with pytest.raises(DataError, match="img"):
        ImageFolderDataset(root, 8).validate()
    item = ImageFolderDataset(root, 8, convert_mode=True)[0]
    assert item["image"].shape == (3, 8, 8)


def test_validate_lists_all_bad_files(cls_root):
    junk = np.random.default_rng(1).bytes(300)
    bad = []
    for i in range(23):
        p = cls_root / "dog" / f"z{i:02d}.jpg"
        p.write_bytes(junk)
        bad.append(p)
    Image.new("L", (9, 9)).save(cls_root / "cat" / "gray.png")
    ds = ImageFolderDataset(cls_root, 8)
    with pytest.raises(DataError) as e:
        ds.validate()
    msg = str(e.value)
    assert msg.startswith("24 of 33 image files")
    assert "gray.png" in msg and str(bad[0]) in msg
    assert "... and 4 more" in msg
    assert msg.count("\n  ") == 21  # 20 listed + the summary line
    with pytest.raises(DataError) as e2:
        ds.validate(num_workers=4)
    assert str(e2.value) == msg


# ----------------------------------------------------------------------------------------------
# SegFolderDataset


def _seg_root(tmp_path, pairs, split="validation"):
    """pairs: {stem: (PIL image or None, PIL label or None)}"""
    root = tmp_path / "ade"
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    for stem, (img, lab) in pairs.items():
        if img is not None:
            img.save(root / "images" / split / f"{stem}.jpg", quality=95)
        if lab is not None:
            lab.save(root / "annotations" / split / f"{stem}.png")
    return root


def _split_pair(w, h, cut, axis):
    """Image black before `cut` and white after it along `axis`; label 1 before, 2 after."""
    idx = np.arange(w if axis == 1 else h)
    row = np.where(idx < cut, 1, 2).astype(np.uint8)
    lab = np.broadcast_to(row[None, :], (h, w)) if axis == 1 else np.broadcast_to(row[:, None], (h, w))
    img = np.where(lab[..., None] == 1, 0, 255).astype(np.uint8).repeat(3, axis=2)
    return Image.fromarray(img), Image.fromarray(np.ascontiguousarray(lab))


@pytest.mark.parametrize("w,h,cut,axis", [(48, 32, 18, 1), (32, 48, 30, 0)])
def test_seg_alignment_after_resize_and_crop(tmp_path, w, h, cut, axis):
    img, lab = _split_pair(w, h, cut, axis)
    root = _seg_root(tmp_path, {"a": (img, lab)})
    ds = SegFolderDataset(root, 16, reduce_zero_label=False)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (16, 16)
    assert item["mask"].dtype == torch.int64 and item["path"].endswith("a.jpg")
    # Scale 0.5 -> long side 24, crop offset 4: the cut lands at cut/2 - 4 along `axis`.
    boundary = cut // 2 - 4
    mask = item["mask"] if axis == 1 else item["mask"].T
    image = item["image"].mean(0) if axis == 1 else item["image"].mean(0).T
    expected = torch.tensor([1] * boundary + [2] * (16 - boundary))
    assert torch.equal(mask, expected.expand(16, 16))
    far = (torch.arange(16) - boundary).abs() >= 2  # away from bicubic/JPEG blur at the edge
    assert (image[:, far & (expected == 1)] < -0.8).all()
    assert (image[:, far & (expected == 2)] > 0.8).all()
    assert ds.validate() == 1


def test_seg_reduce_zero_label(tmp_path):
    raw = np.array([[0, 1, 5, 255], [150, 2, 0, 1], [1, 1, 1, 1], [3, 3, 3, 3]], dtype=np.uint8)
    root = _seg_root(tmp_path, {"a": (_rgb(4, 4), Image.fromarray(raw))})
    mask = SegFolderDataset(root, 4)[0]["mask"]
    expected = np.array([[255, 0, 4, 255], [149, 1, 255, 0], [0, 0, 0, 0], [2, 2, 2, 2]])
    np.testing.assert_array_equal(mask.numpy(), expected)
    mask = SegFolderDataset(root, 4, reduce_zero_label=False, num_classes=151)[0]["mask"]
    np.testing.assert_array_equal(mask.numpy(), raw.astype(np.int64))


def test_seg_label_value_out_of_range(tmp_path):
    raw = np.full((6, 6), 3, dtype=np.uint8)
    raw[2, 2] = 200
    root = _seg_root(tmp_path, {"a": (_rgb(6, 6), Image.fromarray(raw))})
    with pytest.raises(DataError, match=r"a\.png.*200") as e:
        SegFolderDataset(root, 4)[0]
    assert str(root / "annotations" / "validation" / "a.png") in str(e.value)
    with pytest.raises(DataError, match="200"):
        SegFolderDataset(root, 4, reduce_zero_label=False).validate()
    assert SegFolderDataset(root, 4, num_classes=255)[0]["mask"].max() == 199


def test_seg_missing_annotation(tmp_path):
    root = _seg_root(tmp_path, {"a": (_rgb(6, 6), Image.new("L", (6, 6))), "b": (_rgb(6, 6), None)})
    with pytest.raises(DataError, match="no annotation") as e:
        SegFolderDataset(root, 4)
    assert "b.jpg" in str(e.value) and "a.jpg" not in str(e.value)


def test_seg_size_mismatch_and_multichannel_label(tmp_path):
    root = _seg_root(
        tmp_path,
        {"a": (_rgb(8, 6), Image.new("L", (6, 8), 1)), "b": (_rgb(6, 6), Image.new("RGB", (6, 6), (1, 1, 1)))},
    )
    ds = SegFolderDataset(root, 4)
    with pytest.raises(DataError, match="a.jpg.*8x6.*a.png.*6x8"):
        ds[0]
    with pytest.raises(DataError, match="b.png.*3 channels"):
        ds[1]
    with pytest.raises(DataError, match="2 of 2 image/label pairs"):
        ds.validate()


def test_seg_missing_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        SegFolderDataset(tmp_path / "nope", 4)
    root = _seg_root(tmp_path, {"a": (_rgb(6, 6), Image.new("L", (6, 6)))})
    with pytest.raises(DataError, match="training"):
        SegFolderDataset(root, 4, split="training")


# ----------------------------------------------------------------------------------------------
# optional GPU JPEG decoding


def test_gpu_decode_falls_back_to_pil_without_cuda(cls_root, monkeypatch):
    import svgbench.data.folders as folders

    default = ImageFolderDataset(cls_root, resolution=16)
    monkeypatch.setenv(folders.GPU_DECODE_ENV, "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not folders.gpu_decode_enabled()
    opted = ImageFolderDataset(cls_root, resolution=16)
    for i in range(len(default)):
        assert torch.equal(default[i]["image"], opted[i]["image"]), default[i]["path"]


def test_torchvision_jpeg_decode_within_one_level_of_pil(cls_root, tmp_path, monkeypatch):
    import svgbench.data.folders as folders

    f = tmp_path / "x.jpg"
    f.write_bytes(_jpeg_bytes(64, 48, seed=5))
    ours = np.asarray(folders.decode_jpeg_rgb(str(f), device="cpu")).astype(int)
    with Image.open(f) as im:
        pil = np.asarray(im.convert("RGB")).astype(int)
    assert ours.shape == pil.shape == (48, 64, 3) and np.abs(ours - pil).max() <= 1
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "g.jpg")
    assert folders.decode_jpeg_rgb(str(tmp_path / "g.jpg"), device="cpu") is None  # grayscale: PIL's path
    # the dataset with the option on (torchvision's decoder on the CPU standing in for nvJPEG)
    default = ImageFolderDataset(cls_root, resolution=16)
    monkeypatch.setattr(folders, "gpu_decode_enabled", lambda: True)
    monkeypatch.setattr(folders, "decode_jpeg_rgb", lambda p, device="cuda", f=folders.decode_jpeg_rgb: f(p, "cpu"))
    opted = ImageFolderDataset(cls_root, resolution=16)
    for i in range(len(default)):
        a, b = default[i]["image"], opted[i]["image"]
        assert (to_uint8(a).int() - to_uint8(b).int()).abs().max() <= 1, default[i]["path"]
