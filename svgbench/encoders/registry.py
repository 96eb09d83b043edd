"""The latent-extractor registry: one name -> one factory (and, where cheap, a spec).

Built-in entries are lazy "module:attribute" strings so that importing svgbench does not import
timm or diffusers. Third-party encoders arrive either through `register_encoder` in the user's own
code or through the `svgbench.encoders` entry-point group (value "package.module:factory").
Duplicate names are errors, never silent overwrites.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..registry import Registry, UnknownNameError, is_reference, resolve
from .base import EncoderSpec, LatentEncoder

ENTRY_POINT_GROUP = "svgbench.encoders"


class UnknownEncoderError(UnknownNameError):
    pass


@dataclass
class _Entry:
    name: str
    factory: Callable[..., LatentEncoder] | str
    spec: EncoderSpec | None = None
    source: str = "builtin"

    def resolve(self) -> Callable[..., LatentEncoder]:
        self.factory = resolve(self.factory)
        return self.factory


# The built-in families: module -> factory. Each module's ENCODER_CONFIGS declares its encoder names (once, with
# their build configs); every factory takes (name=..., weights=None, **overrides). Importing a family module
# imports torch but not timm or diffusers (those are imported when an encoder is built).
_FAMILIES = {
    "svgbench.encoders.svg": "create_svg",        # SVG: frozen DINO + residual encoder + pixel decoder
    "svgbench.encoders.sdvae": "create_sdvae",    # SD-VAE (diffusers AutoencoderKL)
    "svgbench.encoders.dino": "create_dino",      # raw DINO patch tokens (and the embedded tiny-ssl)
    "svgbench.encoders.pixels": "create_pixels",  # the floor: average-pooled raw pixels
    "svgbench.encoders.zoo": "create_zoo",  # named hub autoencoders and SSL backbones (aliases of diffusers:/timm:)
}


# Generic families: any name "PREFIX..." resolves to one factory, which reads the rest of the name (a hub id, a folder,
# a timm model and its weights); these names are never listed, they are built on demand.
FAMILY_PREFIXES = {
    "diffusers:": "svgbench.encoders.diffusers_ae:create_diffusers",  # any diffusers image autoencoder
    "timm:": "svgbench.encoders.timm_backbone:create_timm",  # any timm backbone, features only
    "ldm:": "svgbench.encoders.vavae:create_ldm",  # LDM-layout KL checkpoints (VA-VAE), as diffusers AutoencoderKL
}


def family_of(name: str) -> str | None:
    """The generic family prefix `name` starts with ("diffusers:", "timm:"), or None."""
    return next((p for p in FAMILY_PREFIXES if isinstance(name, str) and name.startswith(p)), None)


def is_known_encoder(name: str) -> bool:
    """A registered name, or a name of a generic family (whether it builds is for the family to say)."""
    return family_of(name) is not None or name in list_encoders()


def builtin_names() -> dict[str, str]:
    """Built-in encoder name -> "module:factory", from the families' ENCODER_CONFIGS."""
    out = {}
    for module, factory in _FAMILIES.items():
        for name in importlib.import_module(module).ENCODER_CONFIGS:
            out[name] = f"{module}:{factory}"
    return out


def _builtin_entries() -> dict[str, _Entry]:
    return {name: _Entry(name, target, None, "builtin") for name, target in builtin_names().items()}


ENCODERS = Registry("encoder", ENTRY_POINT_GROUP, name_re=r"^[a-z0-9][a-z0-9._+-]*$",
                    name_rule="lower-case letters, digits and '.', '_', '+', '-'", builtins=_builtin_entries,
                    from_entry_point=lambda ep, source: _Entry(ep.name, ep.value, None, source),
                    unknown_error=UnknownEncoderError, sort_names=True)
_REGISTRY = ENCODERS  # name -> entry (with its `source`), as `svgbench.evaluate` reads it


def register_encoder(name: str, factory: Callable[..., LatentEncoder] | str | None = None, *,
                     spec: EncoderSpec | None = None, source: str = "user"):
    """Register `factory` under `name`; usable as a decorator when `factory` is omitted.

    `factory(**kwargs)` must return a `LatentEncoder`. `spec`, if given, lets `svgbench list`
    describe the encoder without building it.
    """
    if factory is None:
        return lambda f: (register_encoder(name, f, spec=spec, source=source), f)[1]
    ENCODERS.check_free(name)
    if not (callable(factory) or is_reference(factory)):
        raise TypeError(f"factory for {name!r} must be callable or a 'module:attribute' string")
    ENCODERS.add(name, _Entry(name, factory, spec, source))
    return factory


def unregister_encoder(name: str) -> None:
    ENCODERS.remove(name)


def list_encoders() -> list[str]:
    return ENCODERS.names()


def _entry(name: str) -> _Entry:
    family = family_of(name)
    if family is not None and name not in ENCODERS:
        return _Entry(name, FAMILY_PREFIXES[family], None, "builtin")
    return ENCODERS.get(name)


def create_encoder(name: str, **kwargs) -> LatentEncoder:
    """Build the encoder registered as `name`. Built-ins take `weights=` (hub id, directory or file)."""
    entry = _entry(name)
    factory = entry.resolve()
    enc = factory(name=name, **kwargs) if entry.source == "builtin" else factory(**kwargs)
    if not isinstance(enc, LatentEncoder):
        raise TypeError(f"factory of encoder {name!r} returned {type(enc).__name__}, not a LatentEncoder")
    return enc


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of `name`, without loading weights where the factory supports it."""
    entry = _entry(name)
    if entry.spec is not None:
        return entry.spec
    factory = entry.resolve()
    spec_fn = getattr(factory, "spec_for", None)
    if spec_fn is not None:
        return spec_fn(name)
    return create_encoder(name).spec
