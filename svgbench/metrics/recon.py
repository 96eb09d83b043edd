"""Reconstruction metrics: PSNR and SSIM (torchmetrics), LPIPS and rFID where their weights exist locally.

Images are compared as the uint8 pictures a user would save: both sides are quantised to
0..255 first, as the reference evaluations of SD-VAE, SVG and RAE do. A metric whose network
weights are not on this machine is reported as unavailable (None, with the reason), never as 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> [0, 1] float on the uint8 grid."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 255.0


def psnr_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y in [0, 1], B x 3 x H x W -> B PSNR values in dB (inf where identical)."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


class SSIM:
    """Mean SSIM over images (Gaussian window 11, sigma 1.5, data range 1), via torchmetrics."""

    def __init__(self):
        from torchmetrics.functional.image import structural_similarity_index_measure

        self._fn = structural_similarity_index_measure

    def per_image(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._fn(x.float(), y.float(), data_range=1.0, reduction="none")


def _hub_file(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


LPIPS_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def lpips_metric(net: str = "vgg"):
    """-> (callable(x, y) -> per-image LPIPS, None) or (None, reason). x, y in [0, 1]."""
    f = _hub_file(LPIPS_BACKBONE_FILES[net])
    if not f.exists():
        return None, f"LPIPS needs torchvision's {net} weights at {f} (not on this machine)"
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    m = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True, reduction="sum").eval()

    def fn(x, y):
        with torch.no_grad():
            return torch.stack([m(x[i:i + 1].float(), y[i:i + 1].float()) for i in range(x.shape[0])])

    return fn, None


INCEPTION_ENV = "SVGBENCH_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def inception_weights_path() -> Path | None:
    """torch-fidelity's inception-v3-compat weights: $SVGBENCH_INCEPTION_WEIGHTS or its hub cache."""
    env = os.environ.get(INCEPTION_ENV)
    if env:
        return Path(env) if Path(env).exists() else None
    f = _hub_file(INCEPTION_FILE)
    return f if f.exists() else None
