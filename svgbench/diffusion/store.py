"""svgbench's shipped diffusion models: the model config, building a model, finding, loading and exporting one.

A shipped model is one safetensors file under svgbench/weights/diffusion/<encoder>.safetensors: EMA weights
(fp16), the latent statistics (`stats.mean`, `stats.std`, fp32) and metadata naming the encoder weights it was
trained on (their hash), its config, latent shape, training step and FID curve. It is used only while that
hash matches the encoder's weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

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

    shipped = path or SHIPPED / f"{encoder.spec.name}.safetensors"
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

    dest = dest or SHIPPED / f"{encoder.spec.name}.safetensors"
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state["stats.mean"], state["stats.std"] = stats.mean, stats.std
    save_safetensors(state, dest, metadata={
        "format": "svgbench.diffusion", "encoder": encoder.spec.name, "encoder_weights_hash": encoder.weights_hash(),
        "latent_shape": json.dumps(list(latent_shape)), "diffusion_config": json.dumps(asdict(dcfg)),
        "curve": json.dumps(curve), "step": str(step)})
    return dest
