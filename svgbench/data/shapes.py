"""`shapes`: the embedded, offline, procedural dataset.

Every image shows one main geometric shape (optionally a few smaller ones on top) drawn with a
random colour, size, rotation and position over a random smooth-noise background with a random
texture. Each image carries a class label (the class of the main object) and a per-pixel
segmentation mask (0 = background, k + 1 = shape class k, topmost object wins).

Shape identity is meant to be invisible to a linear read-out of raw pixels (random colours on
random textured backgrounds) but easy for a small network that looks at outlines.

Determinism contract: an item depends only on (seed, split, index, resolution, max_objects,
background). Its random stream is `SeedSequence([seed, crc32(split), index])`, so items are
identical whatever order or worker produces them, and different splits use different streams.
All random draws are made in resolution-free units, so the same item at another resolution is the
same scene rendered at a different pixel size (up to anti-aliasing and pixel-level speckle).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import operator
import os
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

__all__ = [
    "SHAPE_CLASSES",
    "NUM_SEG_CLASSES",
    "BACKGROUND_KINDS",
    "TEXTURE_KINDS",
    "GENERATOR_VERSION",
    "ShapesConfig",
    "ShapesDataset",
    "render_shape",
    "render_item",
    "render_views",
    "shapes_arrays",
    "split_code",
    "cache_path",
]

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "ring",
    "crescent",
    "semicircle",
)
NUM_SEG_CLASSES = len(SHAPE_CLASSES) + 1

# "textured": smooth colour noise plus one random texture; "smooth": colour noise only;
# "flat": a single random colour (an easy control setting).
BACKGROUND_KINDS: tuple[str, ...] = ("textured", "smooth", "flat")
TEXTURE_KINDS: tuple[str, ...] = ("stripes", "checker", "speckle", "waves")

# Bump whenever rendering changes, so cached arrays from an older generator are not reused.
GENERATOR_VERSION = 1

_SUPERSAMPLE = 4
_CIRCLE_VERTICES = 72
# Main object: bounding radius as a fraction of the image side.
_MAIN_RADIUS = (0.20, 0.45)
# Extra objects: smaller, and never larger than this fraction of the main object's radius.
_EXTRA_RADIUS = (0.10, 0.22)
_EXTRA_MAX_REL = 0.7
# How much of the bounding circle may leave the frame (fraction of the radius).
_MAIN_OVERHANG = 0.15
_EXTRA_OVERHANG = 0.3
# Minimum RGB distance (0-255 units) between an object's colour and the background under it.
_MIN_CONTRAST = 90.0
_MAX_SEED = 2**32


# --------------------------------------------------------------------------------------------
# Shape geometry: each shape is a list of (polygon, fill) layers in unit coordinates, centred on
# the origin with bounding radius 1; fill 255 adds area and fill 0 cuts a hole.


def _regular(n: int, phase: float = 0.0, radius: float = 1.0, center=(0.0, 0.0)) -> np.ndarray:
    a = phase + 2.0 * np.pi * np.arange(n) / n
    return np.stack([center[0] + radius * np.cos(a), center[1] + radius * np.sin(a)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    pts = np.array(
        [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1),
         (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)],
        dtype=np.float64,
    )
    return pts / np.linalg.norm(pts, axis=1).max()


def _semicircle() -> np.ndarray:
    # The unit circle around the chord's midpoint is already the half-disc's smallest enclosing
    # circle, so no re-centring is needed.
    a = np.linspace(0.0, np.pi, _CIRCLE_VERTICES // 2 + 1)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


@functools.lru_cache(maxsize=None)
def _shape_layers(class_id: int) -> tuple[tuple[np.ndarray, int], ...]:
    name = SHAPE_CLASSES[class_id]
    circle = _regular(_CIRCLE_VERTICES)
    if name == "circle":
        return ((circle, 255),)
    if name == "triangle":
        return ((_regular(3, -np.pi / 2), 255),)
    if name == "square":
        return ((_regular(4, np.pi / 4), 255),)
    if name == "pentagon":
        return ((_regular(5, -np.pi / 2), 255),)
    if name == "hexagon":
        return ((_regular(6), 255),)
    if name == "star":
        return ((_star(), 255),)
    if name == "cross":
        return ((_cross(), 255),)
    if name == "ring":
        return ((circle, 255), (_regular(_CIRCLE_VERTICES, radius=0.55), 0))
    if name == "crescent":
        return ((circle, 255), (_regular(_CIRCLE_VERTICES, radius=0.85, center=(0.5, 0.0)), 0))
    if name == "semicircle":
        return ((_semicircle(), 255),)
    raise AssertionError(f"no geometry for shape {name!r}")


def render_shape(
    shape: int | str,
    resolution: int,
    *,
    center: tuple[float, float] = (0.5, 0.5),
    radius: float = 0.35,
    rotation: float = 0.0,
) -> np.ndarray:
    """Anti-aliased coverage of one shape: float32 array resolution x resolution in [0, 1].

    `shape` is a class index or name from SHAPE_CLASSES. `center` (x, y) and `radius` (the
    shape's bounding radius) are fractions of the image side; `rotation` is in degrees,
    counter-clockwise. The shape is drawn at 4x supersampling and box-downsampled, so a value is
    the fraction of that pixel the shape covers.
    """
    class_id = _class_index(shape)
    res = _check_resolution(resolution)
    big = res * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    theta = math.radians(rotation)
    c, s = math.cos(theta), math.sin(theta)
    # Row vectors times this matrix turn counter-clockwise as seen on screen (image y points down).
    rot = np.array([[c, -s], [s, c]])
    scale = radius * big
    cx, cy = center[0] * big, center[1] * big
    for poly, fill in _shape_layers(class_id):
        pts = poly @ rot * scale + (cx, cy)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)
    small = canvas.resize((res, res), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) * (1.0 / 255.0)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ShapesConfig:
    """One split of the shapes dataset.

    resolution: image side in pixels, >= 16 and a multiple of 8.
    split: any non-empty name ('train', 'val', 'test', 'seg-train', 'seg-val', ...); each name
        gets its own random streams.
    size: number of images (> 0).
    seed: base seed in [0, 2**32).
    max_objects: objects per image are drawn uniformly from 1..max_objects; extra objects are
        smaller, drawn on top and may overlap. The label is always the main (first, largest) one.
    background: one of BACKGROUND_KINDS.
    """

    resolution: int = 64
    split: str = "train"
    size: int = 2000
    seed: int = 0
    max_objects: int = 1
    background: str = "textured"

    def __post_init__(self) -> None:
        _check_resolution(self.resolution)
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split must be a non-empty string, got {self.split!r}")
        if not _is_int(self.size) or self.size <= 0:
            raise ValueError(f"size must be a positive integer, got {self.size!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < _MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not _is_int(self.max_objects) or self.max_objects < 1:
            raise ValueError(f"max_objects must be an integer >= 1, got {self.max_objects!r}")
        if self.background not in BACKGROUND_KINDS:
            raise ValueError(
                f"background must be one of {BACKGROUND_KINDS}, got {self.background!r}"
            )

    def key(self) -> str:
        """Stable hex digest of everything the pixels depend on (plus the generator version)."""
        payload = dataclasses.asdict(self)
        payload["generator_version"] = GENERATOR_VERSION
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_resolution(resolution: Any) -> int:
    if not _is_int(resolution) or resolution < 16 or resolution % 8:
        raise ValueError(
            f"resolution must be an integer >= 16 and a multiple of 8, got {resolution!r}"
        )
    return int(resolution)


def _class_index(shape: int | str) -> int:
    if isinstance(shape, str):
        if shape not in SHAPE_CLASSES:
            raise ValueError(f"shape must be one of {SHAPE_CLASSES}, got {shape!r}")
        return SHAPE_CLASSES.index(shape)
    if not _is_int(shape) or not 0 <= shape < len(SHAPE_CLASSES):
        raise ValueError(f"shape must be a class index in [0, {len(SHAPE_CLASSES)}), got {shape!r}")
    return int(shape)


def split_code(split: str) -> int:
    """Stable 32-bit integer for a split name (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(split.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Backgrounds and textures. Coordinates are fractions of the image side so draws do not depend
# on the resolution.


@functools.lru_cache(maxsize=32)
def _coords(res: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(res, dtype=np.float32) + 0.5) / res
    return t[None, :].repeat(res, 0), t[:, None].repeat(res, 1)  # x, y


@functools.lru_cache(maxsize=64)
def _interp_matrix(res: int, grid: int) -> np.ndarray:
    """res x grid matrix that linearly interpolates grid samples spanning the image."""
    pos = (np.arange(res) + 0.5) / res * (grid - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = pos - lo
    m = np.zeros((res, grid), dtype=np.float32)
    m[np.arange(res), lo] = 1.0 - frac
    m[np.arange(res), lo + 1] = frac
    return m


def _sharpen(t: np.ndarray, hardness: float) -> np.ndarray:
    # Blends a sine pattern towards a square wave; hardness ~1 stays soft, ~6 is nearly binary.
    return np.tanh(hardness * t) / math.tanh(hardness)


def _texture(rng: np.random.Generator, res: int, kind: str) -> np.ndarray:
    """A scalar pattern res x res in about [-1, 1]."""
    x, y = _coords(res)
    if kind == "stripes":
        angle = rng.uniform(0.0, np.pi)
        freq = rng.uniform(3.0, 12.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        hard = rng.uniform(1.0, 6.0)
        u = x * math.cos(angle) + y * math.sin(angle)
        return _sharpen(np.sin(2 * np.pi * freq * u + phase), hard)
    if kind == "checker":
        angle = rng.uniform(0.0, np.pi / 2)
        freq = rng.uniform(2.0, 8.0)
        phase = rng.uniform(0.0, 2 * np.pi, size=2)
        hard = rng.uniform(2.0, 8.0)
        u = x * math.cos(angle) + y * math.sin(angle)
        v = -x * math.sin(angle) + y * math.cos(angle)
        t = np.sin(2 * np.pi * freq * u + phase[0]) * np.sin(2 * np.pi * freq * v + phase[1])
        return _sharpen(t, hard)
    if kind == "speckle":
        cell = int(rng.choice([1, 2, 4]))
        n = res // cell
        density = rng.uniform(0.05, 0.5)
        # Sparse bright/dark dots on a neutral field, or dense salt-and-pepper noise.
        dots = rng.random((n, n)) < density
        signs = np.where(rng.random((n, n)) < 0.5, -1.0, 1.0)
        noise = rng.uniform(-0.3, 0.3, size=(n, n))
        t = np.where(dots, signs, noise).astype(np.float32)
        if cell > 1:
            t = t.repeat(cell, 0).repeat(cell, 1)
        return t
    if kind == "waves":
        t = np.zeros((res, res), dtype=np.float32)
        for _ in range(3):
            angle = rng.uniform(0.0, 2 * np.pi)
            freq = rng.uniform(1.5, 6.0)
            phase = rng.uniform(0.0, 2 * np.pi)
            t += np.sin(2 * np.pi * freq * (x * math.cos(angle) + y * math.sin(angle)) + phase)
        return t / 3.0
    raise AssertionError(f"unknown texture {kind!r}")


def _colour_direction(rng: np.random.Generator) -> np.ndarray:
    # Half the time a luminance texture, otherwise a random chromatic one.
    if rng.random() < 0.5:
        return np.ones(3, dtype=np.float32)
    d = rng.normal(size=3).astype(np.float32)
    return d / (np.abs(d).max() + 1e-6)


def _background(rng: np.random.Generator, res: int, kind: str) -> np.ndarray:
    """float32 res x res x 3 background in [0, 1]."""
    base = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    if kind == "flat":
        return np.broadcast_to(base, (res, res, 3)).copy()
    grid = int(rng.integers(2, 6))
    amp = rng.uniform(0.1, 0.45)
    cells = rng.uniform(-amp, amp, size=(grid, grid, 3)).astype(np.float32)
    m = _interp_matrix(res, grid)
    # Separable bilinear upsampling: rows then columns, per channel.
    rows = np.tensordot(m, cells, axes=(1, 0))  # res x grid x 3
    bg = base + np.matmul(m, rows.transpose(2, 1, 0)).transpose(2, 1, 0)  # res x res x 3
    if kind == "textured":
        tex_kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
        t = _texture(rng, res, tex_kind)
        strength = rng.uniform(0.08, 0.28)
        bg += (strength * t)[..., None] * _colour_direction(rng)
    return np.clip(bg, 0.0, 1.0, out=bg)


# --------------------------------------------------------------------------------------------
# Scene rendering


def _pick_colour(rng: np.random.Generator, local_mean: np.ndarray) -> np.ndarray:
    """Random RGB in [0, 1] at least _MIN_CONTRAST (in 0-255 units) away from `local_mean`."""
    # A fixed number of candidates is drawn so the stream position never depends on the pixels.
    candidates = rng.uniform(0.0, 1.0, size=(16, 3)).astype(np.float32)
    ok = np.linalg.norm(candidates - local_mean, axis=1) >= _MIN_CONTRAST / 255.0
    if ok.any():
        return candidates[int(np.argmax(ok))]
    # Rare: the background is mid-grey-ish and every candidate landed near it. The farthest RGB
    # corner is always at least sqrt(3)/2 away.
    return (local_mean < 0.5).astype(np.float32)


def _draw_object(
    rng: np.random.Generator,
    canvas: np.ndarray,
    mask: np.ndarray,
    res: int,
    radius_range: tuple[float, float],
    overhang: float,
    max_radius: float | None,
    pose_rng: np.random.Generator | None = None,
) -> tuple[int, float]:
    """Draw one random object onto `canvas` (H x W x 3, [0, 1]) and `mask` in place.

    With `pose_rng`, the object keeps its class, colour and fill (all drawn from `rng`, whose stream is
    consumed identically) but takes a new rotation, position and a size within +-20% from `pose_rng`.
    """
    class_id = int(rng.integers(len(SHAPE_CLASSES)))
    radius = rng.uniform(*radius_range)
    if max_radius is not None:
        radius = min(radius, max_radius)
    rotation = rng.uniform(0.0, 360.0)
    lo, hi = radius * (1.0 - overhang), 1.0 - radius * (1.0 - overhang)
    cx, cy = rng.uniform(lo, hi, size=2)
    if pose_rng is not None:
        rotation = pose_rng.uniform(0.0, 360.0)
        radius = float(np.clip(radius * pose_rng.uniform(0.8, 1.2), radius_range[0], radius_range[1]))
        lo, hi = radius * (1.0 - overhang), 1.0 - radius * (1.0 - overhang)
        cx, cy = pose_rng.uniform(lo, hi, size=2)
    shade_amount = rng.uniform(0.0, 0.25)
    shade_angle = rng.uniform(0.0, 2 * np.pi)
    fill_textured = rng.random() < 0.2

    alpha = render_shape(class_id, res, center=(cx, cy), radius=radius, rotation=rotation)
    weight = alpha.sum()
    if weight > 0:
        local_mean = np.tensordot(alpha, canvas, axes=([0, 1], [0, 1])) / weight
    else:
        local_mean = canvas.mean(axis=(0, 1))
    colour = _pick_colour(rng, local_mean)

    # Slight linear shading across the object, as if lit from one side.
    x, y = _coords(res)
    ramp = ((x - cx) * math.cos(shade_angle) + (y - cy) * math.sin(shade_angle)) / radius
    fill = colour * (1.0 + shade_amount * ramp)[..., None]
    if fill_textured:
        t = _texture(rng, res, "stripes")
        fill = fill + (rng.uniform(0.08, 0.18) * t)[..., None] * _colour_direction(rng)
    np.clip(fill, 0.0, 1.0, out=fill)

    a = alpha[..., None]
    canvas *= 1.0 - a
    canvas += a * fill
    mask[alpha >= 0.5] = class_id + 1
    return class_id, radius


def render_item(cfg: ShapesConfig, index: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Render item `index` of `cfg`: (image uint8 H x W x 3, label int, mask uint8 H x W).

    Pure: the result depends only on the config fields and `index` (which must be in
    [0, cfg.size)).
    """
    index = _check_index(index, cfg.size, f"shapes[{cfg.split}]")
    res = cfg.resolution
    root = np.random.SeedSequence([cfg.seed, split_code(cfg.split), index])
    # One child stream per role, so e.g. changing max_objects or resolution leaves the background
    # and main object untouched.
    bg_ss, count_ss, *obj_ss = root.spawn(2 + cfg.max_objects)
    canvas = _background(np.random.default_rng(bg_ss), res, cfg.background)
    mask = np.zeros((res, res), dtype=np.uint8)
    n_objects = 1
    if cfg.max_objects > 1:
        n_objects = int(np.random.default_rng(count_ss).integers(1, cfg.max_objects + 1))
    label, main_radius = _draw_object(
        np.random.default_rng(obj_ss[0]), canvas, mask, res, _MAIN_RADIUS, _MAIN_OVERHANG, None
    )
    for k in range(1, n_objects):
        _draw_object(
            np.random.default_rng(obj_ss[k]), canvas, mask, res,
            _EXTRA_RADIUS, _EXTRA_OVERHANG, _EXTRA_MAX_REL * main_radius,
        )
    image = (canvas * 255.0 + 0.5).astype(np.uint8)
    return image, label, mask


def render_views(cfg: ShapesConfig, index: int, n_views: int, view_seed: int,
                 repose: bool = False) -> tuple[list[np.ndarray], int]:
    """The main object of item `index`, drawn `n_views` times on independent random backgrounds.

    The object (class, colour, fill, and unless `repose` its pose and size) is the item's own; each
    background, and with `repose` each view's rotation, position and size (+-20%), comes from a stream
    keyed by (view_seed, view). These are the background-swap (and object re-pose) views of
    self-supervised training on shapes: a data-side prior (the generator knows what is object and
    what is background), named as such wherever it is used. -> (list of uint8 H x W x 3 images, label).
    """
    index = _check_index(index, cfg.size, f"shapes[{cfg.split}]")
    res = cfg.resolution
    root = np.random.SeedSequence([cfg.seed, split_code(cfg.split), index])
    _, _, obj_ss = root.spawn(3)
    views, label = [], -1
    for v in range(n_views):
        bg_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, split_code(cfg.split), index,
                                                               view_seed, v, 1]))
        canvas = _background(bg_rng, res, cfg.background)
        mask = np.zeros((res, res), dtype=np.uint8)
        pose = bg_rng if repose else None
        label, _ = _draw_object(np.random.default_rng(obj_ss), canvas, mask, res, _MAIN_RADIUS, _MAIN_OVERHANG, None,
                                pose_rng=pose)
        views.append((canvas * 255.0 + 0.5).astype(np.uint8))
    return views, label


def _check_index(index: Any, size: int, name: str) -> int:
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(f"{name} index must be an integer, got {type(index).__name__}") from None
    if i < 0:
        i += size
    if not 0 <= i < size:
        raise IndexError(f"index {index} out of range for {name} of size {size}")
    return i


# --------------------------------------------------------------------------------------------
# Dataset


class ShapesDataset(Dataset):
    """Map-style dataset generating items on the fly.

    Items are dicts: "image" float32 3 x H x W in [-1, 1], "label" int64 scalar, "mask" int64
    H x W with ids in [0, NUM_SEG_CLASSES), "index" the (non-negative) item index. Negative
    indices count from the end, as for sequences.
    """

    # Splits at least this large are rendered once as whole arrays (2 processes from PARALLEL_MIN items) and
    # kept on disk under $SVGBENCH_DATA_CACHE (default .cache/shapes), so that every encoder and task reads
    # the same pixels instead of rendering them again (the embedded run reads its 512-image evaluation split
    # about 30 times: 20 s of rendering); the items are identical to rendering each index.
    MATERIALIZE_MIN = 500
    PARALLEL_MIN = 2048

    def __init__(self, cfg: ShapesConfig | None = None, **overrides: Any) -> None:
        if cfg is None:
            cfg = ShapesConfig(**overrides)
        elif overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        self.cfg = cfg
        self._arrays: dict[str, np.ndarray] | None = None
        self.classes = SHAPE_CLASSES
        self.num_classes = len(SHAPE_CLASSES)
        self.num_seg_classes = NUM_SEG_CLASSES

    def __len__(self) -> int:
        return self.cfg.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = _check_index(index, self.cfg.size, f"ShapesDataset(split={self.cfg.split!r})")
        if self.cfg.size >= self.MATERIALIZE_MIN:
            if self._arrays is None:
                self._arrays = shapes_arrays(self.cfg, workers=2 if self.cfg.size >= self.PARALLEL_MIN else 1,
                                             cache_dir=data_cache_dir())
            a = self._arrays
            image, label, mask = a["images"][i], int(a["labels"][i]), a["masks"][i]
        else:
            image, label, mask = render_item(self.cfg, i)
        img = torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {
            "image": img.contiguous(),
            "label": torch.tensor(label, dtype=torch.int64),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "index": i,
        }

    def __repr__(self) -> str:
        return f"ShapesDataset({self.cfg})"


# --------------------------------------------------------------------------------------------
# Whole-split arrays and the on-disk cache


def _render_range(
    args: tuple[ShapesConfig, int, int],
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    cfg, start, stop = args
    n, res = stop - start, cfg.resolution
    images = np.empty((n, res, res, 3), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    masks = np.empty((n, res, res), dtype=np.uint8)
    for j, i in enumerate(range(start, stop)):
        images[j], labels[j], masks[j] = render_item(cfg, i)
    return start, images, labels, masks


def _generate(cfg: ShapesConfig, workers: int) -> dict[str, np.ndarray]:
    n, res = cfg.size, cfg.resolution
    if workers <= 1 or n < 256:
        _, images, labels, masks = _render_range((cfg, 0, n))
        return {"images": images, "labels": labels, "masks": masks}
    images = np.empty((n, res, res, 3), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    masks = np.empty((n, res, res), dtype=np.uint8)
    chunk = max(64, math.ceil(n / (workers * 8)))
    jobs = [(cfg, s, min(n, s + chunk)) for s in range(0, n, chunk)]
    # Workers only run numpy/PIL, so fork (no re-import of torch) is safe where it exists.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers) as pool:
        for start, im, lb, mk in pool.imap_unordered(_render_range, jobs):
            stop = start + len(lb)
            images[start:stop], labels[start:stop], masks[start:stop] = im, lb, mk
    return {"images": images, "labels": labels, "masks": masks}


def data_cache_dir() -> str:
    """Where whole splits are cached as arrays: $SVGBENCH_DATA_CACHE, default .cache/shapes."""
    return os.environ.get("SVGBENCH_DATA_CACHE", ".cache/shapes")


def cache_path(cfg: ShapesConfig, cache_dir: str | os.PathLike) -> Path:
    """Where shapes_arrays caches `cfg` under `cache_dir` (name = hash of the config)."""
    return Path(cache_dir) / f"shapes-{cfg.resolution}px-{cfg.key()[:24]}.npz"


def _validate(arrays: dict[str, np.ndarray], cfg: ShapesConfig) -> None:
    n, res = cfg.size, cfg.resolution
    expected = {
        "images": ((n, res, res, 3), np.uint8),
        "labels": ((n,), np.int64),
        "masks": ((n, res, res), np.uint8),
    }
    for name, (shape, dtype) in expected.items():
        a = arrays.get(name)
        if a is None:
            raise ValueError(f"missing array {name!r}")
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"{name}: got {a.shape} {a.dtype}, expected {shape} {np.dtype(dtype)}")
    labels = arrays["labels"]
    if labels.min() < 0 or labels.max() >= len(SHAPE_CLASSES):
        raise ValueError("labels out of range")
    if arrays["masks"].max() >= NUM_SEG_CLASSES:
        raise ValueError("mask ids out of range")


def _load_cache(path: Path, cfg: ShapesConfig) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("images", "labels", "masks") if k in z.files}
            key = str(z["key"]) if "key" in z.files else None
        if key != cfg.key():
            raise ValueError("config key mismatch")
        _validate(arrays, cfg)
        return arrays
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        warnings.warn(
            f"shapes cache {path} is unusable ({type(exc).__name__}: {exc}); regenerating",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _save_cache(path: Path, cfg: ShapesConfig, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(cfg.key()), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def shapes_arrays(
    cfg: ShapesConfig,
    workers: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Generate a whole split as arrays.

    Returns {"images": uint8 N x H x W x 3, "labels": int64 N, "masks": uint8 N x H x W},
    identical to rendering each index with render_item, whatever `workers` is. With `cache_dir`,
    the arrays are loaded from / stored to one uncompressed .npz named by the config hash
    (cache_path); the file is written atomically, and a missing, stale or corrupt file is
    regenerated (corrupt ones with a RuntimeWarning).
    """
    if not isinstance(cfg, ShapesConfig):
        raise TypeError(f"cfg must be a ShapesConfig, got {type(cfg).__name__}")
    if not _is_int(workers) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    path = None
    if cache_dir is not None:
        path = cache_path(cfg, cache_dir)
        cached = _load_cache(path, cfg)
        if cached is not None:
            return cached
    arrays = _generate(cfg, int(workers))
    if path is not None:
        _save_cache(path, cfg, arrays)
    return arrays
