"""The SVG autoencoder (arXiv 2510.15301): frozen DINO + residual ViT + distribution alignment + pixel decoder.

Latent = concat(DINO patch tokens, aligned residual channels) as a grid, e.g. (384 + 8) x 16 x 16 for
DINOv3 ViT-S/16+ at 256 px. No KL, no sampling.

Pieces come from the field's libraries: the DINO encoder is timm's, the residual encoder is a
torchvision VisionTransformer (as in the official code, so its `extra_vit.*` keys load as they are),
and the pixel decoder is diffusers' LDM-style `Decoder`. Official Lightning checkpoints (LDM decoder
key names, Meta DINO key names) are converted on load; svgbench's own files are safetensors with
the architecture config in their metadata.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import (CheckpointError, LoadAccount, check_and_load, file_sha256, load_state_dict,
                           read_safetensors_metadata, save_safetensors)
from .base import EncoderSpec, LatentEncoder, to_imagenet_normalized, with_load_account
from .dino import DINO_UNUSED
from .dino import ENCODER_CONFIGS as DINO_CONFIGS
from .dino import build_timm_dino, convert_dino_state, has_qkv_bias_params, needs_qkv_bias
from .dino import resolve_weights as resolve_dino_weights

EMBEDDED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class SVGConfig:
    """Architecture of an SVG autoencoder. Defaults: the published ViT-S/16+ model at 256 px."""

    dino: str = "dinov3-vits16plus"
    dino_overrides: dict = field(default_factory=dict)
    resolution: int = 256
    residual: bool = True
    residual_channels: int = 8
    residual_layers: int = 6
    residual_heads: int = 8
    residual_width: int = 384
    residual_mlp: int = 1536
    mask_prob: float = 0.1
    align: str = "batch"  # "batch" (as published), "sample" (batch-independent), "none"
    decoder_ch: int = 128
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_res_blocks: int = 2
    decoder_attn_resolutions: tuple[int, ...] = (16,)
    decoder_groups: int = 32

    def __post_init__(self):
        if self.align not in ("batch", "sample", "none"):
            raise ValueError(f"SVGConfig.align must be 'batch', 'sample' or 'none', got {self.align!r}")
        if self.dino not in DINO_CONFIGS:
            raise ValueError(f"SVGConfig.dino {self.dino!r} is not a DINO preset ({', '.join(DINO_CONFIGS)})")
        patch = DINO_CONFIGS[self.dino].kwargs.get("patch_size", DINO_CONFIGS[self.dino].patch)
        if 2 ** (len(self.decoder_ch_mult) - 1) != patch:
            raise ValueError(f"SVGConfig: decoder upsamples x{2 ** (len(self.decoder_ch_mult) - 1)} but the "
                             f"DINO patch is {patch}; len(decoder_ch_mult) must be log2(patch) + 1")

    @property
    def patch(self) -> int:
        return DINO_CONFIGS[self.dino].kwargs.get("patch_size", DINO_CONFIGS[self.dino].patch)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SVGConfig":
        d = json.loads(text)
        for k in ("decoder_ch_mult", "decoder_attn_resolutions"):
            d[k] = tuple(d[k])
        return cls(**d)


# The tiny decoders have tiny-vae's decoder (block channels 16, 32, 64, 64; 2 resnets per level;
# attention in the mid block only), so that reconstructions compare latents, not decoder sizes. Four
# GroupNorm groups: with one channel per group (GroupNorm = InstanceNorm) every norm erases each image's
# channel means, and a decoder this narrow then takes hundreds of steps to pass colour through at all.
_TINY_DECODER = dict(decoder_ch=16, decoder_ch_mult=(1, 2, 4, 4), decoder_res_blocks=1,
                     decoder_attn_resolutions=(), decoder_groups=4)

ENCODER_CONFIGS: dict[str, tuple[SVGConfig, str | None]] = {
    "svg-dinov3-vits16plus": (SVGConfig(), None),
    "tiny-svg": (SVGConfig(dino="tiny-ssl", resolution=64, residual_layers=2, residual_heads=4,
                           residual_width=128, residual_mlp=512, align="sample", **_TINY_DECODER), "tiny-svg.safetensors"),
    "tiny-svg-dino-only": (SVGConfig(dino="tiny-ssl", resolution=64, residual=False, **_TINY_DECODER),
                           "tiny-svg-dino-only.safetensors"),
}


# ---------------------------------------------------------------------------------------------
# Residual encoder: torchvision ViT, CLS dropped, 2-layer head to a few channels per token
# ---------------------------------------------------------------------------------------------

def build_residual_vit(cfg: SVGConfig) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(image_size=cfg.resolution, patch_size=cfg.patch, num_layers=cfg.residual_layers,
                            num_heads=cfg.residual_heads, hidden_dim=cfg.residual_width,
                            mlp_dim=cfg.residual_mlp, num_classes=cfg.residual_channels,
                            dropout=0.1, attention_dropout=0.1)
    vit.heads = nn.Sequential(nn.Linear(cfg.residual_width, cfg.residual_width), nn.GELU(),
                              nn.Linear(cfg.residual_width, cfg.residual_channels))
    return vit


def residual_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W (ImageNet-normalised) -> B x C x N patch features (class token dropped)."""
    t = vit._process_input(x)
    t = torch.cat([vit.class_token.expand(t.shape[0], -1, -1), t], dim=1)
    t = vit.encoder(t)[:, 1:]
    return vit.heads(t).transpose(1, 2)


def align_distribution(dino: torch.Tensor, res: torch.Tensor, mode: str, eps: float = 1e-6) -> torch.Tensor:
    """Standardise `res` by its scalar mean/std and rescale to `dino`'s scalar mean/std (stats detached).

    Both B x C x N. The scalar std is the mean of per-channel stds. mode "batch" pools statistics
    over the batch (the published code: a latent then depends on its batch-mates); "sample" uses
    each sample's own tokens, so a latent is a function of its image alone.
    """
    if mode == "none":
        return res
    dims = (0, 2) if mode == "batch" else (2,)

    def stats(h):
        mean = h.mean(dim=dims).mean(-1).detach()
        std = h.std(dim=dims).mean(-1).detach()
        if mode == "sample":
            mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        return mean, std

    md, sd = stats(dino)
    mr, sr = stats(res)
    return (res - mr) / (sr + eps) * sd + md


# ---------------------------------------------------------------------------------------------
# Pixel decoder: diffusers' Decoder with the LDM layout, and the LDM -> diffusers key map
# ---------------------------------------------------------------------------------------------

def build_decoder(cfg: SVGConfig, in_channels: int) -> nn.Module:
    from diffusers.models.autoencoders.vae import Decoder

    n = len(cfg.decoder_ch_mult)
    low = cfg.resolution // 2 ** (n - 1)
    # diffusers' up_blocks[i] works at low * 2**i; LDM puts attention where that is in attn_resolutions
    types = tuple("AttnUpDecoderBlock2D" if low * 2 ** i in cfg.decoder_attn_resolutions else "UpDecoderBlock2D"
                  for i in range(n))
    return Decoder(in_channels=in_channels, out_channels=3, up_block_types=types,
                   block_out_channels=tuple(cfg.decoder_ch * m for m in cfg.decoder_ch_mult),
                   layers_per_block=cfg.decoder_res_blocks, norm_num_groups=cfg.decoder_groups,
                   act_fn="silu", mid_block_add_attention=True)


_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def ldm_decoder_to_diffusers(state: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """Rename an LDM `Decoder` state dict (keys without the `decoder.` prefix) to diffusers' names."""
    out = {}
    for k, v in state.items():
        nk = k
        if m := re.match(r"mid\.block_(\d)\.(.*)", k):
            nk = f"mid_block.resnets.{int(m[1]) - 1}.{m[2]}"
        elif m := re.match(r"mid\.attn_1\.(\w+)\.(weight|bias)", k):
            nk = f"mid_block.attentions.0.{_ATTN[m[1]]}.{m[2]}"
        elif m := re.match(r"up\.(\d+)\.block\.(\d+)\.(.*)", k):
            nk = f"up_blocks.{num_levels - 1 - int(m[1])}.resnets.{m[2]}.{m[3]}"
        elif m := re.match(r"up\.(\d+)\.attn\.(\d+)\.(\w+)\.(weight|bias)", k):
            nk = f"up_blocks.{num_levels - 1 - int(m[1])}.attentions.{m[2]}.{_ATTN[m[3]]}.{m[4]}"
        elif m := re.match(r"up\.(\d+)\.upsample\.conv\.(.*)", k):
            nk = f"up_blocks.{num_levels - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
        elif k.startswith("norm_out."):
            nk = "conv_norm_out." + k[len("norm_out."):]
        nk = nk.replace(".nin_shortcut.", ".conv_shortcut.")
        if re.search(r"attentions\.\d+\.to_(q|k|v|out\.0)\.weight$", nk) and v.ndim == 4:
            v = v[:, :, 0, 0]  # LDM's 1x1 convs are diffusers' linears
        out[nk] = v
    return out


# ---------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------

class SVGAutoencoder(LatentEncoder):
    """encode: B x 3 x H x W in [-1, 1] -> B x (D + c) x H/p x W/p; decode: the reverse, in [-1, 1]."""

    def __init__(self, spec: EncoderSpec, cfg: SVGConfig):
        super().__init__(spec)
        self.cfg = cfg
        dino_preset = DINO_CONFIGS[cfg.dino]
        self.encoder = build_timm_dino(dino_preset, cfg.resolution, **cfg.dino_overrides).eval().requires_grad_(False)
        dim = self.encoder.embed_dim
        if cfg.residual:
            self.extra_vit = build_residual_vit(cfg)
            self.mask_token = nn.Parameter(torch.randn(1, cfg.residual_channels, 1) * 0.02)
        self.decoder = build_decoder(cfg, dim + (cfg.residual_channels if cfg.residual else 0))
        # part -> why it is absent (a decoder-only checkpoint): encoding raises with these reasons
        self.missing: dict[str, str] = {}

    def rebuild_dino(self, qkv_bias: bool) -> None:
        """Rebuild the frozen DINO with (or without) q/v biases, for a checkpoint that carries them."""
        overrides = {**self.cfg.dino_overrides, "qkv_bias": qkv_bias}
        self.encoder = build_timm_dino(DINO_CONFIGS[self.cfg.dino], self.cfg.resolution, **overrides)
        self.encoder.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen, always in inference mode
        return self

    def dino_tokens(self, x_norm: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = self.encoder.forward_features(x_norm)[:, self.encoder.num_prefix_tokens:]
        return t.transpose(1, 2)  # B x D x N

    def latent(self, images: torch.Tensor, mask_prob: float = 0.0) -> torch.Tensor:
        """The differentiable encoder path (training uses mask_prob > 0: residual masking)."""
        if self.missing:
            raise CheckpointError(f"encoder {self.spec.name!r} can decode but not encode: "
                                  + "; ".join(self.missing.values()))
        x = to_imagenet_normalized(images)
        h = self.dino_tokens(x)
        if self.cfg.residual:
            r = residual_tokens(self.extra_vit, x)
            if mask_prob > 0:
                drop = (torch.rand(r.shape[0], 1, 1, device=r.device) < mask_prob).to(r.dtype)
                r = r * (1 - drop) + self.mask_token.expand_as(r) * drop
            r = align_distribution(h, r, self.cfg.align)
            h = torch.cat([h, r], dim=1)
        p = self.cfg.patch
        return h.reshape(h.shape[0], h.shape[1], images.shape[2] // p, images.shape[3] // p)

    def _encode(self, images):
        return self.latent(images)

    def _decode(self, latent):
        return self.decoder(latent).clamp(-1, 1)

    def _features(self, images):
        z = self._encode(images)
        t = z.flatten(2).transpose(1, 2)
        return {"patch": t, "pooled": t.mean(1)}

    # ---- svgbench's own format ----
    def save(self, path: str | Path, **metadata) -> None:
        save_safetensors(self.state_dict(), path, metadata={"format": "svgbench.svg", "svg_config": self.cfg.to_json(),
                                                            **metadata})


# Tensors of the official Lightning checkpoint that the published forward pass never reads.
SVG_UNUSED = {"norm_vit.*": "SVG's norm_vit: defined in the published autoencoder, never called in its forward",
              "loss.*": "the training loss's networks (LPIPS, discriminator, logvar): training only",
              "encoder.mask_token": "DINO's mask token, read only by masked-image pretraining"}


def convert_official_state(state: dict[str, torch.Tensor], model: SVGAutoencoder) -> tuple[dict, dict]:
    """Official Lightning `state_dict` -> (this module's names, converted key -> the file's key).

    `decoder.*` (LDM names) -> diffusers names; `extra_vit.*`, `mask_token` and every other key stay as they
    are (`encoder.*` is converted by the loader, `norm_vit.*` and `loss.*` are named unused there, anything
    else is refused).
    """
    out, file_keys = {}, {}
    n = len(model.cfg.decoder_ch_mult)
    for k, v in state.items():
        if k.startswith("decoder."):
            (nk, nv), = ldm_decoder_to_diffusers({k[len("decoder."):]: v}, n).items()
            out[f"decoder.{nk}"], file_keys[f"decoder.{nk}"] = nv, k
        else:
            out[k] = v
    return out, file_keys


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def is_official_layout(state: dict) -> bool:
    return any(k.startswith(("decoder.mid.", "decoder.up.")) for k in state)


def load_svg_weights(model: SVGAutoencoder, path: str | Path, dino_weights: str | None = None) -> LoadAccount:
    """Load an official Lightning `.ckpt` or an svgbench safetensors file into `model`, strictly.

    When the file carries no DINO weights (`encoder.*`), they come from `dino_weights` (or the DINO
    preset's default source). A decoder-only file (no `extra_vit.*`, as the released decoder checkpoint)
    gives a model that decodes and whose encode raises CheckpointError naming what is missing (the
    residual encoder, and the DINO weights when none were found); its spec says so (`unable`), so that the
    runner reports the cells that encode n/a with the reason. DINOv3 q/v biases in the file are loaded into
    a DINO rebuilt to hold them, never dropped (`dino.convert_dino_state`). Every tensor of the file is
    loaded, compared, named unused (SVG_UNUSED) or refused (checkpoints.check_and_load).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        meta = read_safetensors_metadata(path)
        if "svg_config" in meta:
            saved = SVGConfig.from_json(meta["svg_config"])
            if saved != model.cfg:
                diff = [f"{f.name}: file {getattr(saved, f.name)!r} vs requested {getattr(model.cfg, f.name)!r}"
                        for f in dataclasses.fields(SVGConfig) if getattr(saved, f.name) != getattr(model.cfg, f.name)]
                raise CheckpointError(f"checkpoint {path} was saved for another SVG architecture: " + "; ".join(diff))
    state, file_keys = load_state_dict(path), {}
    if is_official_layout(state):
        state, file_keys = convert_official_state(state, model)
    decode_only = model.cfg.residual and not any(k.startswith("extra_vit.") for k in state)
    if decode_only:
        del model.extra_vit, model.mask_token
        model.missing["residual"] = (f"{path} has no residual encoder (extra_vit.*, mask_token): a decoder-only "
                                     f"SVG checkpoint; encoding needs the full autoencoder checkpoint")
    enc, enc_source = _sub(state, "encoder."), str(path)
    state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    if not enc:
        desc, dino_file = resolve_dino_weights(model.cfg.dino, DINO_CONFIGS[model.cfg.dino], dino_weights)
        if dino_file is not None:
            enc, enc_source = load_state_dict(dino_file), str(dino_file)
        elif decode_only:
            model.missing["dino"] = (f"no DINO weights for {model.cfg.dino} ({path} has no encoder.*): "
                                     f"pass dino_weights=<file> (timm or Meta layout)")
        else:
            raise CheckpointError(f"checkpoint {path} has no DINO weights (encoder.*) and none were given: "
                                  f"pass dino_weights=<file> (timm or Meta layout)")
    account, enc_unused = LoadAccount(str(path)), {}
    if enc:
        if DINO_CONFIGS[model.cfg.dino].arch.endswith("_dinov3") and needs_qkv_bias(enc) \
                and not has_qkv_bias_params(model.encoder):
            model.rebuild_dino(qkv_bias=True)
        conv = convert_dino_state(enc, model.encoder, enc_source)
        if enc_source != str(path):  # a separate DINO file: accounted on its own, then its tensors join the model's
            account.merge(check_and_load(model.encoder, conv.state, source=enc_source, unused=DINO_UNUSED | conv.unused,
                                         file_keys=conv.file_keys), prefix=f"{Path(enc_source).name}:")
            account.loaded += [f"{Path(enc_source).name}:{k}" for k in conv.folded]
            enc_state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
        else:
            conv = conv.prefixed("encoder.")
            enc_state, file_keys = conv.state, file_keys | {k: file_keys.get(v, v) for k, v in conv.file_keys.items()}
            account.loaded += conv.folded
            enc_unused = conv.unused
    else:  # decoder-only without DINO: zeros, so that the weights hash does not depend on a random init
        enc_state = {f"encoder.{k}": torch.zeros_like(v) for k, v in model.encoder.state_dict().items()}
    main = check_and_load(model, state | enc_state, source=str(path), unused=SVG_UNUSED | enc_unused,
                          file_keys=file_keys)
    if not enc or enc_source != str(path):  # the encoder's tensors came from another file (or are zeros)
        main.loaded = [k for k in main.loaded if not k.startswith("encoder.")]
    account.merge(main)
    if model.missing:
        why = "; ".join(model.missing.values())
        model.spec = model.spec.replace(extra={**model.spec.extra, "decode_only": why},
                                        unable={"encode": why, "features": why})
    model.spec = with_load_account(model.spec, account)
    return account


def resolve_weights(name: str, embedded: str | None, weights: str | None) -> tuple[str, str | None]:
    if weights == "random":
        return "random-init", None
    if weights is None and embedded:
        f = EMBEDDED_WEIGHTS / embedded
        if f.exists():
            return f"embedded:{embedded} ({file_sha256(f, 8)})", str(f)
        return "random-init (no embedded weights shipped)", None
    if weights is None:
        return "local file required (no public hub id): weights=<SVG .ckpt or .safetensors>", None
    return f"file:{weights}", str(weights)


def _spec(name: str, cfg: SVGConfig, desc: str, dim: int) -> EncoderSpec:
    c = dim + (cfg.residual_channels if cfg.residual else 0)
    return EncoderSpec(
        name=name, family="svg", latent_channels=c, downsample=cfg.patch, resolution=cfg.resolution,
        has_decoder=True, weights=desc, feature_dim=c, patch_size=cfg.patch,
        resolution_multiple=cfg.patch, fixed_resolution=True,
        notes=(f"frozen {cfg.dino} + residual ViT ({cfg.residual_channels} ch, align={cfg.align})"
               if cfg.residual else f"frozen {cfg.dino}, no residual branch (DINO-only decoder)"),
        # batch_dependent: with align="batch" (as published) a latent depends on its batch-mates, so a cache
        # of latents is valid only for the batch composition that produced it
        extra={"svg_config": json.loads(cfg.to_json()), "batch_dependent": cfg.residual and cfg.align == "batch"},
    )


def create_svg(name: str, weights: str | None = None, dino_weights: str | None = None,
               config: SVGConfig | None = None, **overrides) -> SVGAutoencoder:
    if name not in ENCODER_CONFIGS and config is None:
        raise KeyError(f"no SVG preset {name!r}; presets: {', '.join(ENCODER_CONFIGS)}")
    cfg, embedded = ENCODER_CONFIGS.get(name, (config, None))
    cfg = config or cfg
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    desc, path = resolve_weights(name, embedded, weights)
    if desc.startswith("local file required"):
        raise CheckpointError(f"encoder {name!r}: the SVG autoencoder has no public hub checkpoint; "
                              f"pass weights=<official Lightning .ckpt or svgbench .safetensors>")
    model = SVGAutoencoder(_spec(name, cfg, desc, 0), cfg)
    model.spec = _spec(name, cfg, desc, model.encoder.embed_dim)
    if path is not None:
        load_svg_weights(model, path, dino_weights)
    model.eval()
    return model


def _spec_for(name: str) -> EncoderSpec:
    cfg, embedded = ENCODER_CONFIGS[name]
    desc, _ = resolve_weights(name, embedded, None)
    preset = DINO_CONFIGS[cfg.dino]
    return _spec(name, cfg, desc, preset.kwargs.get("embed_dim", preset.dim))


create_svg.spec_for = _spec_for
