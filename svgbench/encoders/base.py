"""The latent-extractor contract shared by every encoder.

Images in are float tensors in [-1, 1], shape B x 3 x H x W. `encode` returns the latent the
diffusion model sees (B x C x h x w); `decode` maps it back to images in [-1, 1]; `features`
returns what the understanding tasks probe: {"patch": B x N x D, "pooled": B x D}.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn


class EncoderInputError(ValueError):
    """Images handed to an encoder that it cannot take (shape, range, resolution)."""


# What an encoder can do with the weights it was given: map images to latents, latents to images, images to the
# features the understanding tasks probe.
ABILITIES = ("encode", "decode", "features")


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder produces and where its weights come from.

    `downsample` is the number of input pixels per latent cell along each side; a resolution must
    be a multiple of `resolution_multiple` (the patch or stride the network needs), unless
    `resize_to_multiple`: then an image whose side is not a multiple is resized (bilinear, antialiased,
    never cropped) to the largest multiple at or below it, and the latent grid is side // downsample
    (DINOv2's patch 14 in a 256 px matrix: 256 -> 252, 18 x 18 tokens covering the whole image).
    """

    name: str
    family: str
    latent_channels: int
    downsample: int
    resolution: int
    has_decoder: bool
    weights: str
    feature_dim: int | None = None
    patch_size: int | None = None
    resolution_multiple: int | None = None
    fixed_resolution: bool = False
    resize_to_multiple: bool = False
    input_range: tuple[float, float] = (-1.0, 1.0)
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # ability ("encode", "decode", "features") -> why the weights given cannot do it (a decoder-only file):
    # what the architecture could do but these weights cannot; the runner reports such cells n/a with the reason
    unable: dict = field(default_factory=dict)

    def why_not(self, ability: str) -> str | None:
        """Why this encoder, with its weights, cannot `ability` (one of ABILITIES); None when it can."""
        if ability not in ABILITIES:
            raise ValueError(f"unknown encoder ability {ability!r}; abilities: {', '.join(ABILITIES)}")
        if ability == "decode" and not self.has_decoder:
            return "no pixel decoder"
        return self.unable.get(ability)

    @property
    def abilities(self) -> tuple[str, ...]:
        return tuple(a for a in ABILITIES if self.why_not(a) is None)

    def latent_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        r = self.resolution if resolution is None else resolution
        return (self.latent_channels, r // self.downsample, r // self.downsample)

    def check_resolution(self, height: int, width: int) -> None:
        if self.fixed_resolution and (height, width) != (self.resolution, self.resolution):
            raise EncoderInputError(
                f"encoder {self.name!r} takes only {self.resolution}x{self.resolution} images "
                f"(its position embeddings are built for that size), got {height}x{width}"
            )
        mult = self.resolution_multiple or self.downsample
        if self.resize_to_multiple:
            if height < mult or width < mult:
                raise EncoderInputError(f"encoder {self.name!r} cannot take {height}x{width} images: height and "
                                        f"width must be at least {mult} (its patch/stride)")
            return
        if height % mult or width % mult:
            raise EncoderInputError(
                f"encoder {self.name!r} cannot take {height}x{width} images: height and width must be "
                f"multiples of {mult} (its patch/stride); e.g. {self.resolution}x{self.resolution}"
            )

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the network sees for an input of this size (see `resize_to_multiple`)."""
        if not self.resize_to_multiple:
            return height, width
        mult = self.resolution_multiple or self.downsample
        return height // mult * mult, width // mult * mult

    def replace(self, **changes) -> "EncoderSpec":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["latent_shape"] = list(self.latent_shape())
        d["abilities"] = list(self.abilities)
        return d


def with_load_account(spec: EncoderSpec, account) -> EncoderSpec:
    """`spec` with what a weights load skipped or compared (checkpoints.LoadAccount) in `extra`, so that every
    record of the encoder says which tensors of its file were not loaded, and why."""
    if account is None:
        return spec
    prov = account.provenance()
    extra = {k: prov[part] for k, part in (("unused_tensors", "unused"), ("compared_tensors", "compared"))
             if part in prov}
    return spec.replace(extra={**spec.extra, **extra}) if extra else spec


class LatentEncoder(nn.Module):
    """Base class of every registered encoder. Subclasses implement `_encode` (and `_decode`)."""

    spec: EncoderSpec

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec

    # ---- public API: validates input, then calls the subclass ----
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self._encode(images)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if not self.spec.has_decoder:
            raise NotImplementedError(f"encoder {self.spec.name!r} has no pixel decoder")
        c = self.spec.latent_channels
        if latent.ndim != 4 or latent.shape[1] != c:
            raise EncoderInputError(
                f"encoder {self.spec.name!r} decodes latents of shape B x {c} x h x w, got {tuple(latent.shape)}"
            )
        return self._decode(latent)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_images(images)
        return self._features(images)

    # ---- subclass hooks ----
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Default: latent cells as tokens, mean-pooled."""
        z = self._encode(images)
        tokens = z.flatten(2).transpose(1, 2)
        return {"patch": tokens, "pooled": tokens.mean(1)}

    # ---- helpers ----
    def check_images(self, images: torch.Tensor) -> None:
        name = self.spec.name
        if not isinstance(images, torch.Tensor):
            raise EncoderInputError(f"encoder {name!r} takes a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise EncoderInputError(f"encoder {name!r} takes B x 3 x H x W images, got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise EncoderInputError(f"encoder {name!r} takes float images in [-1, 1], got dtype {images.dtype}")
        lo, hi = self.spec.input_range
        if images.numel() and (images.min() < lo - 1e-3 or images.max() > hi + 1e-3):
            raise EncoderInputError(
                f"encoder {name!r} takes images in [{lo}, {hi}], got values in "
                f"[{images.min().item():.3f}, {images.max().item():.3f}]"
            )
        self.spec.check_resolution(images.shape[2], images.shape[3])

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def weights_hash(self) -> str:
        """sha256 over parameter and buffer bytes (and the spec's name): the cache key of what this encoder computes."""
        h = hashlib.sha256(self.spec.name.encode())
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16
                     else v.detach().cpu().float().numpy().tobytes())
        return h.hexdigest()[:16]


# ImageNet statistics: the DINO family's input normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fit_to_network(images: torch.Tensor, spec: EncoderSpec) -> torch.Tensor:
    """Resize B x 3 x H x W images to `spec.network_size(H, W)` (bilinear, antialiased); unchanged when equal."""
    size = spec.network_size(images.shape[2], images.shape[3])
    if size == tuple(images.shape[2:]):
        return images
    return torch.nn.functional.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def to_imagenet_normalized(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> ImageNet mean/std normalised, as DINO and SVG's encoders expect."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images + 1.0) / 2.0 - mean) / std
