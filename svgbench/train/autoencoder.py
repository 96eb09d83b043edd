"""`svgbench train vae` and `svgbench train svg`: autoencoders trained to reconstruct pixels.

- vae: diffusers AutoencoderKL (the SD-VAE design), L1 + perceptual + KL (weight 1e-6), optional PatchGAN.
- svg: the SVG autoencoder: frozen DINO, trainable residual ViT + mask token + pixel decoder; residual
  masking (p = 0.1) and distribution alignment as published; L1 + perceptual, optional PatchGAN with
  the adaptive weight; Adam(betas 0.5, 0.9). The DINO-only variant (no residual branch) trains the same
  decoder on DINO tokens alone: the ablation of the paper.
Runs resume from `last.pt`; the curve (validation PSNR/SSIM vs step) goes to `curve.jsonl`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import EMBEDDED_DATA, dataset_spec
from .common import (RunDir, TrainResult, add_config_args, all_reduce_mean, config_flags, config_from_args, is_main,
                     resume, rng_state, start_run, step_generator, unwrap)
from .losses import PatchDiscriminator, Perceptual, adaptive_gan_weight, hinge_d_loss


@dataclass
class AEConfig:
    model: str = "svg"  # "svg" or "vae"
    encoder: str = "tiny-svg"  # the registry preset whose architecture is trained
    dino_weights: str | None = None  # svg: the frozen DINO (default: the preset's own source)
    data: str = EMBEDDED_DATA
    data_root: str | None = None
    resolution: int = 64
    train_images: int = 50_000  # shapes: size of the (cached) training split
    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    perceptual: str = "ssim"  # "lpips" at real scale (needs VGG weights), "ssim" offline
    perceptual_weight: float = 1.0
    kl_weight: float = 1e-6
    mask_prob: float = 0.1
    disc_start: int = -1  # step at which the PatchGAN starts; -1: no GAN
    disc_weight: float = 0.5
    seed: int = 0
    eval_every: int = 250
    eval_images: int = 256
    ckpt_every: int = 100
    out: str = "runs/tiny-svg"
    threads: int | None = None


# The tiny presets share every optimisation setting: 1500 steps of 32 (about 40 minutes of one core each).
_TINY = dict(steps=1500, lr=4e-4)

TRAIN_PRESETS = {
    "vae-tiny": AEConfig(model="vae", encoder="tiny-vae", out="runs/tiny-vae", **_TINY),
    "vae-tiny-wide": AEConfig(model="vae", encoder="tiny-vae-wide", out="runs/tiny-vae-wide", **_TINY),
    "svg-tiny": AEConfig(**_TINY),
    "svg-tiny-dino-only": AEConfig(encoder="tiny-svg-dino-only", out="runs/tiny-svg-dino-only", **_TINY),
    "svg-imagenet": AEConfig(encoder="svg-dinov3-vits16plus", data="imagefolder", resolution=256,
                             train_images=0, steps=400_000, batch_size=64, lr=1e-4, perceptual="lpips",
                             disc_start=5001, eval_every=5000, out="runs/svg-vits16plus"),
    "vae-imagenet": AEConfig(model="vae", encoder="sd-vae-ft-ema", data="imagefolder", resolution=256,
                             train_images=0, steps=400_000, batch_size=64, lr=1e-4, perceptual="lpips",
                             disc_start=50_001, eval_every=5000, out="runs/sd-vae"),
}


def build_model(cfg: AEConfig):
    from ..encoders import create_encoder

    if cfg.model == "vae":
        return create_encoder(cfg.encoder, weights="random")
    if cfg.model != "svg":
        raise ValueError(f"AEConfig.model must be 'svg' or 'vae', got {cfg.model!r}")
    from ..encoders.dino import ENCODER_CONFIGS as DINO_CONFIGS
    from ..encoders.dino import load_dino_weights, resolve_weights

    model = create_encoder(cfg.encoder, weights="random")
    desc, dino_file = resolve_weights(model.cfg.dino, DINO_CONFIGS[model.cfg.dino], cfg.dino_weights)
    if dino_file is None:
        raise FileNotFoundError(f"SVG training needs trained DINO weights for {model.cfg.dino!r} ({desc}); "
                                f"train them first (svgbench train dino) or pass --dino-weights")
    load_dino_weights(model.encoder, dino_file)
    return model


def trainable(model, cfg: AEConfig):
    """The parameters a recipe trains (all of the VAE; SVG's residual branch and decoder, never DINO)."""
    if cfg.model == "vae":
        params = list(model.vae.parameters())
    else:
        params = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    for p in params:
        p.requires_grad_(True)
    return params


def reconstruct(model, x, cfg: AEConfig, train: bool):
    """-> (reconstruction, extra loss terms)."""
    if cfg.model == "vae":
        post = model.vae.encode(x).latent_dist
        z = post.sample() if train else post.mean
        return model.vae.decode(z).sample, {"kl": post.kl().mean() / x[0].numel()}
    z = model.latent(x, mask_prob=cfg.mask_prob if train else 0.0)
    return model.decoder(z), {}


def last_layer(model, cfg):
    return model.vae.decoder.conv_out.weight if cfg.model == "vae" else model.decoder.conv_out.weight


class ImageSource:
    def __init__(self, cfg: AEConfig, cache_dir: str | None = None):
        self.cfg = cfg
        spec = dataset_spec(cfg.data)
        self.in_memory = spec.arrays is not None  # a whole split in memory (the procedural data), else read files
        if self.in_memory:
            arr = spec.read_arrays(cfg.resolution, "train", cfg.train_images, seed=cfg.seed, workers=2,
                                   cache_dir=cache_dir)
            self.images = torch.from_numpy(arr["images"]).permute(0, 3, 1, 2)
            val = spec.read_arrays(cfg.resolution, "val", cfg.eval_images)
            self.val = torch.from_numpy(val["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        else:
            from ..data.folders import ImageFolderDataset

            self.folder = ImageFolderDataset(cfg.data_root, cfg.resolution, split="train", convert_mode=True)
            val = ImageFolderDataset(cfg.data_root, cfg.resolution, split="val", convert_mode=True,
                                     limit=cfg.eval_images)
            self.val = torch.stack([val[i]["image"] for i in range(len(val))])

    def batch(self, step, rank, n):
        g = step_generator(self.cfg.seed, step, rank)
        if self.in_memory:
            idx = torch.randint(0, self.images.shape[0], (n,), generator=g)
            x = self.images[idx].float() / 127.5 - 1
            flip = torch.rand(n, generator=g) < 0.5
            return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        idx = torch.randint(0, len(self.folder), (n,), generator=g).tolist()
        return torch.stack([self.folder[i]["image"] for i in idx])


@torch.no_grad()
def evaluate(model, val, cfg, device) -> dict:
    from ..metrics.recon import SSIM, psnr_per_image, quantize

    was = model.training
    model.eval()
    ps, ss = [], []
    for i in range(0, val.shape[0], 64):
        x = val[i:i + 64].to(device)
        rec, _ = reconstruct(model, x, cfg, train=False)
        a, b = quantize(x).cpu(), quantize(rec).cpu()
        ps.append(psnr_per_image(a, b))
        ss.append(SSIM().per_image(a, b))
    model.train(was)
    return {"val_psnr": round(float(torch.cat(ps).mean()), 3), "val_ssim": round(float(torch.cat(ss).mean()), 4)}


def train_autoencoder(cfg: AEConfig, log=print, on_step=None) -> TrainResult:
    run, rank, world, device = start_run(cfg)
    model = build_model(cfg).to(device).train()
    params = trainable(model, cfg)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    perceptual = Perceptual(cfg.perceptual).to(device)
    disc = d_opt = None
    if cfg.disc_start >= 0:
        disc = PatchDiscriminator().to(device)
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    start, _ = resume(run, {"model": model, "opt": opt, "disc": disc, "d_opt": d_opt}, log)
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    data = ImageSource(cfg)
    t0 = time.perf_counter()
    last = {}
    for step in range(start, cfg.steps):
        x = data.batch(step, rank, cfg.batch_size).to(device)
        rec, extra = reconstruct(unwrap(ddp) if world == 1 else ddp.module, x, cfg, train=True)
        l1 = (rec - x).abs().mean()
        p = perceptual(rec, x)
        loss = l1 + cfg.perceptual_weight * p
        if "kl" in extra:
            loss = loss + cfg.kl_weight * extra["kl"]
        row = {"step": step + 1, "l1": round(l1.item(), 5), "perceptual": round(p.item(), 5)}
        use_gan = disc is not None and step >= cfg.disc_start
        if use_gan:
            g_loss = -disc(rec).mean()
            w = adaptive_gan_weight(loss, g_loss, last_layer(model, cfg), cfg.disc_weight)
            loss = loss + w * g_loss
            row["g_loss"] = round(g_loss.item(), 5)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"autoencoder loss is {loss.item()} at step {step}; lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            for q in params:
                if q.grad is not None:
                    q.grad = all_reduce_mean(q.grad)
        opt.step()
        if use_gan:
            d_loss = hinge_d_loss(disc(x), disc(rec.detach()))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            row["d_loss"] = round(d_loss.item(), 5)
        done = step + 1
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        if is_main():
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                row |= evaluate(model, data.val, cfg, device)
            if done % 20 == 0 or "val_psnr" in row:
                run.log(row)
                log(" ".join(f"{k}={v}" for k, v in row.items()))
            last = row
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                st = {"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng_state(), "step": done}
                if disc is not None:
                    st |= {"disc": disc.state_dict(), "d_opt": d_opt.state_dict()}
                run.save(st)
        if on_step is not None:  # after the step's checkpoint: tests interrupt runs here
            on_step(done)
    return TrainResult(last, model)


def export(cfg: AEConfig, dest: str | Path) -> None:
    """The trained model of `cfg.out` -> the registry's format (diffusers folder / SVG safetensors)."""
    state = RunDir(cfg.out).load()
    if state is None:
        raise FileNotFoundError(f"no checkpoint under {cfg.out}")
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    if cfg.model == "vae":
        model.vae.save_pretrained(dest, safe_serialization=True)
    else:
        model.save(dest, step=str(state["step"]))


DESCRIPTIONS = {
    "tiny-vae": "diffusers AutoencoderKL, the SD-VAE design (downsampling 8, 4 latent channels) at 64 px: block "
                "channels 16/32/64/64, one resnet per encoder level; L1 + SSIM loss + KL (weight 1e-6).",
    "tiny-vae-wide": "tiny-vae with 136 latent channels (tiny-svg's 128 DINO + 8 residual channels): the matched-"
                     "capacity baseline, same architecture, loss and recipe as tiny-vae, only the latent is wider.",
    "tiny-svg": "SVG autoencoder: frozen tiny-ssl tokens (128 channels) + residual ViT (2 layers, width 128) adding "
                "8 channels, per-sample distribution alignment, residual masking p = 0.1, and a pixel decoder of "
                "tiny-vae's decoder size; L1 + SSIM loss.",
    "tiny-svg-dino-only": "The DINO-only ablation: the same pixel decoder on frozen tiny-ssl tokens alone (no residual "
                          "branch); L1 + SSIM loss. It gives raw tiny-ssl a decoder.",
}


def write_export_card(cfg: AEConfig, dest: str | Path, preset: str, recipe: str) -> Path | None:
    """A model card next to weights exported into svgbench/weights/ (the shipped embedded models)."""
    from .cards import WEIGHTS_DIR, write_card

    dest = Path(dest).resolve()
    if dest.parent != WEIGHTS_DIR.resolve():
        return None
    rows = [r for r in RunDir(cfg.out).curve() if "val_psnr" in r]
    if not rows:
        raise ValueError(f"run {cfg.out} has no evaluation rows to put on a card")
    last = rows[-1]
    size = sum(f.stat().st_size for f in dest.rglob("*")) if dest.is_dir() else dest.stat().st_size
    metrics = {f"validation PSNR (dB), {cfg.eval_images} shapes/val images": last["val_psnr"],
               "validation SSIM": last["val_ssim"], "weights size (MB)": round(size / 1e6, 2)}
    return write_card(cfg.encoder, cfg.out, dest, description=DESCRIPTIONS.get(cfg.encoder, cfg.encoder),
                      command=f"svgbench train {recipe} --preset {preset}{config_flags(cfg, TRAIN_PRESETS[preset])}  "
                              f"# then --export {dest.name}",
                      curve_keys=["l1", "val_psnr", "val_ssim"], metrics=metrics)


def main(argv=None, recipe: str = "svg") -> None:
    import argparse

    p = argparse.ArgumentParser(f"svgbench train {recipe}")
    names = sorted(k for k in TRAIN_PRESETS if k.startswith(recipe))
    p.add_argument("--preset", default=f"{recipe}-tiny", choices=names)
    p.add_argument("--export", metavar="DEST", help="export the run's weights instead of training")
    add_config_args(p, AEConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(TRAIN_PRESETS[args.preset], args)
    if args.export:
        export(cfg, args.export)
        write_export_card(cfg, args.export, args.preset, recipe)
        return
    train_autoencoder(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
