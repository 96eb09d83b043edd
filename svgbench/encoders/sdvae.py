"""SD-VAE through diffusers' AutoencoderKL: ft-ema, ft-mse, and the embedded tiny-vae and tiny-vae-wide.

Latent = posterior mean x scaling factor (0.18215 for SD-VAE), 4 x H/8 x W/8. The mean, not a
sample, so that a latent is a deterministic function of the image (caches and reconstruction
metrics depend on it). Weights: a diffusers folder (config.json + safetensors) from a hub id or a
local directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoints import CheckpointError, check_and_load, file_sha256, load_state_dict
from .base import EncoderSpec, LatentEncoder, with_load_account

EMBEDDED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class VAEPreset:
    hub_id: str | None
    resolution: int
    config: dict = field(default_factory=dict)  # AutoencoderKL config when built from scratch
    embedded: str | None = None


SD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=256, scaling_factor=0.18215,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, act_fn="silu",
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)

_TINY_VAE_CONFIG = dict(SD_VAE_CONFIG, block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=4,
                        sample_size=64, scaling_factor=1.0)

ENCODER_CONFIGS: dict[str, VAEPreset] = {
    "sd-vae-ft-ema": VAEPreset("stabilityai/sd-vae-ft-ema", 256, SD_VAE_CONFIG),
    "sd-vae-ft-mse": VAEPreset("stabilityai/sd-vae-ft-mse", 256, SD_VAE_CONFIG),
    # The SD-VAE design (downsampling 8, 4 channels) at the embedded default's size.
    "tiny-vae": VAEPreset(None, 64, _TINY_VAE_CONFIG, embedded="tiny-vae"),
    # The matched-capacity baseline: tiny-vae with as many latent channels as tiny-svg (128 DINO + 8 residual),
    # so that "a semantic latent" and "a wide latent" can be told apart.
    "tiny-vae-wide": VAEPreset(None, 64, dict(_TINY_VAE_CONFIG, latent_channels=136), embedded="tiny-vae-wide"),
}


class SDVAEEncoder(LatentEncoder):
    def __init__(self, spec: EncoderSpec, vae):
        super().__init__(spec)
        self.vae = vae.eval().requires_grad_(False)
        self.scaling_factor = float(vae.config.scaling_factor)

    def _encode(self, images):
        return self.vae.encode(images).latent_dist.mean * self.scaling_factor

    def _decode(self, latent):
        return self.vae.decode(latent / self.scaling_factor).sample.clamp(-1, 1)


def load_vae_folder(path: str | Path):
    """A diffusers AutoencoderKL folder: config.json + diffusion_pytorch_model.safetensors (or .bin)
    -> (model, weights file, checkpoints.LoadAccount: every tensor of the file loaded, or the load refused)."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"VAE weights {path} must be a diffusers folder (config.json + safetensors)")
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"VAE folder {path} has no config.json")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"VAE folder {path}: config.json is not valid JSON ({e})") from e
    files = [path / "diffusion_pytorch_model.safetensors", path / "diffusion_pytorch_model.bin"]
    weights = next((f for f in files if f.exists()), None)
    if weights is None:
        raise CheckpointError(f"VAE folder {path} has no diffusion_pytorch_model.safetensors (or .bin)")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        vae = AutoencoderKL.from_config(config)
    except Exception as e:
        raise CheckpointError(f"VAE folder {path}: config.json does not describe an AutoencoderKL: {e}") from e
    account = check_and_load(vae, load_state_dict(weights), source=str(weights))
    return vae, weights, account


def _from_hub(hub_id: str):
    """Fetch the hub folder's config and weights, then load them as a local folder (load_vae_folder), so that a hub
    file's tensors are accounted for as a local one's are; -> (model, weights file, LoadAccount)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(hub_id, allow_patterns=["config.json", "diffusion_pytorch_model.safetensors"])
    except Exception as e:
        raise CheckpointError(
            f"could not fetch {hub_id} from the Hugging Face hub ({type(e).__name__}: {str(e)[:200]}). "
            f"Offline? Pass weights=<local diffusers folder>.", input=hub_id
        ) from e
    return load_vae_folder(folder)


def resolve_weights(preset: VAEPreset, weights: str | None) -> tuple[str, str | None]:
    if weights == "random":
        return "random-init", None
    if weights is None and preset.embedded:
        d = EMBEDDED_WEIGHTS / preset.embedded
        if (d / "config.json").exists():
            return f"embedded:{preset.embedded}", str(d)
        return "random-init (no embedded weights shipped)", None
    if weights is None:
        return f"hf-hub:{preset.hub_id}", None
    if weights.startswith("hf-hub:"):
        return weights, None
    if Path(weights).exists():
        return f"dir:{weights}", str(weights)
    if "/" in weights and not weights.startswith((".", "/")) and weights.count("/") == 1:
        return f"hf-hub:{weights}", None
    raise CheckpointError(f"VAE weights {weights!r}: no such local folder, and not a hub id")


def create_sdvae(name: str, weights: str | None = None, resolution: int | None = None, **overrides):
    from diffusers import AutoencoderKL

    if name not in ENCODER_CONFIGS:
        raise KeyError(f"no SD-VAE preset {name!r}; presets: {', '.join(ENCODER_CONFIGS)}")
    preset = ENCODER_CONFIGS[name]
    desc, path = resolve_weights(preset, weights)
    account = None
    if path is not None:
        vae, wfile, account = load_vae_folder(path)
        desc = f"{desc} ({file_sha256(wfile, 8)})"
    elif desc.startswith("hf-hub:"):
        vae, _, account = _from_hub(desc.removeprefix("hf-hub:"))
    else:
        vae = AutoencoderKL.from_config(dict(preset.config, **overrides))
    spec = with_load_account(_spec(name, preset, resolution or preset.resolution, desc, vae.config), account)
    return SDVAEEncoder(spec, vae)


def _spec(name, preset, resolution, desc, cfg) -> EncoderSpec:
    cfg = dict(cfg)
    down = 2 ** (len(cfg["block_out_channels"]) - 1)
    return EncoderSpec(
        name=name, family="sd-vae", latent_channels=cfg["latent_channels"], downsample=down,
        resolution=resolution, has_decoder=True, weights=desc, feature_dim=cfg["latent_channels"],
        notes=f"AutoencoderKL posterior mean x {cfg['scaling_factor']}",
        extra={"scaling_factor": cfg["scaling_factor"]},
    )


def _spec_for(name: str) -> EncoderSpec:
    preset = ENCODER_CONFIGS[name]
    desc, _ = resolve_weights(preset, None)
    return _spec(name, preset, preset.resolution, desc, preset.config)


create_sdvae.spec_for = _spec_for
