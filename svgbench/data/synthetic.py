"""A synthetic ImageNet-layout folder of JPEG files, for smoke runs of the folder presets without real data.

root/<split>/n0000000k/<split>_k_i.JPEG: class k is a stripe pattern of its own hue, angle and frequency,
under a random phase, brightness and pixel noise per image, so the classes are separable and no two images
are equal. `svgbench run --preset imagenet256 --data imagefolder --data-root ROOT` reads it as it reads
ImageNet (train/ for the probes' training split, val/ for evaluation).
"""

from __future__ import annotations

from pathlib import Path


def write_stripes_imagefolder(root: str | Path, per_class: dict[str, int], num_classes: int = 4,
                              resolution: int = 256, seed: int = 0, quality: int = 90) -> Path:
    """Write `per_class[split]` JPEG images (resolution x resolution, RGB) per class and split; -> root."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / resolution
    for split, n in per_class.items():
        for k in range(num_classes):
            folder = root / split / f"n{k:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            angle = np.pi * k / num_classes
            hue = np.array([np.cos(angle), np.cos(angle + 2.1), np.cos(angle + 4.2)], np.float32) * 0.4 + 0.5
            for i in range(n):
                phase, freq = rng.uniform(0, 2 * np.pi), 6 + 2 * k
                wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
                img = wave[..., None] * hue * rng.uniform(0.7, 1.0) + rng.normal(0, 0.05, (resolution, resolution, 3))
                Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"{split}_{k}_{i}.JPEG",
                                                                              quality=quality)
    return root
