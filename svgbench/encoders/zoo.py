"""The named zoo: short names for the field's autoencoders and SSL backbones, each an alias of a generic family name.

`flux1-vae` is `diffusers:black-forest-labs/FLUX.1-schnell/vae`, built by encoders/diffusers_ae.py from that folder's
config.json; `siglip-b16` is `timm:vit_base_patch16_siglip_224.webli`. `--weights NAME=PATH` swaps the hub id for a
local diffusers folder (or, for timm entries, a weights file), which is how they run offline.

`arch` is the published config.json of the entry where it is known here (copied from the hub's files): it gives
`svgbench list` the latent shape without a download; the hub's own config is what builds the model. Entries
without it state their latent shape at 256 px (from the model card / timm's architecture). `params_m` is the
parameter count of the architecture in millions, stated so that `svgbench list` imports neither timm nor
diffusers; tests/test_zoo.py checks both against the architectures built on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..checkpoints import CheckpointError
from .base import EncoderSpec

_KL = dict(_class_name="AutoencoderKL", in_channels=3, out_channels=3, block_out_channels=[128, 256, 512, 512],
           layers_per_block=2, norm_num_groups=32, act_fn="silu", down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, mid_block_add_attention=True)


@dataclass(frozen=True)
class ZooEntry:
    target: str  # the generic family name it stands for
    paper: str
    arch: dict | None = None  # published config.json (class and architecture), see the module docstring
    latent: tuple[int, int, int] | None = None  # C x h x w at 256 px where `arch` is not given
    params_m: float | None = None  # parameters (millions) of the architecture; None: not known without the hub
    decoder: bool = True
    notes: str = ""
    extra: dict = field(default_factory=dict)


ENCODER_CONFIGS: dict[str, ZooEntry] = {
    "sdxl-vae": ZooEntry("diffusers:stabilityai/sdxl-vae", "SDXL, Podell et al. 2023, arXiv:2307.01952",
                         dict(_KL, latent_channels=4, scaling_factor=0.13025), params_m=83.7),
    "sd3.5-vae": ZooEntry("diffusers:stabilityai/stable-diffusion-3.5-large/vae",
                          "SD3, Esser et al. 2024, arXiv:2403.03206 (gated repo: accept its licence on the hub)",
                          dict(_KL, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                               use_quant_conv=False, use_post_quant_conv=False), params_m=83.8),
    "flux1-vae": ZooEntry("diffusers:black-forest-labs/FLUX.1-schnell/vae",
                          "FLUX.1 Kontext, Black Forest Labs 2025, arXiv:2506.15742 (the FLUX.1 autoencoder)",
                          dict(_KL, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                               use_quant_conv=False, use_post_quant_conv=False), params_m=83.8),
    "flux2-vae": ZooEntry("diffusers:black-forest-labs/FLUX.2-dev/vae",
                          "FLUX.2, Black Forest Labs 2025, model card (no paper; gated repo)",
                          dict(_KL, _class_name="AutoencoderKLFlux2", latent_channels=32, patch_size=[2, 2],
                               batch_norm_eps=1e-4, use_quant_conv=True, use_post_quant_conv=True), params_m=84.0),
    "dc-ae-f32c32": ZooEntry("diffusers:mit-han-lab/dc-ae-f32c32-in-1.0-diffusers",
                             "DC-AE, Chen et al. 2024, arXiv:2410.10733", latent=(32, 8, 8)),
    "va-vae-f16d32": ZooEntry(
        "ldm:hustvl/vavae-imagenet256-f16d32-dinov2/vavae-imagenet256-f16d32-dinov2.pt",
        "VA-VAE, Yao et al. 2025, arXiv:2501.01423 (hustvl/LightningDiT)",
        dict(_KL, block_out_channels=[128, 128, 256, 256, 512], latent_channels=32, scaling_factor=1.0,
             down_block_types=["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"],
             up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 4), params_m=69.8,
        notes="LDM-layout .pt converted on load to AutoencoderKL (encoders/vavae.py); latent normalised by the "
              "latents_stats.pt beside it, as LightningDiT does"),
    "taesd": ZooEntry("diffusers:madebyollin/taesd", "TAESD, Boer Bohan 2023, github.com/madebyollin/taesd (no paper)",
                      dict(_class_name="AutoencoderTiny", latent_channels=4), params_m=2.4),
    "rae-dinov2-b": ZooEntry("diffusers:nyu-visionx/RAE-dinov2-wReg-base-ViTXL-n08",
                             "RAE, Zheng et al. 2025, arXiv:2510.11690 (needs transformers)", latent=(768, 16, 16),
                             notes="frozen DINOv2-B with registers at 224 px + ViT-XL decoder to 256 px; the authors' "
                                   "own release (nyu-visionx/RAE-collections: decoder model.pt, stat.pt, encoder from "
                                   "transformers) has another layout, so this is their diffusers-format repo of it "
                                   "(diffusers' AutoencoderRAE docs), loaded as-is"),
    "dinov2-vitl14": ZooEntry("timm:vit_large_patch14_dinov2.lvd142m", "DINOv2, Oquab et al. 2023, arXiv:2304.07193",
                              latent=(1024, 18, 18), params_m=304.4, decoder=False),
    "dinov3-vitb16": ZooEntry("timm:vit_base_patch16_dinov3.lvd1689m", "DINOv3, Simeoni et al. 2025, arXiv:2508.10104",
                              latent=(768, 16, 16), params_m=85.6, decoder=False),
    "siglip-b16": ZooEntry("timm:vit_base_patch16_siglip_224.webli", "SigLIP, Zhai et al. 2023, arXiv:2303.15343",
                           latent=(768, 16, 16), params_m=92.9, decoder=False),
    "siglip2-b16": ZooEntry("timm:vit_base_patch16_siglip_256.v2_webli",
                            "SigLIP 2, Tschannen et al. 2025, arXiv:2502.14786", latent=(768, 16, 16), params_m=92.9,
                            decoder=False),
    "mae-b16": ZooEntry("timm:vit_base_patch16_224.mae", "MAE, He et al. 2021, arXiv:2111.06377", latent=(768, 16, 16),
                        params_m=85.8, decoder=False),
    "clip-b16": ZooEntry("timm:vit_base_patch16_clip_224.openai", "CLIP, Radford et al. 2021, arXiv:2103.00020",
                         latent=(768, 16, 16), params_m=85.8, decoder=False),
}


def _entry(name: str) -> ZooEntry:
    if name not in ENCODER_CONFIGS:
        raise KeyError(f"no zoo entry {name!r}; entries: {', '.join(ENCODER_CONFIGS)}")
    return ENCODER_CONFIGS[name]


def target_for(name: str, weights: str | None) -> str:
    """The family name `name` builds: its hub id, or the local folder/file given as `weights`."""
    entry = _entry(name)
    if weights is None:
        return entry.target
    if entry.target.startswith("timm:"):
        model = entry.target.removeprefix("timm:").partition("@")[0]
        return f"timm:{model}@{weights}"
    if entry.target.startswith("ldm:"):
        return f"ldm:{weights}"
    return f"diffusers:{weights}"


def create_zoo(name: str, weights: str | None = None, resolution: int | None = None, **kwargs):
    from .registry import create_encoder

    target = target_for(name, weights)
    try:
        enc = create_encoder(target, resolution=resolution, **kwargs)
    except CheckpointError as e:
        if weights is not None:
            raise
        raise CheckpointError(f"{e}; or, for {name}: --weights {name}=PATH (svgbench run) / weights=PATH",
                              input=name, fix=f"--weights {name}=PATH") from e
    enc.spec = enc.spec.replace(name=name, notes=f"{enc.spec.notes}; {_entry(name).paper}",
                                extra=enc.spec.extra | {"zoo": target})
    return enc


def _spec_for(name: str) -> EncoderSpec:
    """From the catalogue alone: no download, no timm or diffusers import."""
    entry = _entry(name)
    hub = f"hf-hub:{entry.target.split(':', 1)[1]}"
    if entry.arch is not None:
        from .diffusers_ae import make_spec

        arch = {k: v for k, v in entry.arch.items() if k != "_class_name"}
        spec = make_spec(name, entry.arch["_class_name"], arch, hub, None, False)
        if entry.target.startswith("ldm:"):  # converted on load: the family that reads the file
            spec = spec.replace(family="ldm")
    else:
        c, h, _ = entry.latent
        timm = entry.target.startswith("timm:")
        spec = EncoderSpec(name=name, family="timm" if timm else "diffusers", latent_channels=c, downsample=256 // h,
                           resolution=256, has_decoder=entry.decoder, weights=hub, feature_dim=c,
                           patch_size=256 // h if timm else None, resize_to_multiple=timm,
                           fixed_resolution=entry.target.startswith("diffusers:nyu-visionx/RAE"))
    return spec.replace(notes=f"{entry.paper}{'; ' + entry.notes if entry.notes else ''}",
                        extra=spec.extra | {"zoo": entry.target, "paper": entry.paper, "params_m": entry.params_m})


def param_count(name: str) -> int | None:
    """Parameters of the entry's architecture, built on the meta device (no weights, no download); None where the
    architecture is not known without the hub's config."""
    entry = _entry(name)
    if entry.target.startswith("timm:"):
        from .timm_backbone import build

        model = build(entry.target, meta=True)[0]
    elif entry.arch is not None:
        import diffusers

        klass = getattr(diffusers, entry.arch["_class_name"], None)
        if klass is None:
            return None
        with torch.device("meta"):
            model = klass.from_config({k: v for k, v in entry.arch.items() if k != "_class_name"})
    else:
        return None
    return sum(p.numel() for p in model.parameters())


create_zoo.spec_for = _spec_for
