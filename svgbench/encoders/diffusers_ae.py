"""Any diffusers image autoencoder, configured by its own config.json: `diffusers:REPO_OR_DIR[/SUBFOLDER]`.

The class is the one `config.json` names (`_class_name`); latent channels, downsampling, `scaling_factor`,
`shift_factor`, `latents_mean`/`latents_std` and the input range all come from that config (and, for
AutoencoderKLFlux2, from its batch-norm running statistics), never from a preset. One convention for every
class, the one its own pipelines use to hand a latent to the diffusion model:

- the posterior mean where the class has a posterior (AutoencoderKL, AutoencoderKLFlux2); `sample=True`
  draws from the posterior instead (the run's seed); the deterministic latent otherwise (AutoencoderDC,
  AutoencoderTiny, AutoencoderRAE), which have nothing to sample;
- AutoencoderKL / AutoencoderTiny: (mean - shift_factor) * scaling_factor, or (mean - latents_mean) /
  latents_std * scaling_factor where the config gives per-channel statistics (SDXL-style pipelines);
- AutoencoderKLFlux2: the mean patchified 2 x 2 and normalised by the batch-norm running mean/var (FLUX.2's
  pipeline), so 4 x latent_channels channels at 16 px a cell;
- AutoencoderDC: latent * scaling_factor; AutoencoderRAE: the class's own latent (it normalises and scales it
  itself), fed images in [0, 1] as the class expects, its fixed encoder input and decoder output size.

`decode` inverts exactly that map and calls the class's `decode`, clamped to [-1, 1].
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch

from ..checkpoints import CheckpointError, check_and_load, file_sha256, load_state_dict
from .base import EncoderSpec, LatentEncoder

PREFIX = "diffusers:"
DEFAULT_RESOLUTION = 256  # the latent shape `svgbench list` shows; a run uses its own resolution

# class name -> how its latent is read (see the module docstring)
KINDS = {
    "AutoencoderKL": "kl",
    "AutoencoderKLFlux2": "flux2",
    "AutoencoderDC": "dc",
    "AutoencoderTiny": "tiny",
    "AutoencoderRAE": "rae",
}
DETERMINISTIC = {"dc", "tiny", "rae"}

CONVENTION = ("posterior mean (sample=True: a posterior sample) or the deterministic latent, then the "
              "class's pipeline normalisation from its config: (z - shift) * scale, per-channel "
              "latents_mean/std, FLUX.2's 2x2 patchify + batch-norm statistics; RAE as the class encodes")

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"


def _looks_like_path(target: str) -> bool:
    return target.startswith(("/", ".", "~")) or os.path.isabs(target) or "\\" in target


def _hub_parts(name: str, target: str) -> tuple[str, str | None]:
    parts = [p for p in target.split("/") if p]
    if len(parts) < 2:
        raise CheckpointError(
            f"encoder {name!r}: {target!r} is neither a local folder nor a hub id; give "
            f"diffusers:ORG/REPO[/SUBFOLDER] or diffusers:/path/to/folder (with config.json)", input=name)
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def _offline_error(name: str, repo: str, sub: str | None, e: Exception) -> CheckpointError:
    where = f"{repo}/{sub}" if sub else repo
    return CheckpointError(
        f"encoder {name!r}: {repo} could not be fetched from the Hugging Face hub and is not in its local "
        f"cache ({type(e).__name__}{', HF_HUB_OFFLINE=1' if os.environ.get('HF_HUB_OFFLINE') else ''}); "
        f"download it where the hub is reachable (huggingface-cli download {repo} --local-dir DIR) and pass "
        f"diffusers:DIR{'/' + sub if sub else ''} (the folder holding config.json of {where})",
        input=name, fix="pass diffusers:/path/to/folder")


def parse_name(name: str) -> str:
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise CheckpointError(f"encoder {name!r}: expected diffusers:REPO_OR_DIR[/SUBFOLDER]", input=name)
    return name[len(PREFIX):]


def locate(name: str, *, config_only: bool = False) -> tuple[Path, str]:
    """-> (local folder holding config.json, description of the source). Hub ids are fetched (or read from
    the hub cache); a path that does not exist is an error naming it."""
    target = parse_name(name)
    local = Path(target).expanduser()
    if local.exists() or _looks_like_path(target):
        if not local.is_dir():
            raise CheckpointError(f"encoder {name!r}: {local} is not a folder; pass the diffusers folder holding "
                                  f"config.json and diffusion_pytorch_model.safetensors", input=name)
        if not (local / "config.json").exists():
            subs = sorted(p.parent.name for p in local.glob("*/config.json"))
            hint = f" (sub-folders with one: {', '.join(subs)}; e.g. diffusers:{local / subs[0]})" if subs else ""
            raise CheckpointError(f"encoder {name!r}: {local} has no config.json{hint}", input=name)
        return local, f"dir:{local}"
    repo, sub = _hub_parts(name, target)
    from huggingface_hub import hf_hub_download, snapshot_download

    prefix = f"{sub}/" if sub else ""
    try:
        if config_only:
            cfg = hf_hub_download(repo, "config.json", subfolder=sub)
            return Path(cfg).parent, f"hf-hub:{target}"
        root = snapshot_download(repo, allow_patterns=[f"{prefix}config.json", f"{prefix}{INDEX_FILE}",
                                                       f"{prefix}diffusion_pytorch_model*.safetensors"])
    except Exception as e:
        raise _offline_error(name, repo, sub, e) from e
    folder = Path(root) / (sub or "")
    if not (folder / "config.json").exists():
        raise CheckpointError(f"encoder {name!r}: hub repo {repo} has no {prefix}config.json; name the "
                              f"sub-folder of the autoencoder (e.g. diffusers:{repo}/vae)", input=name)
    return folder, f"hf-hub:{target}"


def read_config(name: str, folder: Path) -> tuple[str, dict]:
    """-> (class name, constructor config) of the folder's config.json, refusing classes this module does not read."""
    try:
        raw = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"encoder {name!r}: {folder / 'config.json'} is not valid JSON ({e})", input=name) from e
    cls = raw.get("_class_name")
    if cls not in KINDS:
        raise CheckpointError(
            f"encoder {name!r}: {folder / 'config.json'} names class {cls!r}; diffusers:... reads image "
            f"autoencoders of the classes {', '.join(KINDS)}", input=name)
    return cls, {k: v for k, v in raw.items() if not k.startswith("_")}


def model_class(name: str, cls: str):
    import diffusers

    klass = getattr(diffusers, cls, None)
    if klass is None:
        raise CheckpointError(f"encoder {name!r}: installed diffusers {diffusers.__version__} has no {cls}; "
                              f"upgrade diffusers", input=name)
    return klass


def _weights(name: str, folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    index = folder / INDEX_FILE
    if index.exists():  # sharded: every shard the index names, each through the one loader
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for s in shards:
            state.update(load_state_dict(folder / s))
        return state, f"{len(shards)} shards"
    f = next((folder / w for w in WEIGHT_FILES if (folder / w).exists()), None)
    if f is None:
        raise CheckpointError(f"encoder {name!r}: {folder} has no {WEIGHT_FILES[0]} (nor .bin, nor a sharded "
                              f"index); save the model with save_pretrained", input=name)
    return load_state_dict(f), file_sha256(f, 8)


def build_model(name: str, cls: str, config: dict):
    import inspect

    klass = model_class(name, cls)
    # save_pretrained records some attributes the constructor does not take (AutoencoderTiny's
    # block_out_channels); they describe nothing the model uses
    takes = inspect.signature(klass.__init__).parameters
    config = {k: v for k, v in config.items() if k in takes}
    try:
        return klass.from_config(config)
    except ImportError as e:  # AutoencoderRAE builds its frozen encoder with transformers
        raise CheckpointError(f"encoder {name!r}: {cls} needs a package that is not installed ({e}); "
                              f"pip install transformers", input=name) from e
    except Exception as e:
        raise CheckpointError(f"encoder {name!r}: config.json does not build a {cls}: {e}", input=name) from e


def load_model(name: str, folder: Path, cls: str, config: dict):
    """Build the class from the config and load the folder's weights strictly (every key, every shape)."""
    model = build_model(name, cls, config)
    state, digest = _weights(name, folder)
    # keys the class itself declares as safe to drop (e.g. RAE's fixed decoder position embedding)
    skip = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not any(p.search(k) for p in skip)}
    check_and_load(model, state, source=f"{name} ({folder})")
    return model, digest


def _flat(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def geometry(cls: str, cfg: dict) -> dict:
    """Latent channels, pixels per latent cell and (RAE) the one image size, from the config alone."""
    kind = KINDS[cls]
    if kind in ("kl", "flux2"):
        down = 2 ** (len(cfg.get("block_out_channels", (128, 256, 512, 512))) - 1)
        ch = cfg.get("latent_channels", 4 if kind == "kl" else 32)
        if kind == "flux2":
            patch = _flat(cfg.get("patch_size", (2, 2)))
            patch = patch * 2 if len(patch) == 1 else patch
            return {"channels": ch * math.prod(patch), "downsample": down * patch[0], "patch": patch}
        return {"channels": ch, "downsample": down}
    if kind == "dc":
        return {"channels": cfg.get("latent_channels", 32),
                "downsample": 2 ** (len(cfg.get("encoder_block_out_channels", (0,) * 6)) - 1)}
    if kind == "tiny":
        return {"channels": cfg.get("latent_channels", 4),
                "downsample": 2 ** (len(cfg.get("encoder_block_out_channels", (0,) * 4)) - 1)}
    grid = cfg.get("encoder_input_size", 224) // cfg.get("encoder_patch_size", 14)
    size = cfg.get("image_size") or cfg.get("patch_size", 16) * grid
    return {"channels": cfg.get("encoder_hidden_size", 768), "downsample": size // grid, "image_size": size}


def make_spec(name: str, cls: str, cfg: dict, desc: str, resolution: int | None, sample: bool) -> EncoderSpec:
    kind, geo = KINDS[cls], geometry(cls, cfg)
    fixed = kind == "rae"  # its decoder paints one image size whatever the input size
    res = geo["image_size"] if fixed else (resolution or DEFAULT_RESOLUTION)
    scale = cfg.get("scaling_factor", 1.0)
    shift = cfg.get("shift_factor") or 0.0
    stats = cfg.get("latents_mean") is not None and cfg.get("latents_std") is not None
    how = {"kl": f"posterior {'sample' if sample else 'mean'}", "flux2": f"posterior {'sample' if sample else 'mean'}"
           }.get(kind, "deterministic latent")
    norm = {"flux2": "2x2 patchify, batch-norm running statistics",
            "rae": "the class's own latent normalisation x scaling_factor",
            "dc": f"x {scale}"}.get(kind, "(z - latents_mean) / latents_std x scaling_factor" if stats
                                     else f"(z - {shift}) x {scale}")
    return EncoderSpec(
        name=name, family="diffusers", latent_channels=geo["channels"], downsample=geo["downsample"],
        resolution=res, has_decoder=True, weights=desc, feature_dim=geo["channels"], fixed_resolution=fixed,
        notes=f"diffusers {cls}: {how}, {norm}",
        extra={"class": cls, "scaling_factor": scale, "shift_factor": shift, "latent_stats": stats,
               "sample": sample, "convention": CONVENTION},
    )


class DiffusersAutoencoder(LatentEncoder):
    """A diffusers autoencoder read through the one convention of the module docstring."""

    def __init__(self, spec: EncoderSpec, vae, cls: str, sample: bool = False):
        super().__init__(spec)
        self.vae = vae.eval().requires_grad_(False)
        self.kind = KINDS[cls]
        self.sample = sample
        cfg = vae.config
        self.patch = geometry(cls, dict(cfg)).get("patch")
        self.scale = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
        self.shift = float(getattr(cfg, "shift_factor", 0.0) or 0.0)
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if self.kind in ("kl", "tiny") and mean is not None and std is not None:
            # buffers, so that the weights hash (the cache key) covers them
            self.register_buffer("latents_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("latents_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        else:
            self.latents_mean = self.latents_std = None

    # the raw latent the class hands out, before the pipeline's normalisation
    def _raw(self, images):
        if self.kind in ("kl", "flux2"):
            dist = self.vae.encode(images).latent_dist
            return dist.sample() if self.sample else dist.mean
        if self.kind == "dc":
            return self.vae.encode(images).latent
        if self.kind == "tiny":
            return self.vae.encode(images).latents
        return self.vae.encode((images + 1) / 2).latent  # RAE normalises [0, 1] images itself

    def _bn(self, z):
        bn = self.vae.bn
        return bn.running_mean.view(1, -1, 1, 1).to(z), torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps).to(z)

    def _encode(self, images):
        z = self._raw(images)
        if self.kind == "flux2":
            p1, p2 = self.patch
            b, c, h, w = z.shape
            z = z.view(b, c, h // p1, p1, w // p2, p2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * p1 * p2, h // p1,
                                                                                         w // p2)
            mean, std = self._bn(z)
            return (z - mean) / std
        if self.kind == "rae":
            return z
        if self.latents_mean is not None:
            return (z - self.latents_mean.to(z)) / self.latents_std.to(z) * self.scale
        return (z - self.shift) * self.scale

    def _decode(self, latent):
        z = latent
        if self.kind == "flux2":
            mean, std = self._bn(z)
            z = z * std + mean
            p1, p2 = self.patch
            b, c, h, w = z.shape
            z = z.reshape(b, c // (p1 * p2), p1, p2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // (p1 * p2),
                                                                                             h * p1, w * p2)
        elif self.kind == "dc":
            z = z / self.scale
        elif self.kind in ("kl", "tiny"):
            if self.latents_mean is not None:
                z = z / self.scale * self.latents_std.to(z) + self.latents_mean.to(z)
            else:
                z = z / self.scale + self.shift
        out = self.vae.decode(z).sample
        if self.kind == "rae":
            out = out * 2 - 1
        return out.clamp(-1, 1)


def create_diffusers(name: str, weights: str | None = None, resolution: int | None = None, sample: bool = False,
                     **overrides) -> DiffusersAutoencoder:
    """`diffusers:REPO_OR_DIR[/SUBFOLDER]`. weights: None (the folder's), or "random" (the config's architecture,
    random weights from the run's seed). sample=True: a posterior sample instead of its mean (KL classes)."""
    if overrides:
        raise TypeError(f"encoder {name!r} takes weights=, resolution= and sample=; got {', '.join(overrides)}")
    if weights not in (None, "random"):
        raise CheckpointError(f"encoder {name!r}: the weights are the folder's own; put them in the folder "
                              f"(save_pretrained) instead of passing weights={weights!r}", input=name)
    folder, desc = locate(name, config_only=weights == "random")
    cls, config = read_config(name, folder)
    if sample and KINDS[cls] in DETERMINISTIC:
        raise CheckpointError(f"encoder {name!r}: {cls} has a deterministic latent, no posterior to sample; "
                              f"drop sample=True", input=name)
    if weights == "random":
        vae, desc = build_model(name, cls, config), f"random-init ({cls} config of {desc})"
    else:
        vae, digest = load_model(name, folder, cls, config)
        desc = f"{desc} ({digest})"
    spec = make_spec(name, cls, config, desc, resolution, sample)
    return DiffusersAutoencoder(spec, vae, cls, sample)


def _spec_for(name: str) -> EncoderSpec:
    folder, desc = locate(name, config_only=True)
    cls, config = read_config(name, folder)
    return make_spec(name, cls, config, desc, None, False)


create_diffusers.spec_for = _spec_for
