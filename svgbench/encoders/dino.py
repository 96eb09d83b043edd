"""Raw DINO encoders through timm (DINOv2 ViT-S/14 and ViT-B/14, DINOv3 ViT-S/16+) and tiny-ssl.

Weights come from timm's hub tag (internet), a local file in timm's layout, or the official Meta
`.pth` (DINOv2 / DINOv3 key names; timm's own checkpoint filter converts them), or svgbench's
embedded safetensors for tiny-ssl. The latent is the grid of final-norm patch tokens
(DINO's `x_norm_patchtokens`), D x H/p x W/p. Raw DINO has no pixel decoder.

Resolution rule for DINOv2 (patch 14) in a matrix whose resolution is not a multiple of 14 (256 px for
ImageNet): the image is resized, not cropped, to the largest multiple of 14 at or below its side
(256 -> 252, an 18 x 18 token grid; spec.resize_to_multiple). Resizing keeps every token over the same
part of the image as the pixels (and segmentation labels) under it, which a centre crop would not; the
position embeddings are interpolated by timm (dynamic_img_size), as for any non-native size.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoints import CheckpointError, LoadAccount, check_and_load, file_sha256, load_state_dict
from .base import EncoderSpec, LatentEncoder, fit_to_network, to_imagenet_normalized, with_load_account

EMBEDDED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class DinoPreset:
    arch: str
    tag: str | None
    resolution: int
    patch: int
    dim: int
    kwargs: dict = field(default_factory=dict)
    embedded: str | None = None  # file name under svgbench/weights for the embedded default
    resize_to_multiple: bool = False  # resize sides that are not a multiple of `patch` (see the module docstring)


ENCODER_CONFIGS: dict[str, DinoPreset] = {
    "dinov2-vits14": DinoPreset("vit_small_patch14_dinov2", "lvd142m", 224, 14, 384, resize_to_multiple=True),
    "dinov2-vitb14": DinoPreset("vit_base_patch14_dinov2", "lvd142m", 224, 14, 768, resize_to_multiple=True),
    "dinov3-vits16plus": DinoPreset("vit_small_plus_patch16_dinov3", "lvd1689m", 256, 16, 384),
    # The embedded default's frozen self-supervised encoder: a small convnet whose stride-8 feature map
    # is the grid of patch tokens (a ViT of this size learns the shapes far too slowly on a CPU).
    "tiny-ssl": DinoPreset("convnet", None, 64, 8, 128,
                           dict(channels=(32, 32, 64, 64, 128, 128), strides=(2, 1, 2, 1, 2, 1)),
                           embedded="tiny-ssl.safetensors"),
}


def build_timm_dino(preset: DinoPreset, resolution: int, **overrides) -> torch.nn.Module:
    import timm

    kwargs = dict(preset.kwargs)
    kwargs.update(overrides)
    if preset.arch == "convnet":
        return ConvTokens(**kwargs)
    return timm.create_model(preset.arch, pretrained=False, num_classes=0, img_size=resolution,
                             dynamic_img_size=True, **kwargs)


class ConvTokens(torch.nn.Module):
    """A BN-ReLU convnet whose final feature map is read as patch tokens: B x (H/s * W/s) x C, no prefix tokens.

    It exposes the two things DinoEncoder uses of a timm ViT: `forward_features` and `num_prefix_tokens`.
    """

    num_prefix_tokens = 0

    def __init__(self, channels=(32, 32, 64, 64, 128, 128), strides=(2, 1, 2, 1, 2, 1)):
        super().__init__()
        layers, c_in = [], 3
        for c, s in zip(channels, strides):
            layers += [torch.nn.Conv2d(c_in, c, 3, s, 1, bias=False), torch.nn.BatchNorm2d(c), torch.nn.ReLU()]
            c_in = c
        self.net = torch.nn.Sequential(*layers)
        self.embed_dim = channels[-1]

    def forward_features(self, x):
        return self.net(x).flatten(2).transpose(1, 2)


def has_qkv_bias_params(model: torch.nn.Module) -> bool:
    """Whether a timm DINOv3 (Eva) model holds q/v biases (built with qkv_bias=True, timm's `_qkvb` variants)."""
    return any(k.endswith("attn.q_bias") for k, _ in model.named_parameters())


def _meta_qkv_biases(state: dict) -> dict[str, torch.Tensor]:
    """Meta DINOv3 `blocks.N.attn.qkv.bias` -> the bias the layer applies: bias * bias_mask when the mask is
    stored (DINOv3's LinearKMaskedBias zeroes the k third through it), the raw bias otherwise."""
    out = {}
    for k, v in state.items():
        if k.endswith("attn.qkv.bias"):
            mask = state.get(k + "_mask")
            out[k] = v * mask.to(v.dtype) if mask is not None else v
    return out


def needs_qkv_bias(state: dict) -> bool:
    """True when a DINOv3 state dict carries q/v biases a model must hold: timm-layout `q_bias`/`v_bias`
    keys, or Meta `qkv.bias` tensors whose (masked) q or v part is non-zero."""
    if any(k.endswith(("attn.q_bias", "attn.v_bias")) for k in state):
        return True
    return any(bool(torch.count_nonzero(b.chunk(3)[0]) or torch.count_nonzero(b.chunk(3)[2]))
               for b in _meta_qkv_biases(state).values())


# File tensors that the official DINO forward never reads: skipped, and listed in the load's account.
DINO_UNUSED = {"mask_token": "DINO's mask token, read only by masked-image pretraining"}
# A Meta DINOv3 file's RoPE periods -> the buffer timm computes from its own base (compared, not loaded).
_META_ROPE = {"rope_embed.periods": "rope.periods"}


@dataclass
class ConvertedState:
    """A DINO file in the model's names. `state`: converted tensors, plus the file's tensors that the conversion
    did not use, under their own names (check_and_load then names them unused or refuses them); `file_keys`:
    converted key -> the file's key; `folded`: file keys applied to another tensor (DINOv3's `bias_mask`);
    `unused`: file key -> why the tensor changes nothing (zero q/v biases for a model without them)."""

    state: dict
    file_keys: dict = field(default_factory=dict)
    folded: list = field(default_factory=list)
    unused: dict = field(default_factory=dict)

    def prefixed(self, prefix: str) -> "ConvertedState":
        return ConvertedState({prefix + k: v for k, v in self.state.items()},
                              {prefix + k: prefix + v for k, v in self.file_keys.items()},
                              [prefix + k for k in self.folded], {prefix + k: v for k, v in self.unused.items()})


def convert_dino_state(state: dict[str, torch.Tensor], model: torch.nn.Module, source: str) -> ConvertedState:
    """A timm-layout or official Meta-layout DINO state dict -> `model`'s timm names, every file tensor accounted.

    timm's DINOv3 filter drops `qkv.bias` without a word when the model has no q/v bias (and always drops
    the k third). Here the Meta biases are split first: q and v go to `q_bias`/`v_bias` when the model has
    them; otherwise they must be zero (then the addition is a no-op and dropping them changes nothing), or
    the file is refused. The k third is dropped only where `bias_mask` zeroes it, as DINOv3 does. timm's filter
    also drops the RoPE periods (timm computes them from its own base); they are kept here, to be compared with
    the model's. Whatever else the filter leaves out is handed back under the file's name (see ConvertedState).
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = ConvertedState({})
    biases = _meta_qkv_biases(state)
    if biases and not any(k.endswith("attn.qkv.bias") for k, _ in model.named_parameters()):
        holds = has_qkv_bias_params(model)
        for k, b in sorted(biases.items()):
            q, kb, v = b.chunk(3)
            if torch.count_nonzero(kb):
                raise CheckpointError(f"checkpoint {source}: {k} has a non-zero k part and no bias_mask; DINOv3 "
                                      f"keeps the k bias at zero, so this file is not a DINOv3 checkpoint")
            if holds:
                qk, vk = k.replace("qkv.bias", "q_bias"), k.replace("qkv.bias", "v_bias")
                out.state[qk], out.state[vk] = q, v
                out.file_keys[qk] = out.file_keys[vk] = k
            elif torch.count_nonzero(q) or torch.count_nonzero(v):
                raise CheckpointError(
                    f"checkpoint {source}: {k} holds non-zero q/v biases but the model "
                    f"({type(model).__name__}) has none; build it with qkv_bias=True (timm's _qkvb variant)")
            else:  # kept under the file's names, for check_and_load to list as unused
                for key in (k, k + "_mask"):
                    if key in state:
                        out.state[key] = state[key]
                        out.unused[key] = "zero q/v biases: the model without q/v biases computes the same"
                continue
            if k + "_mask" in state:
                out.folded.append(k + "_mask")
        state = {k: v for k, v in state.items() if k not in biases and k[:-len("_mask")] not in biases}
    for meta_key, timm_key in _META_ROPE.items():
        if meta_key in state:
            out.state[timm_key] = state.pop(meta_key)
            out.file_keys[timm_key] = meta_key
    # timm's own per-family filter converts Meta key names (storage_tokens, ls1.gamma, mlp.w1/w2/w3, ...)
    converted = state
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            converted = filter_fn(dict(state), model)
        except Exception as e:
            raise CheckpointError(f"checkpoint {source}: could not convert to timm's layout: {e}") from e
    # which file tensor each converted one came from: the same object (a rename), else the same name (resampled)
    by_id = {id(v): k for k, v in state.items()}
    for k, v in converted.items():
        out.state[k] = v
        came_from = by_id.get(id(v)) or (k if k in state else None)
        if came_from is not None:
            out.file_keys[k] = came_from
    used = set(out.file_keys.values())
    out.state |= {k: v for k, v in state.items() if k not in used and k not in out.state}
    return out


def load_dino_weights(model: torch.nn.Module, path: str | os.PathLike, state: dict | None = None) -> LoadAccount:
    """Load a timm-layout or official Meta-layout DINO file into a timm model, strictly (see convert_dino_state)."""
    state = load_state_dict(path) if state is None else state
    conv = convert_dino_state(state, model, str(path))
    account = check_and_load(model, conv.state, source=str(path), unused=DINO_UNUSED | conv.unused,
                             file_keys=conv.file_keys)
    account.loaded += conv.folded
    return account


def build_for_state(preset: DinoPreset, resolution: int, state: dict | None, **overrides) -> torch.nn.Module:
    """build_timm_dino, with q/v biases when `state` (a DINOv3 state dict about to be loaded) needs them."""
    if state is not None and preset.arch.endswith("_dinov3") and needs_qkv_bias(state):
        overrides = {**overrides, "qkv_bias": True}
    return build_timm_dino(preset, resolution, **overrides)


class DinoEncoder(LatentEncoder):
    """Frozen DINO patch tokens as a latent grid; pooled feature = mean patch token."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module):
        super().__init__(spec)
        self.model = model.eval().requires_grad_(False)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.forward_features(to_imagenet_normalized(fit_to_network(images, self.spec)))
        return x[:, self.model.num_prefix_tokens:]

    def _encode(self, images):
        t = self.tokens(images)
        h, w = images.shape[2] // self.spec.downsample, images.shape[3] // self.spec.downsample
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)

    def _features(self, images):
        t = self.tokens(images)
        return {"patch": t, "pooled": t.mean(1)}


def _spec(name: str, preset: DinoPreset, resolution: int, weights: str, dim: int) -> EncoderSpec:
    return EncoderSpec(
        name=name, family="dino", latent_channels=dim, downsample=preset.patch, resolution=resolution,
        has_decoder=False, weights=weights, feature_dim=dim, patch_size=preset.patch,
        resize_to_multiple=preset.resize_to_multiple,
        notes="raw DINO patch tokens; no pixel decoder (see tiny-svg-dino-only for a trained one)",
        extra={"timm_arch": preset.arch},
    )


def resolve_weights(name: str, preset: DinoPreset, weights: str | None) -> tuple[str, str | None]:
    """-> (description, local file or None). `weights`: None (default source), 'random', 'hf-hub:..', a path."""
    if weights == "random":
        return "random-init", None
    if weights is None and preset.embedded:
        f = EMBEDDED_WEIGHTS / preset.embedded
        if f.exists():
            return f"embedded:{preset.embedded} ({file_sha256(f, 8)})", str(f)
        return "random-init (no embedded weights shipped)", None
    if weights is None:
        return f"hf-hub:timm/{preset.arch}.{preset.tag}", None
    if weights.startswith("hf-hub:"):
        return weights, None
    return f"file:{weights}", str(weights)


def create_dino(name: str, weights: str | None = None, resolution: int | None = None, **overrides) -> DinoEncoder:
    if name not in ENCODER_CONFIGS:
        raise KeyError(f"no DINO preset {name!r}; presets: {', '.join(ENCODER_CONFIGS)}")
    preset = ENCODER_CONFIGS[name]
    res = resolution or preset.resolution
    desc, path = resolve_weights(name, preset, weights)
    state = load_state_dict(path) if path is not None else None
    model = build_for_state(preset, res // preset.patch * preset.patch if preset.resize_to_multiple else res,
                            state, **overrides)
    account = None
    if path is not None:
        account = load_dino_weights(model, path, state)
    elif desc.startswith("hf-hub:"):
        account = _load_from_hub(model, preset, desc)
    spec = _spec(name, preset, res, desc, model.embed_dim)
    spec = with_load_account(spec, account)
    if res % preset.patch:
        spec.check_resolution(res, res)
    return DinoEncoder(spec, model)


def _load_from_hub(model, preset: DinoPreset, desc: str) -> LoadAccount:
    """Fetch the hub's weights file and load it as a local one: through convert_dino_state and check_and_load,
    so that a hub file's tensors are accounted for as a local file's are (timm's own loader drops some unsaid)."""
    from huggingface_hub import hf_hub_download

    hub_id = desc.removeprefix("hf-hub:")
    errors = []
    for filename in ("model.safetensors", "pytorch_model.bin"):  # timm's hub repositories hold one of the two
        try:
            path = hf_hub_download(hub_id, filename)
        except Exception as e:
            errors.append(f"{filename}: {type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e) else ''}")
            continue
        return load_dino_weights(model, path)
    raise CheckpointError(f"could not fetch {hub_id} from the Hugging Face hub ({'; '.join(errors)}). "
                          f"Offline? Pass weights=<local file> (timm or official Meta .pth layout).", input=hub_id)


def _spec_for(name: str) -> EncoderSpec:
    preset = ENCODER_CONFIGS[name]
    desc, _ = resolve_weights(name, preset, None)
    dim = preset.kwargs.get("embed_dim", preset.dim)
    return _spec(name, preset, preset.resolution, desc, dim)


create_dino.spec_for = _spec_for
