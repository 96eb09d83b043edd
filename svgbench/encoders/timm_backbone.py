"""Any timm backbone as a features-only encoder: `timm:MODEL[@WEIGHTS]`.

MODEL is a timm model name, optionally with its pretrained tag (`vit_small_patch14_dinov2.lvd142m`). WEIGHTS:
omitted, timm's pretrained weights for that tag (the hub, or its local cache); a local file (.safetensors, or a
torch file read with weights_only), loaded strictly after timm's own checkpoint filter (which converts the
official layouts timm knows) with only the classifier head left out; or `random` (the architecture, random
weights from the run's seed).

Patch tokens: `forward_features` with the prefix (class, register) tokens dropped, on the grid of the network
input (ViTs) or the final feature map (convnets). Pooled vector: `forward_head(..., pre_logits=True)`, i.e. the
pooling the model itself defines (class token, mean of tokens, attention pool, global average). Input
normalisation: the mean/std of the model's pretrained config. Sides that are not a multiple of the stride
(DINOv2's patch 14 at 256 px) are resized to the largest multiple below them, as for the DINO family.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ..checkpoints import CheckpointError, check_and_load, file_sha256, load_state_dict
from .base import EncoderSpec, LatentEncoder, fit_to_network

PREFIX = "timm:"
DEFAULT_RESOLUTION = 256  # the latent shape `svgbench list` shows; a run uses its own resolution
CONVENTION = ("patch tokens of forward_features, prefix tokens dropped, on their grid; pooled: "
              "forward_head(pre_logits=True); input mean/std of the pretrained config; no decoder")


def parse_name(name: str) -> tuple[str, str | None]:
    """"timm:MODEL[@WEIGHTS]" -> (MODEL, WEIGHTS or None)."""
    body = name[len(PREFIX):] if name.startswith(PREFIX) else ""
    model, _, weights = body.partition("@")
    if not model:
        raise CheckpointError(f"encoder {name!r}: expected timm:MODEL[@WEIGHTS], e.g. "
                              f"timm:vit_small_patch14_dinov2.lvd142m or timm:resnet50@/path/model.safetensors",
                              input=name)
    return model, (weights or None)


def _create(name: str, model_name: str, pretrained: bool):
    import timm

    arch = model_name.partition(".")[0]
    if not timm.is_model(arch):
        raise CheckpointError(f"encoder {name!r}: timm {timm.__version__} has no model {arch!r} "
                              f"(timm.list_models('*{arch.split('_')[0]}*') lists the near ones)", input=name)
    kwargs = dict(pretrained=pretrained, num_classes=0)
    try:  # ViTs: position embeddings interpolated to any grid, as for the DINO family
        return timm.create_model(model_name, dynamic_img_size=True, **kwargs), True
    except TypeError:  # convnets and models without the option take their own sizes
        return timm.create_model(model_name, **kwargs), False


def build(name: str, *, meta: bool = False):
    """-> (model, description of the weights, dynamic): the model with its weights loaded (or on the meta device)."""
    model_name, weights = parse_name(name)
    if meta:
        with torch.device("meta"):
            model, dynamic = _create(name, model_name, False)
        return model, weights or f"hf-hub:timm/{model_name}", dynamic
    if weights == "random":
        model, dynamic = _create(name, model_name, False)
        return model, "random-init", dynamic
    if weights is None:
        try:
            model, dynamic = _create(name, model_name, True)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"encoder {name!r}: timm could not load the pretrained weights of {model_name} "
                f"({type(e).__name__}: {str(e)[:160]}{'; HF_HUB_OFFLINE=1' if os.environ.get('HF_HUB_OFFLINE') else ''}); "
                f"download them where the hub is reachable and pass timm:{model_name}@/path/to/model.safetensors",
                input=name, fix=f"pass timm:{model_name}@/path/to/model.safetensors") from e
        return model, f"hf-hub:timm/{model_name}", dynamic
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"encoder {name!r}: weights file {path} does not exist; pass "
                              f"timm:{model_name}@/path/to/model.safetensors (or @random)", input=name)
    model, dynamic = _create(name, model_name, False)
    load_weights(name, model, path)
    return model, f"file:{path} ({file_sha256(path, 8)})", dynamic


def load_weights(name: str, model: torch.nn.Module, path: Path) -> None:
    """Strictly, after timm's checkpoint filter; the classifier head (absent at num_classes=0) is the only key left out."""
    state = {k.removeprefix("module."): v for k, v in load_state_dict(path).items()}
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as e:
            raise CheckpointError(f"encoder {name!r}: {path} could not be converted to timm's layout: {e}",
                                  input=name) from e
    head = model.pretrained_cfg.get("classifier") or "head"
    heads = tuple(f"{h}." for h in (head if isinstance(head, (list, tuple)) else [head]))
    check_and_load(model, state, source=f"{path} (for {name})", ignore_prefixes=heads)


def _stride(model) -> int:
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.info[-1]
        return int(last["reduction"])
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is not None:
        return int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    raise CheckpointError(f"timm model {type(model).__name__} reports neither feature_info nor a patch size")


def make_spec(name: str, model, desc: str, dynamic: bool, resolution: int | None,
              model_name: str | None = None) -> EncoderSpec:
    cfg = dict(model.pretrained_cfg)
    native = int(cfg.get("input_size", (3, 224, 224))[-1])
    stride = _stride(model)
    fixed = not dynamic and hasattr(model, "patch_embed")  # a ViT built for one size only
    res = native if fixed else (resolution or DEFAULT_RESOLUTION)
    dim = int(model.num_features)
    return EncoderSpec(
        name=name, family="timm", latent_channels=dim, downsample=stride, resolution=res, has_decoder=False,
        weights=desc, feature_dim=dim, patch_size=stride, fixed_resolution=fixed, resize_to_multiple=not fixed,
        notes="timm forward_features tokens (prefix tokens dropped); pooled: forward_head(pre_logits=True)",
        extra={"timm_model": model_name or parse_name(name)[0], "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
               "std": list(cfg.get("std", (0.229, 0.224, 0.225))), "native_resolution": native},
    )


class TimmBackbone(LatentEncoder):
    """A frozen timm backbone: its patch tokens as the latent grid and the features the tasks probe."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module):
        super().__init__(spec)
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(spec.extra["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.extra["std"], dtype=torch.float32).view(1, 3, 1, 1))

    def _forward(self, images):
        x = fit_to_network(images, self.spec)
        x = ((x + 1) / 2 - self.mean.to(x)) / self.std.to(x)
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        h, w = x.shape[2] // self.spec.downsample, x.shape[3] // self.spec.downsample
        if feats.ndim == 4:  # convnet: B x C x h x w feature map
            return feats.flatten(2).transpose(1, 2), pooled, feats.shape[2:]
        tokens = feats[:, getattr(self.model, "num_prefix_tokens", 0):]
        if tokens.shape[1] != h * w:
            raise CheckpointError(f"encoder {self.spec.name!r}: {tokens.shape[1]} patch tokens for a {h} x {w} grid "
                                  f"(network input {tuple(x.shape[2:])}, stride {self.spec.downsample})")
        return tokens, pooled, (h, w)

    def _encode(self, images):
        tokens, _, (h, w) = self._forward(images)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)

    def _features(self, images):
        tokens, pooled, _ = self._forward(images)
        return {"patch": tokens, "pooled": pooled}


def create_timm(name: str, weights: str | None = None, resolution: int | None = None, **overrides) -> TimmBackbone:
    """`timm:MODEL[@WEIGHTS]` (the weights live in the name; `weights=` is refused to keep one source of truth)."""
    if overrides:
        raise TypeError(f"encoder {name!r} takes resolution=; got {', '.join(overrides)}")
    if weights is not None:
        raise CheckpointError(f"encoder {name!r}: give the weights in the name (timm:MODEL@{weights}), "
                              f"not as weights=", input=name)
    model, desc, dynamic = build(name)
    return TimmBackbone(make_spec(name, model, desc, dynamic, resolution), model)


def _spec_for(name: str) -> EncoderSpec:
    model, desc, dynamic = build(name, meta=True)
    return make_spec(name, model, desc, dynamic, None)


create_timm.spec_for = _spec_for
