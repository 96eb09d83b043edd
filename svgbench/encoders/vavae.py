"""LDM-layout KL autoencoders (VA-VAE of hustvl/LightningDiT, and any CompVis latent-diffusion / taming `first_stage`
KL model), converted on load to diffusers' `AutoencoderKL`: `ldm:FILE.pt`, `ldm:DIR` or `ldm:ORG/REPO/FILE.pt`.

The release (`vavae-imagenet256-f16d32-dinov2.pt`) is a torch file holding {"state_dict": ...} in the layout of
LightningDiT's `tokenizer/autoencoder.py` (the LDM `Encoder`/`Decoder` of `ldm/modules/diffusionmodules/model.py`):
`encoder.down.N.block.M`, `encoder.down.N.attn.M` (q/k/v/proj_out as 1 x 1 convolutions), `encoder.mid.block_1/
attn_1/block_2`, `decoder.up.N...` (numbered from the highest resolution, run from the lowest), `quant_conv`,
`post_quant_conv`. The architecture is read from the file's own shapes (channels per level, blocks per level, the
levels with attention, latent channels), so the file alone defines the model; every tensor is renamed to its
diffusers key and loaded by `check_and_load` (missing, unexpected or mis-shaped keys refused, named by their file
key), except the training-only parts LightningDiT's loader also leaves out, each with its reason (UNUSED).

Latent: the posterior mean (sample=True: a sample), normalised as LightningDiT feeds its diffusion model:
(z - mean) / std per channel with `latents_stats.pt` ({"mean", "std"} of shape 1 x C x 1 x 1, published beside the
checkpoint) and latent_multiplier 1.0; read from the checkpoint's folder when there, else the raw posterior mean.
The diffusers class is used, not a copy of the LDM modules, because its blocks are the same computations
(tests/test_vavae.py compares them with an independent LDM implementation on random weights).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..checkpoints import CheckpointError, check_and_load, file_sha256, load_state_dict
from .base import with_load_account

PREFIX = "ldm:"
STATS_FILE = "latents_stats.pt"
NORM_GROUPS = 32  # the LDM Normalize(): GroupNorm(32, C, eps=1e-6), fixed in the official code, not in the file

CONVENTION = ("posterior mean (sample=True: a posterior sample), then (z - mean) / std per channel from the "
              "latents_stats.pt beside the checkpoint (LightningDiT's latent_norm), else the raw mean")

# file keys of a VA-VAE / LDM training checkpoint that the autoencoder's forward never reads
UNUSED = {
    "loss.*": "training loss (LPIPS network, discriminator, logvar); not part of the autoencoder",
    "foundation_model.*": "frozen vision foundation model (DINOv2) of the VF alignment loss, training only",
    "linear_proj.*": "projection of the VF alignment loss, training only",
    "model_ema.*": "EMA copy kept by the trainer; the release's weights are the model's own",
}

# LDM sub-module name -> diffusers name, inside a ResnetBlock / AttnBlock
_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _levels(state: dict, prefix: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state for m in [re.match(rf"{prefix}\.(\d+)\.", k)] if m})


def _count(state: dict, prefix: str) -> int:
    return len({int(m.group(1)) for k in state for m in [re.match(rf"{re.escape(prefix)}\.(\d+)\.", k)] if m})


def infer_config(state: dict[str, torch.Tensor], source: str) -> dict:
    """The diffusers AutoencoderKL config that the LDM state describes, from its keys and shapes."""
    need = ["encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.weight",
            "post_quant_conv.weight", "encoder.conv_out.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {source} is not an LDM KL autoencoder (encoder.down.N.block.M ...): "
                              f"it has no {', '.join(missing)}; pass a VA-VAE / latent-diffusion first-stage "
                              f"checkpoint", input=source)
    levels = _levels(state, r"encoder\.down")
    if not levels or levels != list(range(len(levels))) or _levels(state, r"decoder\.up") != levels:
        raise CheckpointError(f"checkpoint {source}: encoder.down levels {levels} and decoder.up levels "
                              f"{_levels(state, r'decoder.up')} are not the same 0..N-1", input=source)
    widths = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    blocks = _count(state, "encoder.down.0.block")
    for i in levels:
        if _count(state, f"encoder.down.{i}.block") != blocks or _count(state, f"decoder.up.{i}.block") != blocks + 1:
            raise CheckpointError(f"checkpoint {source}: level {i} has {_count(state, f'encoder.down.{i}.block')} "
                                  f"encoder / {_count(state, f'decoder.up.{i}.block')} decoder blocks; the LDM "
                                  f"layout has num_res_blocks and num_res_blocks + 1 at every level", input=source)
    embed = int(state["post_quant_conv.weight"].shape[1])
    z_ch = int(state["decoder.conv_in.weight"].shape[1])
    if z_ch != embed or tuple(state["quant_conv.weight"].shape[:2]) != (2 * embed, 2 * embed) \
            or int(state["encoder.conv_out.weight"].shape[0]) != 2 * embed:
        raise CheckpointError(f"checkpoint {source}: z_channels {z_ch}, embed_dim {embed}, quant_conv "
                              f"{tuple(state['quant_conv.weight'].shape)}: only double_z models with z_channels == "
                              f"embed_dim convert to AutoencoderKL", input=source)
    enc_attn = [_count(state, f"encoder.down.{i}.attn") > 0 for i in levels]
    dec_attn = [_count(state, f"decoder.up.{i}.attn") > 0 for i in levels]
    mid_attn = "encoder.mid.attn_1.q.weight" in state
    return dict(
        in_channels=int(state["encoder.conv_in.weight"].shape[1]),
        out_channels=int(state["decoder.conv_out.weight"].shape[0]),
        latent_channels=embed, block_out_channels=widths, layers_per_block=blocks, norm_num_groups=NORM_GROUPS,
        act_fn="silu", down_block_types=["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in enc_attn],
        # diffusers runs its up blocks from the lowest resolution; LDM numbers them from the highest
        up_block_types=["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(dec_attn)],
        mid_block_add_attention=mid_attn, scaling_factor=1.0, use_quant_conv=True, use_post_quant_conv=True,
    )


def _rename(key: str, n_levels: int) -> str | None:
    """The diffusers key of an LDM key; None for keys outside the layout (left for check_and_load to judge)."""
    for side in ("encoder", "decoder"):
        if not key.startswith(side + "."):
            continue
        rest = key[len(side) + 1:]
        m = re.fullmatch(r"(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(\w+)\.(weight|bias)", rest)
        if m:
            kind, lvl, part, j, sub, wb = m.groups()
            table = _RESNET if part == "block" else _ATTN
            if sub not in table:
                return None
            blk = int(lvl) if kind == "down" else n_levels - 1 - int(lvl)
            group = "resnets" if part == "block" else "attentions"
            return f"{side}.{kind}_blocks.{blk}.{group}.{j}.{table[sub]}.{wb}"
        m = re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(weight|bias)", rest)
        if m:
            kind, lvl, what, wb = m.groups()
            blk = int(lvl) if kind == "down" else n_levels - 1 - int(lvl)
            return f"{side}.{kind}_blocks.{blk}.{what}rs.0.conv.{wb}"
        m = re.fullmatch(r"mid\.(block_1|block_2|attn_1)\.(\w+)\.(weight|bias)", rest)
        if m:
            part, sub, wb = m.groups()
            if part == "attn_1":
                return f"{side}.mid_block.attentions.0.{_ATTN[sub]}.{wb}" if sub in _ATTN else None
            return f"{side}.mid_block.resnets.{int(part[-1]) - 1}.{_RESNET[sub]}.{wb}" if sub in _RESNET else None
        m = re.fullmatch(r"(conv_in|conv_out|norm_out)\.(weight|bias)", rest)
        if m:
            name = "conv_norm_out" if m.group(1) == "norm_out" else m.group(1)
            return f"{side}.{name}.{m.group(2)}"
        return None
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    return None


def convert_state(state: dict[str, torch.Tensor], n_levels: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """LDM state -> (diffusers AutoencoderKL state, diffusers key -> file key). Keys outside the layout keep their
    file name, so that check_and_load names them as unused (UNUSED) or refuses them."""
    out, names = {}, {}
    for k, v in state.items():
        new = _rename(k, n_levels)
        if new is None:
            new = k
        elif ".attentions." in new and v.dim() == 4:
            # LDM's attention projections are 1 x 1 convolutions; diffusers' are linear layers of the same matrix
            if tuple(v.shape[2:]) != (1, 1):
                raise CheckpointError(f"tensor {k!r} has shape {tuple(v.shape)}; an LDM attention projection is "
                                      f"a 1 x 1 convolution", input=k)
            v = v[:, :, 0, 0]
        if new in out:
            raise CheckpointError(f"tensors {names[new]!r} and {k!r} map to the same diffusers key {new!r}", input=k)
        out[new], names[new] = v, k
    return out, names


def read_stats(path: Path, channels: int) -> tuple[list[float], list[float]]:
    """LightningDiT's latents_stats.pt: {"mean", "std"} per channel (1 x C x 1 x 1)."""
    stats = load_state_dict(path)
    if set(stats) != {"mean", "std"}:
        raise CheckpointError(f"latent statistics {path} hold {sorted(stats)}; expected LightningDiT's "
                              f"{{'mean', 'std'}} (latents_stats.pt)", input=str(path))
    mean, std = stats["mean"].flatten().double(), stats["std"].flatten().double()
    if mean.numel() != channels or std.numel() != channels:
        raise CheckpointError(f"latent statistics {path} have {mean.numel()} channels; the checkpoint's latent "
                              f"has {channels}: use the latents_stats.pt of this checkpoint", input=str(path))
    if not bool((std > 0).all()):
        raise CheckpointError(f"latent statistics {path}: std has non-positive entries", input=str(path))
    return mean.tolist(), std.tolist()


def load_ldm(path: str | os.PathLike, stats: str | os.PathLike | None = None, *, source: str | None = None):
    """An LDM-layout checkpoint (and optionally its latents_stats.pt) -> (AutoencoderKL, config, LoadAccount)."""
    from diffusers import AutoencoderKL

    path = Path(path)
    source = source or str(path)
    siblings: list[str] = []
    state = load_state_dict(path, siblings=siblings)
    config = infer_config(state, source)
    if stats is not None:
        config["latents_mean"], config["latents_std"] = read_stats(Path(stats), config["latent_channels"])
    model = AutoencoderKL.from_config(config)
    converted, names = convert_state(state, len(config["block_out_channels"]))
    account = check_and_load(model, converted, source=source, unused=UNUSED, file_keys=names)
    return model.eval(), config, account


def _locate(name: str) -> tuple[Path, Path | None, str]:
    """-> (checkpoint file, latents_stats.pt or None, description). ldm:FILE, ldm:DIR (one .pt/.ckpt/.safetensors
    in it) or ldm:ORG/REPO/FILE on the hub (with the repo's latents_stats.pt when it has one)."""
    target = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not target:
        raise CheckpointError(f"encoder {name!r}: expected ldm:FILE.pt, ldm:DIR or ldm:ORG/REPO/FILE.pt", input=name)
    local = Path(target).expanduser()
    if local.exists() or target.startswith(("/", ".", "~")):
        if local.is_dir():
            found = sorted(p for p in local.iterdir() if p.suffix in (".pt", ".ckpt", ".safetensors", ".pth")
                           and p.name != STATS_FILE)
            if len(found) != 1:
                raise CheckpointError(f"encoder {name!r}: {local} holds {len(found)} checkpoint files "
                                      f"({', '.join(p.name for p in found) or 'none'}); name the file: "
                                      f"ldm:{local}/FILE.pt", input=name)
            local = found[0]
        if not local.is_file():
            raise CheckpointError(f"encoder {name!r}: no such file {local}; pass ldm:/path/to/checkpoint.pt "
                                  f"(with {STATS_FILE} beside it)", input=name)
        stats = local.parent / STATS_FILE
        return local, stats if stats.exists() else None, f"file:{local}"
    parts = [p for p in target.split("/") if p]
    if len(parts) < 3:
        raise CheckpointError(f"encoder {name!r}: {target!r} is neither a local file nor ORG/REPO/FILE on the "
                              f"hub; pass ldm:/path/to/checkpoint.pt", input=name)
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import hf_hub_download

    try:
        ckpt = Path(hf_hub_download(repo, filename))
    except Exception as e:
        raise CheckpointError(
            f"encoder {name!r}: {repo}/{filename} could not be fetched from the Hugging Face hub and is not in its "
            f"local cache ({type(e).__name__}); download it and {STATS_FILE} where the hub is reachable "
            f"(huggingface-cli download {repo} {filename} {STATS_FILE} --local-dir DIR) and pass ldm:DIR/{filename}",
            input=name, fix="pass ldm:/path/to/checkpoint.pt") from e
    try:
        stats = Path(hf_hub_download(repo, str(Path(filename).parent / STATS_FILE)))
    except Exception:  # noqa: BLE001 - a repo without statistics: the raw posterior mean, said in the spec
        stats = None
    return ckpt, stats, f"hf-hub:{target}"


def _ldm_spec(name: str, config: dict, desc: str, stats: Path | None, resolution: int | None, sample: bool):
    from .diffusers_ae import make_spec

    how = (f"(z - mean) / std with {stats.name}" if stats is not None
           else f"the raw posterior {'sample' if sample else 'mean'} (no {STATS_FILE} beside the checkpoint)")
    spec = make_spec(name, "AutoencoderKL", config, desc, resolution, sample)
    return spec.replace(family="ldm", notes=f"LDM-layout KL autoencoder converted to diffusers AutoencoderKL: "
                                            f"posterior {'sample' if sample else 'mean'}, {how}",
                        extra=spec.extra | {"convention": CONVENTION, "ldm_config": {k: v for k, v in config.items()
                                                           if k not in ("latents_mean", "latents_std")}})


def _meta_state(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors as shapes only (meta tensors), without reading their data: the safetensors header,
    or a memory-mapped torch file; a file that cannot be mapped is read by the strict loader, which names it."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            obj = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
            shapes = {k: v.shape for k, v in obj.items() if isinstance(v, torch.Tensor)}
    except Exception:  # noqa: BLE001 - the strict loader below says what is wrong with the file
        return load_state_dict(path)
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def create_ldm(name: str, weights: str | None = None, resolution: int | None = None, sample: bool = False,
               **overrides):
    """`ldm:FILE|DIR|ORG/REPO/FILE`; weights: None (that file) or a local file/folder standing in for it."""
    from .diffusers_ae import DiffusersAutoencoder

    if overrides:
        raise TypeError(f"encoder {name!r} takes weights=, resolution= and sample=; got {', '.join(overrides)}")
    ckpt, stats, desc = _locate(f"{PREFIX}{weights}" if weights else name)
    vae, config, account = load_ldm(ckpt, stats, source=f"{name} ({ckpt})")
    spec = _ldm_spec(name, config, f"{desc} ({file_sha256(ckpt, 8)})", stats, resolution, sample)
    return DiffusersAutoencoder(with_load_account(spec, account), vae, "AutoencoderKL", sample)


def _spec_for(name: str):
    """The spec of an `ldm:` name from the checkpoint's tensor shapes, without loading its weights."""
    ckpt, stats, desc = _locate(name)
    config = infer_config(_meta_state(ckpt), name)
    if stats is not None:
        config["latents_mean"], config["latents_std"] = read_stats(stats, config["latent_channels"])
    return _ldm_spec(name, config, desc, stats, None, False)


create_ldm.spec_for = _spec_for
