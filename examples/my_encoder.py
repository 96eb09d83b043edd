"""A complete third-party encoder for svgbench: space-to-depth pixels, no training, exact decoder.

Run it through every task with:
    svgbench --plugin examples/my_encoder.py run --encoders pixel-shuffle,tiny-svg
"""

import torch
import torch.nn.functional as F

from svgbench.encoders import EncoderSpec, LatentEncoder, register_encoder


class PixelShuffleAE(LatentEncoder):
    """Latent: each 4x4 pixel block as 48 channels (3 x 16), so 48 x 16 x 16 at 64 px."""

    def __init__(self, factor: int = 4, resolution: int = 64):
        super().__init__(EncoderSpec(
            name="pixel-shuffle", family="mine", latent_channels=3 * factor**2, downsample=factor,
            resolution=resolution, has_decoder=True, weights="none (no parameters)"))
        self.factor = factor

    def _encode(self, images):  # B x 3 x H x W in [-1, 1] -> B x 48 x H/4 x W/4
        return F.pixel_unshuffle(images, self.factor)

    def _decode(self, latent):  # the exact inverse
        return F.pixel_shuffle(latent, self.factor)

    def _features(self, images):  # optional: what probe/knn/seg see (default: the latent's tokens)
        tokens = self._encode(images).flatten(2).transpose(1, 2)  # B x N x 48
        return {"patch": tokens, "pooled": tokens.mean(1)}


register_encoder("pixel-shuffle", PixelShuffleAE)
