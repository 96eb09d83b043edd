"""svgbench's shipped diffusion models: the model config, building a model, finding, loading and exporting one.

A shipped model is one safetensors file under svgbench/weights/diffusion/<encoder>.safetensors: EMA weights
(fp16), the latent statistics (`stats.mean`, `stats.std`, fp32) and metadata naming the encoder weights it was
trained on (their hash), its config, latent shape, training step and FID curve. It is used only while that
hash matches the encoder's weights. A task config may instead name a checkpoint file (`checkpoint_model`:
official SVG-XL, SiT/DiT-XL/2 or an svgbench export); `recorded_provenance` is what a record says of either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "diffusion"


@dataclass
class DiffusionConfig:
    size: str = "tiny"
    patch_size: int = 1
    qk_norm: bool = True
    class_dropout: float = 0.1
    steps: int = 4000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema: float = 0.999
    shift: float = 0.4  # SVG's training time shift (t = 0 is noise)
    seed: int = 0
    eval_every: int = 500
    ckpt_every: int = 100  # resumable checkpoint (run_dir/last.pt, replaced atomically: only the last is kept)
    ckpt_minutes: float | None = None  # also checkpoint when this many minutes passed since the last one
    out: str = "runs/diffusion"
    threads: int | None = None


MAX_TOKEN_GRID = 16  # SiT/DiT's token grid at 256 px: SD-VAE's 32 x 32 latent at patch 2, SVG's 16 x 16 at patch 1


def patch_for_grid(side: int) -> int:
    """The diffusion model's patch size for a latent `side` cells wide: the smallest divisor of `side` that leaves at
    most MAX_TOKEN_GRID tokens a side, so that any latent costs about the tokens of SiT-XL/2 on SD-VAE."""
    return next(p for p in range(1, side + 1) if side % p == 0 and side // p <= MAX_TOKEN_GRID)


def build_diffusion_model(cfg: DiffusionConfig, latent_shape: tuple[int, int, int], num_classes: int):
    from .models import build_model

    c, h, w = latent_shape
    if h != w:
        raise ValueError(f"diffusion needs square latent grids, got {h}x{w}")
    return build_model(cfg.size, input_size=h, patch_size=cfg.patch_size, in_channels=c, num_classes=num_classes,
                       class_dropout_prob=cfg.class_dropout, qk_norm=cfg.qk_norm)


class NoDiffusionModel(LookupError):
    """No shipped diffusion model for this encoder, and training was not asked for."""


def load_shipped(encoder, data_name: str, num_classes: int, device: str, path: Path | None = None):
    """The shipped diffusion model of `encoder` -> (EMA model, LatentStats, curve rows, provenance), or None when
    there is none for this encoder's weights (or the data is not the one they were trained on: its DatasetSpec says
    `shipped_models`)."""
    from ..checkpoints import load_state_dict, read_safetensors_metadata
    from .transport import LatentStats

    from ..data import find_dataset

    shipped = path or shipped_path(encoder)
    spec = find_dataset(data_name)
    if not shipped.exists() or spec is None or not spec.shipped_models:
        return None
    meta = read_safetensors_metadata(shipped)
    if meta.get("encoder_weights_hash") != encoder.weights_hash():
        return None
    dcfg = DiffusionConfig(**json.loads(meta["diffusion_config"]))
    model = build_diffusion_model(dcfg, tuple(json.loads(meta["latent_shape"])), num_classes)
    state = load_state_dict(shipped)
    stats = LatentStats(state.pop("stats.mean"), state.pop("stats.std"))
    model.load_state_dict(state)
    model.eval().to(device)
    curve = json.loads(meta.get("curve", "[]"))
    return model, stats.to(device), curve, {"diffusion_weights": f"shipped:{shipped.name}",
                                            "train_steps": int(meta["step"])}


def export_diffusion(model, stats, encoder, latent_shape, dcfg, curve: list[dict], step: int,
                     dest: Path | None = None) -> Path:
    """Ship a trained diffusion model for `encoder` (EMA weights + latent stats + its FID curve).

    The weights are stored in fp16 (loaded back into the fp32 model); the latent statistics stay fp32.
    """
    from ..checkpoints import save_safetensors

    dest = dest or shipped_path(encoder)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state["stats.mean"], state["stats.std"] = stats.mean, stats.std
    save_safetensors(state, dest, metadata={
        "format": "svgbench.diffusion", "encoder": encoder.spec.name, "encoder_weights_hash": encoder.weights_hash(),
        "latent_shape": json.dumps(list(latent_shape)), "diffusion_config": json.dumps(asdict(dcfg)),
        "curve": json.dumps(curve), "step": str(step)})
    return dest


def shipped_path(encoder) -> Path:
    """Where svgbench ships the diffusion model of `encoder` (whether or not it exists)."""
    return SHIPPED / f"{encoder.spec.name}.safetensors"


def shipped_model_files(encoder) -> dict:
    """The shipped diffusion model file of `encoder` (whether or not it exists): part of a generation or
    sampling cell's key, so a retrained and re-exported model recomputes the cells that scored the old one."""
    return {"shipped_diffusion": str(shipped_path(encoder))}


def checkpoint_model(encoder, dataset, cfg, device: str):
    """The model of cfg.diffusion for this encoder -> (model, stats, [], provenance), or None when the config
    names no checkpoint or names one for another encoder (`diffusion_encoder`). The load is strict: a latent
    shape that differs from the encoder's raises CheckpointError naming both."""
    from .official import load_diffusion_checkpoint

    if not cfg.diffusion or (cfg.diffusion_encoder and cfg.diffusion_encoder != encoder.spec.name):
        return None
    res = dataset.data_config.resolution
    model, stats, info = load_diffusion_checkpoint(cfg.diffusion, cfg.diffusion_stats,
                                                   latent_shape=encoder.spec.latent_shape(res),
                                                   kind=getattr(cfg, "diffusion_kind", None))
    return model.to(device).eval(), stats.to(device), [], {
        "diffusion_weights": f"checkpoint:{Path(cfg.diffusion).name}", "diffusion_layout": info["layout"],
        "diffusion_size": info["architecture"]["size"], "diffusion_stats_source": str(info["stats_source"]),
        "diffusion_kind": info.get("kind"), "diffusion_weights_account": info.get("weights_account")}


def recorded_provenance(prov: dict) -> dict:
    """What of diffusion_for's provenance goes into a result record (not the run's paths or config)."""
    return {k: prov[k] for k in ("diffusion_weights", "train_steps", "diffusion_layout", "diffusion_size",
                                 "diffusion_stats_source", "diffusion_kind", "diffusion_weights_account") if k in prov}
