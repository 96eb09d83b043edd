"""Reconstruction losses shared by the autoencoder recipes.

The perceptual term is LPIPS (torchmetrics, VGG) where its ImageNet weights are on the machine (real
scale); offline it is a structural term, 1 - SSIM, which needs no pretrained network. Records and
model cards name which one a run used. The PatchGAN discriminator and hinge loss follow the LDM
autoencoder recipe (adaptive weight from the decoder's last layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Perceptual(nn.Module):
    """kind: 'lpips' (needs VGG weights locally), 'ssim' (no network), or 'none'. Inputs in [-1, 1]."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "lpips":
            from ..metrics.recon import lpips_metric

            fn, why = lpips_metric("vgg")
            if fn is None:
                raise FileNotFoundError(f"perceptual='lpips': {why}; use perceptual='ssim' offline")
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.lpips = LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=False).eval()
            self.lpips.requires_grad_(False)
        elif kind not in ("ssim", "none"):
            raise ValueError(f"perceptual must be 'lpips', 'ssim' or 'none', got {kind!r}")

    def forward(self, x, y):
        if self.kind == "none":
            return x.new_zeros(())
        if self.kind == "lpips":
            return self.lpips(x.clamp(-1, 1), y.clamp(-1, 1))
        from torchmetrics.functional.image import structural_similarity_index_measure

        return 1 - structural_similarity_index_measure((x.clamp(-1, 1) + 1) / 2, (y + 1) / 2, data_range=1.0)


class PatchDiscriminator(nn.Module):
    """pix2pix / LDM PatchGAN: strided convs -> a map of real/fake logits."""

    def __init__(self, ch: int = 64, layers: int = 3):
        super().__init__()
        seq = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = ch
        for i in range(1, layers):
            seq += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        seq += [nn.Conv2d(c, c, 4, 1, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, True),
                nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*seq)

    def forward(self, x):
        return self.net(x)


def hinge_d_loss(real_logits, fake_logits):
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def adaptive_gan_weight(rec_loss, g_loss, last_layer, scale: float) -> torch.Tensor:
    """LDM's balance: |grad rec| / |grad gan| at the decoder's last layer, clamped, times `scale`."""
    rg = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gg = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = torch.norm(rg) / (torch.norm(gg) + 1e-4)
    return torch.clamp(w, 0.0, 1e4).detach() * scale
