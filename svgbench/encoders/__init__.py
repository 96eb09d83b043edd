"""The latent-extractor registry and the built-in encoders (SVG, SD-VAE, DINO)."""

from .base import EncoderInputError, EncoderSpec, LatentEncoder, to_imagenet_normalized
from . import registry
from .registry import (ENTRY_POINT_GROUP, UnknownEncoderError, create_encoder, encoder_spec, list_encoders,
                       register_encoder, unregister_encoder)

__all__ = [
    "ENTRY_POINT_GROUP", "EncoderInputError", "registry", "EncoderSpec", "LatentEncoder", "UnknownEncoderError",
    "create_encoder", "encoder_spec", "list_encoders", "register_encoder", "to_imagenet_normalized",
    "unregister_encoder",
]
