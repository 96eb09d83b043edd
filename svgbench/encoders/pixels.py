"""Raw pixels as a latent: the floor every learned encoder is compared against.

`pixels`: the image average-pooled by 8 (3 x H/8 x W/8), decoded by bilinear upsampling. Its pooled
feature is the whole flattened latent (a linear probe on raw pixels, as usual), not the mean token,
which would keep only the average colour.
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import EncoderSpec, LatentEncoder


class PixelsEncoder(LatentEncoder):
    def __init__(self, spec: EncoderSpec):
        super().__init__(spec)

    def _encode(self, images):
        return F.avg_pool2d(images, self.spec.downsample)

    def _decode(self, latent):
        return F.interpolate(latent, scale_factor=self.spec.downsample, mode="bilinear",
                             align_corners=False).clamp(-1, 1)

    def _features(self, images):
        z = self._encode(images)
        return {"patch": z.flatten(2).transpose(1, 2), "pooled": z.flatten(1)}


# name -> (resolution, downsample): the average-pooled pixel floor
ENCODER_CONFIGS = {"pixels": (64, 8)}


def _spec(name: str, resolution: int = 64, downsample: int = 8) -> EncoderSpec:
    return EncoderSpec(name=name, family="pixels", latent_channels=3, downsample=downsample, resolution=resolution,
                       has_decoder=True, weights="none (no parameters)", feature_dim=3,
                       notes="average-pooled pixels; pooled feature = flattened latent")


def create_pixels(name: str, weights: str | None = None, resolution: int = 64, downsample: int = 8):
    if weights not in (None, "random"):
        raise ValueError(f"encoder {name!r} has no weights to load (got weights={weights!r})")
    return PixelsEncoder(_spec(name, resolution, downsample))


create_pixels.spec_for = lambda name: _spec(name)
