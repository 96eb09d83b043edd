"""Any diffusion checkpoint in a published layout, its architecture read from its tensors.

Layouts (all share DiT's names, see models.py):
- SVG-XL (shiml20/SVG `train_svg.py`): `{"ema": state_dict, ...}`, linear stem `ln1` (patch 1, 392 channels),
  qk LayerNorm, learn_sigma; latents normalised by `dinov3_sp_stats.pt` (`dinov3_sp_mean`/`dinov3_sp_std`,
  shape [1, 1, 392]).
- SiT-XL/2 and DiT-XL/2 (willisma/SiT, facebookresearch/DiT): a bare state dict or `{"ema": ...}`, conv stem
  `x_embedder.proj` (patch 2, 4 channels), learn_sigma, no qk norm; latents are SD-VAE posterior samples
  x 0.18215 with no further normalisation (svgbench's SD-VAE encoder already applies the scale).
- svgbench's exports: safetensors with the model's keys plus `stats.mean` / `stats.std`.

Nothing is guessed that the tensors do not fix: the head count comes from the named size whose depth and
width match; every other hyper-parameter is read from a shape, and the load is strict.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..checkpoints import CheckpointError, check_and_load, load_state_dict, log
from .models import SIZES, DiffusionTransformer, build_model
from .transport import LatentStats

SD_VAE_SCALE = 0.18215  # the latent scale of SD-VAE (and of the SiT/DiT checkpoints trained on it)


def _model_state(path: Path, siblings: list | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """-> (state dict, which entry it came from); `siblings` receives the file's other top-level entries."""
    if path.suffix == ".safetensors":
        return load_state_dict(path), "safetensors"
    try:
        return load_state_dict(path, key="ema", siblings=siblings), "ema"
    except CheckpointError as e:
        if "no 'ema' entry" not in str(e):
            raise
    try:
        return load_state_dict(path, key="model", siblings=siblings), "model"
    except CheckpointError as e:
        if "no 'model' entry" not in str(e):
            raise
    return load_state_dict(path, siblings=siblings), "bare"


def sniff_architecture(state: dict[str, torch.Tensor], num_classes: int | None = None) -> dict:
    """DiffusionTransformer kwargs (plus 'size') that a DiT/SiT/SVG state dict was saved from."""
    if "ln1.weight" in state:
        hidden, in_channels = state["ln1.weight"].shape
        patch = 1
    elif "x_embedder.proj.weight" in state:
        hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
    else:
        raise CheckpointError("not a DiT/SiT/SVG diffusion state dict: it has neither `ln1.weight` (patch-1 "
                              f"linear stem) nor `x_embedder.proj.weight` (conv stem); keys: {sorted(state)[:8]}")
    depth = len({m[1] for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    size = next((n for n, s in SIZES.items() if s["depth"] == depth and s["hidden_size"] == hidden), None)
    if size is None:
        raise CheckpointError(f"no known model size has depth {depth} and width {hidden}; known: {SIZES}")
    if "pos_embed" not in state:
        raise CheckpointError("the state dict has no pos_embed, so its latent size is unknown")
    tokens = state["pos_embed"].shape[1]
    grid = int(round(tokens ** 0.5))
    if grid * grid != tokens:
        raise CheckpointError(f"pos_embed has {tokens} tokens, not a square grid")
    out = state["final_layer.linear.weight"].shape[0]
    if out not in (patch * patch * in_channels, 2 * patch * patch * in_channels):
        raise CheckpointError(f"final_layer.linear.weight has {out} outputs; expected {patch * patch * in_channels} "
                              f"or twice that for patch {patch} and {in_channels} channels")
    rows = state["y_embedder.embedding_table.weight"].shape[0]
    classes = num_classes if num_classes is not None else rows - 1  # published class-conditional models drop labels
    if rows not in (classes, classes + 1):
        raise CheckpointError(f"y_embedder.embedding_table has {rows} rows; expected {classes} classes "
                              f"(+1 null row for classifier-free guidance)")
    return dict(size=size, in_channels=int(in_channels), input_size=grid * int(patch), patch_size=int(patch),
                learn_sigma=out == 2 * patch * patch * in_channels, qk_norm="blocks.0.attn.q_norm.weight" in state,
                num_classes=classes, class_dropout_prob=0.1 if rows == classes + 1 else 0.0)




KINDS = ("dit", "sit", "svg")


def resolve_kind(layout: str, arch: dict, kind: str | None, path) -> str | None:
    """The diffusion kind of a checkpoint: what it declares where its tensors cannot tell.

    DiT-XL/2 and SiT-XL/2 share every key and shape (DiT predicts noise and a variance on a 1000-step DDPM,
    SiT a velocity on t in [0, 1]), so a conv-stem layout needs kind=dit or kind=sit; the SVG layout (linear
    stem) is kind svg; svgbench's exports are its own flow models (None).
    """
    if kind is not None and kind not in KINDS:
        raise CheckpointError(f"diffusion checkpoint {path}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if layout == "sit-dit":
        if kind is None:
            raise CheckpointError(f"diffusion checkpoint {path} has the DiT/SiT layout, which cannot tell DiT (noise "
                                  "prediction, DDPM) from SiT (velocity, ODE): declare it with "
                                  "--diffusion ENCODER=PATH,kind=dit or ENCODER=PATH,kind=sit")
        if kind == "svg":
            raise CheckpointError(f"diffusion checkpoint {path} has the DiT/SiT conv-stem layout, not SVG's: "
                                  "declare kind=dit or kind=sit")
        if kind == "dit" and not arch["learn_sigma"]:
            raise CheckpointError(f"diffusion checkpoint {path} declared kind=dit has no learned variance "
                                  "(final_layer outputs C channels, DiT's 2C): it is not a DiT checkpoint")
        return kind
    if layout == "svg":
        if kind not in (None, "svg"):
            raise CheckpointError(f"diffusion checkpoint {path} has SVG's patch-1 linear-stem layout, not "
                                  f"{kind}'s: declare kind=svg or no kind")
        return "svg"
    if kind not in (None, "svg"):
        raise CheckpointError(f"diffusion checkpoint {path} is an svgbench flow export; kind={kind} does not apply")
    return None


def checkpoint_kind(path: str | os.PathLike, kind: str | None = None) -> str | None:
    """The kind of the checkpoint at `path` (see resolve_kind), checked before any work is done."""
    path = Path(path)
    state, _ = _model_state(path)
    embedded = "stats.mean" in state and "stats.std" in state
    arch = sniff_architecture(state)
    layout = "svgbench" if embedded else ("svg" if arch["patch_size"] == 1 else "sit-dit")
    return resolve_kind(layout, arch, kind, path)


def load_stats(path: str | os.PathLike) -> LatentStats:
    """LatentStats from svgbench's file or the official SVG `dinov3_sp_stats.pt`, keys found automatically."""
    return LatentStats.load(path)


def load_diffusion_checkpoint(path: str | os.PathLike, stats: str | os.PathLike | None = None, *,
                              latent_shape: tuple[int, int, int] | None = None,
                              num_classes: int | None = None,
                              kind: str | None = None) -> tuple[DiffusionTransformer, LatentStats, dict]:
    """Load an SVG-XL, SiT/DiT-XL/2 or svgbench diffusion checkpoint strictly; -> (model in eval mode, stats, info).

    latent_shape (C, H, W): the encoder's latent, checked against the checkpoint's (a mismatch raises
    CheckpointError naming both). stats: a statistics file (official `dinov3_sp_stats.pt`, or svgbench's); an
    svgbench export carries its own. SD-VAE-layout checkpoints (patch >= 2, 4 channels) need none: their
    latents are used as the encoder gives them (identity stats). Any other checkpoint without stats is refused,
    because sampling it un-normalised would score a wrong model.
    kind: "dit" / "sit" / "svg" (see resolve_kind; a DiT/SiT layout without one is refused); the model carries it
    as `diffusion_kind`, which the samplers check.
    info: {"layout", "entry", "architecture", "latent_shape", "latent_scale", "stats_source", "kind",
    "weights_account" (checkpoints.LoadAccount.provenance: what was loaded, and what the file holds that is not read)}.
    """
    path = Path(path)
    siblings: list[str] = []
    state, entry = _model_state(path, siblings)
    embedded = {k: state.pop(k) for k in ("stats.mean", "stats.std") if k in state}
    arch = sniff_architecture(state, num_classes)
    shape = (arch["in_channels"], arch["input_size"], arch["input_size"])
    if latent_shape is not None and tuple(latent_shape) != shape:
        raise CheckpointError(f"diffusion checkpoint {path} models latents {shape} (C, H, W) but the encoder "
                              f"produces {tuple(latent_shape)}")
    model = build_model(arch["size"], **{k: v for k, v in arch.items() if k != "size"})
    account = check_and_load(model, state, source=str(path))
    # the entries beside the one sampled (a training checkpoint's raw weights and optimizer state): not read
    account.unused |= {k: f"beside the {entry!r} weights that are sampled: training state, not read" for k in siblings}
    if account.unused:
        log.debug("diffusion checkpoint %s: entries not read: %s", path, ", ".join(sorted(account.unused)))
    layout = "svg" if arch["patch_size"] == 1 else "sit-dit"
    if stats is not None:
        st, src = LatentStats.load(stats), str(stats)
    elif len(embedded) == 2:
        st, src = LatentStats(embedded["stats.mean"], embedded["stats.std"]), f"{path} (stats.mean/std)"
        layout = "svgbench"
    elif layout == "sit-dit" and arch["in_channels"] == 4:
        st, src = LatentStats(torch.zeros(4), torch.ones(4)), "identity (SD-VAE latents x 0.18215, as SiT/DiT)"
    else:
        raise CheckpointError(f"diffusion checkpoint {path} needs its latent statistics: pass stats=<file> "
                              f"(e.g. the official dinov3_sp_stats.pt)")
    if st.channels != arch["in_channels"]:
        raise CheckpointError(f"latent stats {src} have {st.channels} channels, the model {arch['in_channels']}")
    kind = resolve_kind(layout, arch, kind, path)  # declared where the tensors cannot tell DiT from SiT
    model.diffusion_kind = kind  # the samplers refuse a model of another process
    info = dict(layout=layout, entry=entry, architecture=arch, latent_shape=list(shape), stats_source=src, kind=kind,
                latent_scale=SD_VAE_SCALE if layout == "sit-dit" and arch["in_channels"] == 4 else None,
                weights_account=account.provenance())
    return model.eval(), st, info
