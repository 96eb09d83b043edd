"""Image datasets read from folders: ImageNet-style classification and ADE20K-style segmentation.

Both datasets return images as float32 tensors in [-1, 1], shape 3 x H x W (the encoder contract),
prepared with the ADM / DiT centre crop for classification and an aligned shorter-side resize plus
centre crop for segmentation.

Nothing here repairs data quietly: unreadable or truncated files, non-RGB images (unless
`convert_mode=True`, the CLI's --convert-mode), unmatched or malformed label maps all raise
`DataError` naming the file. `scan_images` reads only file headers, for a check of a whole folder
in seconds before any work (modes, sizes, images small enough to be upscaled).
"""

from __future__ import annotations

import errno
import io
import operator
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset

from ..errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# How many bad files `validate()` lists by name before summarising the rest as a count.
_MAX_LISTED = 20


# ----------------------------------------------------------------------------------------------
# uint8 <-> [-1, 1]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map images in [-1, 1] (any shape, any float dtype/device) to uint8 in [0, 255].

    Uses ((x + 1) * 127.5).round().clamp(0, 255); `round` is round-half-to-even, so the mapping is
    the same on every device. Out-of-range values are clamped; NaN or inf raise ValueError because
    a uint8 cast would turn them into arbitrary pixels.
    """
    if not torch.is_tensor(images):
        raise TypeError(f"to_uint8 expects a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"to_uint8 expects a floating-point tensor in [-1, 1], got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("to_uint8: images contain NaN or inf")
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Map uint8 pixels (tensor or numpy array, any shape) to float32 in [-1, 1]: x / 127.5 - 1.

    Exact inverse of `to_uint8` on uint8 values. The layout is unchanged (no HWC -> CHW permute).
    """
    if isinstance(x, np.ndarray):
        # torch cannot wrap read-only arrays (e.g. np.asarray of a PIL image) without a warning.
        x = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x))
    if not torch.is_tensor(x):
        raise TypeError(f"from_uint8 expects a uint8 tensor or numpy array, got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise TypeError(f"from_uint8 expects uint8 values, got {x.dtype}")
    return x.to(torch.float32) / 127.5 - 1.0


def _hwc_uint8_to_chw(arr: np.ndarray) -> torch.Tensor:
    return from_uint8(arr).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------
# Geometry


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """ADM / guided-diffusion centre crop (also used by DiT and SiT) -> uint8 array image_size x image_size x 3.

    While the shorter side is at least 2 * image_size, halve the image with a BOX filter; then
    resize (BICUBIC) so the shorter side is image_size, each side scaled by image_size / min side
    and rounded with Python's `round`; then take the central image_size x image_size crop
    (offset (size - image_size) // 2 on each axis).

    The image must already be RGB: converting modes is the caller's decision.
    """
    image_size = _check_resolution(image_size)
    if pil_image.mode != "RGB":
        raise ValueError(f"center_crop_arr expects an RGB image, got mode {pil_image.mode!r}")
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)

    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)

    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


def _resize_crop_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Shorter side -> size, then the central size x size box: ((new_w, new_h), (left, top, right, bottom))."""
    scale = size / min(width, height)
    new_w, new_h = round(width * scale), round(height * scale)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return (new_w, new_h), (left, top, left + size, top + size)


def _check_resolution(resolution) -> int:
    try:
        r = operator.index(resolution)
    except TypeError:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}") from None
    if r <= 0:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    return r


# ----------------------------------------------------------------------------------------------
# Reading files


def _refuse_truncation_tolerance() -> None:
    # The flag is process-wide and some training code switches it on; with it set, a truncated
    # file decodes as a partly grey image instead of failing, which a benchmark must not accept.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process, so truncated images would be "
            "read silently; set it back to False before loading svgbench datasets"
        )


_UNREADABLE_FIX = "replace the file or delete it from the folder"


GPU_DECODE_ENV = "SVGBENCH_GPU_DECODE"  # "1": decode JPEG files with nvJPEG when CUDA is available


def gpu_decode_enabled() -> bool:
    """SVGBENCH_GPU_DECODE=1 and CUDA available; otherwise every file is decoded by PIL (the default)."""
    return os.environ.get(GPU_DECODE_ENV, "0") == "1" and torch.cuda.is_available()


def decode_jpeg_rgb(path: str, device: str = "cuda") -> Image.Image | None:
    """`path` decoded by torchvision.io.decode_jpeg on `device` as an RGB PIL image (the crop and resize
    stay PIL's, so the geometry is unchanged); None when it is not a 3-channel JPEG torchvision decodes
    (grayscale, CMYK, damaged: PIL then decodes it and names any error). nvJPEG's IDCT may differ from
    libjpeg-turbo's by a level on some pixels."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    try:
        img = decode_jpeg(read_file(path), mode=ImageReadMode.UNCHANGED, device=device)
    except Exception:  # not decodable here: PIL's path decides and reports
        return None
    if img.ndim != 3 or img.shape[0] != 3:
        return None
    return Image.fromarray(img.permute(1, 2, 0).cpu().numpy(), "RGB")


def _open_loaded(path: str, read: Callable[[str], bytes] | None = None,
                 fix: str = _UNREADABLE_FIX) -> Image.Image:
    """Open and fully decode `path` (one read of the file); the returned image no longer needs it.

    `read`: for images inside archives and parquet shards, returns the encoded bytes `path` names
    (then `path` is only the name errors give). With SVGBENCH_GPU_DECODE=1 and CUDA, JPEG files are
    decoded on the GPU (`decode_jpeg_rgb`). Any failure (unknown format, bad checksum, truncation,
    decompression bomb) becomes one DataError line naming the file, raised without PIL's chained traceback.
    """
    _refuse_truncation_tolerance()
    if read is None and path.lower().endswith((".jpg", ".jpeg")) and gpu_decode_enabled():
        im = decode_jpeg_rgb(path)
        if im is not None:
            return im
    source = io.BytesIO(read(path)) if read is not None else path
    try:
        with Image.open(source) as im:
            im.load()  # a full decode checks the data (zlib checksums, truncation) as it goes
            # copy() detaches the pixels from the file object that the `with` closes.
            return im.copy()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        reason = (str(e).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {reason}); {fix}",
                        input=path, fix=fix) from None


CONVERT_FIX = "pass --convert-mode (convert_mode=True) to convert non-RGB images to RGB"
_MODE_NAMES = {"L": "grayscale", "LA": "grayscale + alpha", "P": "palette", "PA": "palette + alpha",
               "RGBA": "RGB + alpha", "CMYK": "CMYK", "1": "1-bit", "I;16": "16-bit grayscale",
               "I;16B": "16-bit grayscale", "I;16L": "16-bit grayscale", "I;16N": "16-bit grayscale",
               "I": "32-bit integer", "F": "32-bit float", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}
# 32-bit integer and float pixels have no known white level, so no conversion can be trusted.
_UNCONVERTIBLE = ("I", "F")


# --convert-mode's ways with an alpha channel: plain conversion (True) drops it, so transparent pixels show the
# colour stored under them (often black); a composite lays the image over a stated background first.
COMPOSITES = {"composite-white": (255, 255, 255), "composite-black": (0, 0, 0)}


def convert_mode_of(value) -> bool | str:
    """A convert_mode setting as the loaders take it: False, True (PIL's conversion) or a COMPOSITES name."""
    if isinstance(value, str):
        if value not in COMPOSITES:
            raise DataError(f"--convert-mode {value}: not a way to convert; give --convert-mode alone (PIL's "
                            f"conversion) or one of {', '.join(COMPOSITES)}", input="--convert-mode")
        return value
    return bool(value)


def has_alpha(im: Image.Image) -> bool:
    """Whether `im` carries transparency: an alpha band, or a palette / grey / RGB image with a transparent colour."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _as_rgb(im: Image.Image, path: str, convert_mode: bool | str) -> Image.Image:
    if convert_mode in COMPOSITES and has_alpha(im):
        background = Image.new("RGBA", im.size, COMPOSITES[convert_mode] + (255,))
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    if im.mode == "RGB":
        return im
    what = f"{im.mode!r} ({_MODE_NAMES.get(im.mode, 'not RGB')})"
    if im.mode in _UNCONVERTIBLE:
        fix = "save it as 8- or 16-bit RGB or grayscale"
        raise DataError(f"{path}: image mode is {what}, whose white level is unknown; {fix}", input=path, fix=fix)
    if not convert_mode:
        raise DataError(f"{path}: image mode is {what}, not 'RGB', and svgbench does not convert "
                        f"implicitly; {CONVERT_FIX}", input=path, fix=CONVERT_FIX)
    if im.mode.startswith("I;16"):
        # PIL's convert() clips 16-bit values at 255 (a white image); scale 0..65535 to 0..255 instead.
        arr = np.asarray(im).astype(np.float64) / 257.0
        im = Image.fromarray(np.rint(arr).astype(np.uint8), "L")
    try:
        return im.convert("RGB")
    except Exception as e:
        reason = (str(e).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: cannot convert mode {im.mode!r} to RGB ({type(e).__name__}: {reason}); "
                        f"save it as 8-bit RGB", input=path) from None


def _load_rgb(path: str, convert_mode: bool, read: Callable[[str], bytes] | None = None,
              fix: str = _UNREADABLE_FIX) -> Image.Image:
    return _as_rgb(_open_loaded(path, read, fix), path, convert_mode)


def _is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _kind(entry: os.DirEntry, want: str) -> bool:
    """entry.is_dir() / is_file() (want: "dir" / "file"), following links; a link that leads back to itself (ELOOP)
    is a DataError naming it, where os.scandir would raise OSError from deep inside the listing."""
    try:
        is_it = entry.is_dir() if want == "dir" else entry.is_file()
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        target = os.readlink(entry.path) if entry.is_symlink() else "?"
        raise DataError(f"{entry.path}: symbolic-link loop (it points to {target}, which leads back to itself); "
                        f"remove the link or point it at a real file or folder", input=entry.path) from None
    if is_it and want == "dir" and entry.is_symlink():
        # a link to the folder that holds it (or above): a loop for anything that walks the tree
        here, target = Path(entry.path).parent.resolve(), Path(entry.path).resolve()
        if here == target or target in here.parents:
            raise DataError(f"{entry.path}: symbolic-link loop (it points to {os.readlink(entry.path)}, a folder "
                            f"that contains the link); remove the link or point it at a real folder",
                            input=entry.path)
    return is_it


def _list_images(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        names = [e.name for e in it if _is_image_file(e.name) and _kind(e, "file")]
    return [str(folder / n) for n in sorted(names)]


def _spread(n: int, limit: int | None) -> list[int]:
    """Indices of `limit` items spread evenly over range(n), in order (all of them if limit is None)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return [(i * n) // limit for i in range(limit)]


@dataclass
class ImageScan:
    """What a quick pass over image files found (headers only unless `scan_images(decode=True)`).

    count: files scanned; unreadable: (path, one-line reason) of files PIL cannot open; not_rgb:
    (path, mode) of images refused without convert_mode (or never convertible); modes: files per
    PIL mode; smallest: (width, height, path) of the image with the smallest shorter side;
    upscaled: images whose shorter side is below the working resolution (they get upscaled).
    """

    resolution: int
    count: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    not_rgb: list[tuple[str, str]] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    smallest: tuple[int, int, str] | None = None
    upscaled: int = 0
    alpha: list[str] = field(default_factory=list)  # images with transparency (see COMPOSITES)

    def upscale_warning(self) -> str | None:
        """One line saying how many images will be upscaled and the smallest one, or None."""
        if not self.upscaled or self.smallest is None:
            return None
        w, h, path = self.smallest
        return (f"{self.upscaled} of {self.count} images are smaller than {self.resolution}px on the shorter side "
                f"and will be upscaled (smallest: {w}x{h}, {path})")


def scan_images(paths: Sequence[str], resolution: int, convert_mode: bool = False, decode: bool = False,
                num_workers: int = 0, read: Callable[[str], bytes] | None = None,
                fix: str = _UNREADABLE_FIX) -> ImageScan:
    """Look at every file of `paths` once: PIL's lazy open reads the header only (mode, size), so
    a folder of 50k images takes seconds; `decode=True` also decodes each image fully (finds
    truncated files, costs a full read). Never raises for a bad file: it is listed in the result.
    `read`: as for `_open_loaded`, the bytes of images that are not files (archives, parquet)."""
    resolution = _check_resolution(resolution)
    _refuse_truncation_tolerance()

    def one(path: str):
        try:
            if decode:
                im = _open_loaded(path, read, fix)
                mode, size, alpha = im.mode, im.size, has_alpha(im)
            else:
                with Image.open(io.BytesIO(read(path)) if read is not None else path) as im:
                    mode, size, alpha = im.mode, im.size, has_alpha(im)
        except DataError as e:
            return path, None, None, str(e)
        except Exception as e:  # any header PIL cannot parse
            return path, None, None, f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
        return path, mode, (size, alpha), None

    if num_workers > 0:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            results = pool.map(one, paths)
    else:
        results = map(one, paths)
    scan = ImageScan(resolution)
    for path, mode, size_alpha, err in results:
        scan.count += 1
        if err is not None:
            scan.unreadable.append((path, err))
            continue
        size, alpha = size_alpha
        if alpha:
            scan.alpha.append(path)
        scan.modes[mode] += 1
        if mode != "RGB" and (not convert_mode or mode in _UNCONVERTIBLE):
            scan.not_rgb.append((path, mode))
        if scan.smallest is None or min(size) < min(scan.smallest[:2]):
            scan.smallest = (size[0], size[1], path)
        scan.upscaled += min(size) < resolution
    return scan


def _check_all(
    items: Sequence, check: Callable[[object], object], what: str, where: str, num_workers: int
) -> int:
    def one(item) -> str | None:
        try:
            check(item)
        except DataError as e:
            return str(e)
        return None

    if num_workers > 0:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            results = list(pool.map(one, items))
    else:
        results = [one(item) for item in items]
    bad = [msg for msg in results if msg is not None]
    if bad:
        listed = "\n  ".join(bad[:_MAX_LISTED])
        more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise DataError(f"{len(bad)} of {len(items)} {what} under {where} are invalid:\n  {listed}{more}")
    return len(items)


# ----------------------------------------------------------------------------------------------
# Classification: root/<class_name>/<image>


class ImageFolderDataset(Dataset):
    """ImageNet-layout folder: root/<class_name>/<image files>, one level deep.

    Label ids are the indices of the class folder names sorted alphabetically (hidden folders are
    skipped); files inside a class are sorted by name. Files with extensions .jpg .jpeg .png .webp
    .bmp (any case) are images; other files are ignored.

    Args:
        root: dataset folder.
        resolution: output side length; images go through `center_crop_arr`.
        split: if given, root/<split> is used when it exists; a root whose own name is `split` is
            used as is; otherwise DataError (never a silent fallback to another split).
        max_per_class: keep the first `max_per_class` files (sorted) of each class.
        limit: keep `limit` samples spread evenly over the sorted list (after `max_per_class`), so
            a small limit still spans the classes.
        convert_mode: convert non-RGB images (L, P, RGBA, CMYK, I;16, ...) to RGB with PIL instead
            of raising. Real ImageNet contains grayscale and CMYK JPEGs, so it needs this. PIL's conversion
            drops an alpha channel; "composite-white" / "composite-black" (COMPOSITES) lay transparent images
            over that background instead.

    Items: {"image": float32 3 x resolution x resolution in [-1, 1], "label": int64 scalar tensor,
    "index": int, "path": str}. Unreadable files and refused modes raise DataError when the item is
    read; `validate()` checks every file up front.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int,
        split: str | None = None,
        max_per_class: int | None = None,
        limit: int | None = None,
        convert_mode: bool = False,
    ):
        self.resolution = _check_resolution(resolution)
        self.convert_mode = convert_mode_of(convert_mode)
        self.root = _resolve_split(Path(root), split)

        with os.scandir(self.root) as it:
            classes = sorted(e.name for e in it if not e.name.startswith(".") and _kind(e, "dir"))
        if not classes:
            loose = len(_list_images(self.root))
            found = f"it holds {loose} image file(s) directly" if loose else "it holds no sub-folders"
            raise DataError(f"{self.root}: no class folders, {found}; an imagefolder is root/<class_name>/<images>: "
                            f"move each class's images into its own sub-folder (or pass --data segfolder for "
                            f"an ADE20K layout)", input=str(self.root))
        self.classes: list[str] = classes
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(classes)}

        if max_per_class is not None and max_per_class <= 0:
            raise ValueError(f"max_per_class must be positive, got {max_per_class}")
        samples: list[tuple[str, int]] = []
        empty: list[str] = []
        for c in classes:
            files = _list_images(self.root / c)
            if not files:
                empty.append(c)
            samples.extend((f, self.class_to_idx[c]) for f in files[:max_per_class])
        if not samples:
            raise DataError(f"{self.root}: no image files ({', '.join(IMG_EXTENSIONS)}) in any class folder; "
                            f"check --data-root", input=str(self.root))
        if empty:
            # An empty class folder usually means a partial copy; its label id would never appear.
            shown = ", ".join(empty[:_MAX_LISTED]) + (" ..." if len(empty) > _MAX_LISTED else "")
            raise DataError(f"{self.root}: {len(empty)} class folder(s) contain no images: {shown}; finish the copy "
                            f"or remove the empty folders", input=str(self.root))

        self.samples: list[tuple[str, int]] = [samples[i] for i in _spread(len(samples), limit)]
        self.targets: list[int] = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        i = _check_index(index, len(self))
        path, label = self.samples[i]
        arr = center_crop_arr(_load_rgb(path, self.convert_mode), self.resolution)
        return {
            "image": _hwc_uint8_to_chw(arr),
            "label": torch.tensor(label, dtype=torch.int64),
            "index": i,
            "path": path,
        }

    def scan(self, decode: bool = False, num_workers: int = 0) -> ImageScan:
        """`scan_images` over this dataset's files (headers only unless decode=True)."""
        return scan_images([p for p, _ in self.samples], self.resolution, self.convert_mode, decode, num_workers)

    def validate(self, num_workers: int = 0) -> int:
        """Read every sample's file once (full decode, mode check) and report all failures.

        Raises one DataError listing the first 20 bad files and the total count; returns the number
        of files checked otherwise. `num_workers` > 0 checks files on that many threads.
        """
        return _check_all(
            [p for p, _ in self.samples],
            lambda p: _load_rgb(p, self.convert_mode),
            "image files",
            str(self.root),
            num_workers,
        )


def _resolve_split(root: Path, split: str | None) -> Path:
    if not root.exists():
        raise DataError(f"{root}: dataset root does not exist; check --data-root", input=str(root))
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a directory; --data-root takes a folder", input=str(root))
    if split is None:
        return root
    if (root / split).is_dir():
        return root / split
    if root.name == split:
        return root
    with os.scandir(root) as it:
        subs = sorted(e.name for e in it if not e.name.startswith(".") and _kind(e, "dir"))
    if subs and _list_images(root / subs[0]):
        raise DataError(f"{root / split}: split folder {split!r} does not exist, and {root} looks like a split "
                        f"itself (its sub-folders hold images): pass --split {root.name}", input=str(root / split))
    raise DataError(f"{root / split}: split folder {split!r} does not exist; pass --split with one of the "
                    f"sub-folders of {root} ({', '.join(subs[:8]) or 'none'}), or point --data-root at the split "
                    f"folder itself", input=str(root / split))


def _check_index(index, n: int) -> int:
    i = operator.index(index)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {index} out of range for dataset of size {n}")
    return i


# ----------------------------------------------------------------------------------------------
# Segmentation: root/images/<split>/*.jpg + root/annotations/<split>/*.png


class SegFolderDataset(Dataset):
    """ADE20K-layout segmentation folder (ADEChallengeData2016 uses splits 'training'/'validation').

    Image root/images/<split>/<stem>.<ext> pairs with label root/annotations/<split>/<stem>.png.
    Labels are single-channel PNGs (mode L, P, I or I;16) whose pixel values are class ids.

    With `reduce_zero_label=True` (ADE20K / mmsegmentation convention) raw 0 becomes 255 (ignore),
    raw 255 stays 255, and every other value v becomes v - 1. The resulting values must be
    < num_classes or == 255; `num_classes` is at most 255 so 255 can only mean "ignore".

    Geometry: image and label are resized so the shorter side is `resolution` (BICUBIC for the
    image, NEAREST for the label, same target size) and the same central resolution x resolution
    box is cut from both, so they stay aligned. (No ADM BOX pre-halving: halving odd sizes would
    shift the image against the label.)

    Items: {"image": float32 3 x R x R in [-1, 1], "mask": int64 R x R (255 = ignore),
    "index": int, "path": image path}. Missing annotations are reported at construction; unreadable
    files, image/label size mismatches, multi-channel labels and out-of-range label values raise
    DataError naming the files when the item is read, or all at once from `validate()`.
    """

    IGNORE_INDEX = 255

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int,
        split: str = "validation",
        reduce_zero_label: bool = True,
        num_classes: int = 150,
        limit: int | None = None,
        convert_mode: bool = False,
    ):
        self.resolution = _check_resolution(resolution)
        if not 0 < num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255 (255 is the ignore index), got {num_classes}")
        self.num_classes = int(num_classes)
        self.reduce_zero_label = bool(reduce_zero_label)
        self.convert_mode = convert_mode_of(convert_mode)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root does not exist or is not a directory; check --data-root",
                            input=str(self.root))
        self.image_dir = self.root / "images" / split
        self.ann_dir = self.root / "annotations" / split
        for d in (self.image_dir, self.ann_dir):
            if not d.is_dir():
                raise DataError(f"{d}: folder does not exist; a segfolder is root/images/<split> + "
                                f"root/annotations/<split>: check --data-root and --split (ADE20K: training, "
                                f"validation)", input=str(d))

        images = _list_images(self.image_dir)
        if not images:
            raise DataError(f"{self.image_dir}: no image files ({', '.join(IMG_EXTENSIONS)}); check --data-root and "
                            f"--split", input=str(self.image_dir))
        with os.scandir(self.ann_dir) as it:
            ann_names = {e.name for e in it if e.name.lower().endswith(".png") and _kind(e, "file")}
        ann_by_stem = {os.path.splitext(n)[0]: n for n in ann_names}

        pairs: list[tuple[str, str]] = []
        missing: list[str] = []
        seen: dict[str, str] = {}
        for img in images:
            stem = os.path.splitext(os.path.basename(img))[0]
            if stem in seen:
                raise DataError(f"{img} and {seen[stem]}: two images share the stem {stem!r}")
            seen[stem] = img
            if stem in ann_by_stem:
                pairs.append((img, str(self.ann_dir / ann_by_stem[stem])))
            else:
                missing.append(img)
        if missing:
            listed = "\n  ".join(f"{m} (expected {self.ann_dir / (Path(m).stem + '.png')})" for m in missing[:_MAX_LISTED])
            more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
            raise DataError(f"{len(missing)} image(s) have no annotation:\n  {listed}{more}")

        self.samples: list[tuple[str, str]] = [pairs[i] for i in _spread(len(pairs), limit)]

    def __len__(self) -> int:
        return len(self.samples)

    def _read_label(self, ann_path: str) -> np.ndarray:
        lab = _open_loaded(ann_path)
        if len(lab.getbands()) != 1:
            raise DataError(
                f"{ann_path}: label PNG has {len(lab.getbands())} channels (mode {lab.mode!r}); "
                f"expected a single-channel map of class ids"
            )
        if lab.mode == "F":
            raise DataError(f"{ann_path}: label PNG holds floats (mode 'F'); expected integer class ids")
        raw = np.asarray(lab).astype(np.int64)
        if self.reduce_zero_label:
            out = raw - 1
            out[(raw == 0) | (raw == 255)] = self.IGNORE_INDEX
        else:
            out = raw
        bad = (out != self.IGNORE_INDEX) & ((out < 0) | (out >= self.num_classes))
        if bad.any():
            bad_raw = np.unique(raw[bad])
            shown = ", ".join(str(v) for v in bad_raw[:10]) + (" ..." if len(bad_raw) > 10 else "")
            raise DataError(
                f"{ann_path}: label values out of range: raw value(s) {shown} "
                f"(num_classes={self.num_classes}, reduce_zero_label={self.reduce_zero_label}; "
                f"allowed after reduction: 0..{self.num_classes - 1} or {self.IGNORE_INDEX})"
            )
        return out

    def _read_pair(self, img_path: str, ann_path: str) -> tuple[Image.Image, np.ndarray]:
        image = _load_rgb(img_path, self.convert_mode)
        label = self._read_label(ann_path)
        if label.shape != (image.height, image.width):
            raise DataError(
                f"{img_path} is {image.width}x{image.height} but its label {ann_path} is "
                f"{label.shape[1]}x{label.shape[0]} (width x height)"
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        i = _check_index(index, len(self))
        img_path, ann_path = self.samples[i]
        image, label = self._read_pair(img_path, ann_path)

        new_size, box = _resize_crop_box(image.width, image.height, self.resolution)
        # Values are all in 0..255 after the range check, so an 8-bit map resizes losslessly.
        label_im = Image.fromarray(label.astype(np.uint8))
        image = image.resize(new_size, resample=Image.BICUBIC).crop(box)
        label_im = label_im.resize(new_size, resample=Image.NEAREST).crop(box)
        return {
            "image": _hwc_uint8_to_chw(np.asarray(image)),
            "mask": torch.from_numpy(np.asarray(label_im).astype(np.int64)),
            "index": i,
            "path": img_path,
        }

    def scan(self, decode: bool = False, num_workers: int = 0) -> ImageScan:
        """`scan_images` over this dataset's images (not their label maps; headers only unless decode=True)."""
        return scan_images([p for p, _ in self.samples], self.resolution, self.convert_mode, decode, num_workers)

    def validate(self, num_workers: int = 0) -> int:
        """Read every image/label pair once and report all failures in one DataError.

        Checks decoding, image mode, label channels, image/label sizes and label value range.
        Lists the first 20 bad pairs and the total count; returns the number of pairs checked
        otherwise. `num_workers` > 0 checks pairs on that many threads.
        """
        return _check_all(
            self.samples,
            lambda pair: self._read_pair(*pair),
            "image/label pairs",
            str(self.root),
            num_workers,
        )
