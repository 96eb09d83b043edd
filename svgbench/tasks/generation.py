"""Generation: flow-matching diffusion on an encoder's latents; FID/KID/precision/recall, training
efficiency (FID vs training steps) and few-step sampling (FID and time vs sampler steps).

Per encoder, the diffusion model comes from svgbench's shipped weights for that encoder (when their
recorded encoder-weights hash matches), or is trained here for `train_steps` on the encoder's cached
latents of the training split, with judge-FID evaluated along the way. Samples are decoded by the
encoder's own decoder and compared with real images of the evaluation split.

Feature network: torch-fidelity's inception-v3-compat where its weights are on the machine and the
data is not the embedded shapes; on shapes, svgbench's shapes judge (labelled `judge-FID` in every
table). Each sample's noise depends on its index alone, so the sample set does not depend on the batch
size or the number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..encoders.base import LatentEncoder

SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "diffusion"


@dataclass(frozen=True)
class GenerationConfig:
    batch_size: int = 64
    train_size: int = 20_000
    eval_samples: int = 1000
    size: str = "tiny"
    train_steps: int = 1500
    train_batch: int = 64
    lr: float = 3e-4
    eval_every: int = 300
    curve_samples: int = 500
    sample_steps: int = 25
    sampler: str = "euler"
    shift: float = 0.15
    guidance: float = 1.0
    fid_targets: tuple[float, ...] = ()  # for each, report the first training step whose FID is at or below it
    fd_dinov2: bool = True  # real data: also FD on DINOv2 ViT-L/14 features where those weights are local
    samples_npz: str | None = None  # write the scored samples here as an ADM-evaluator .npz (arr_0: N x H x W x 3)
    seed: int = 0
    train: bool = False  # train a diffusion model here when no shipped one matches the encoder (CPU: hours)
    retrain: bool = False  # ignore shipped diffusion weights and train here
    runs_dir: str = "runs/diffusion"


@dataclass(frozen=True)
class SamplingConfig:
    batch_size: int = 64
    train_size: int = 20_000
    eval_samples: int = 250
    steps: tuple[int, ...] = (1, 2, 4, 8, 16, 25, 50)
    methods: tuple[str, ...] = ("euler", "heun")
    heun_max_steps: int = 50  # Heun costs 2 evaluations a step: its curve can stop earlier (fewer step counts)
    shift: float = 0.15
    seed: int = 0
    train: bool = False  # as GenerationConfig.train
    generation: GenerationConfig = field(default_factory=GenerationConfig)


# ---------------------------------------------------------------------------------------------
# feature network
# ---------------------------------------------------------------------------------------------

def feature_network(data_name: str) -> tuple[str | None, str | None, str]:
    """-> (torch-fidelity extractor name or None, weights path or None, label / reason)."""
    from ..metrics.judge import JUDGE_NAME, judge_available, register_judge
    from ..metrics.recon import inception_weights_path

    if data_name == "shapes":
        if judge_available():
            register_judge()
            return JUDGE_NAME, None, "judge (svgbench shapes judge; not Inception)"
        return None, None, "the shapes judge's weights are not shipped yet (svgbench train judge)"
    w = inception_weights_path()
    if w is not None:
        return "inception-v3-compat", str(w), "inception-v3-compat"
    return None, None, "Inception weights are not on this machine (set SVGBENCH_INCEPTION_WEIGHTS)"


def real_images(dataset, n: int) -> torch.Tensor:
    n = min(n, len(dataset))
    imgs = torch.stack([dataset[i]["image"] for i in range(n)])
    return ((imgs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def class_names(dataset) -> list[str]:
    if getattr(dataset, "classes", None):
        return [str(c) for c in dataset.classes]
    from ..data.shapes import SHAPE_CLASSES

    return list(SHAPE_CLASSES)


def num_classes_of(dataset) -> int:
    return len(class_names(dataset))


def sample_strip(samples: torch.Tensor, classes: list[str], n: int = 10, size: int = 64) -> dict:
    """The first n samples (labels 0..n-1) as one PNG strip of thumbnails at most `size` px, base64, for the
    record: what the scored samples look like, drawn by the report as results/samples.png."""
    import base64
    import io

    from PIL import Image

    x = samples[:n]
    if x.shape[-1] > size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    strip = torch.cat(list(x), dim=2).permute(1, 2, 0).contiguous().numpy()  # H x (n W) x 3
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG", optimize=True)
    return {"png_base64": base64.b64encode(buf.getvalue()).decode("ascii"), "count": len(x),
            "classes": [classes[i % len(classes)] for i in range(len(x))]}


class NoDiffusionModel(LookupError):
    """No shipped diffusion model for this encoder, and training was not asked for."""


# ---------------------------------------------------------------------------------------------
# the diffusion model of an encoder: shipped, or trained here
# ---------------------------------------------------------------------------------------------

def _latents(encoder, dataset, cfg, device, progress=None):
    from ..cache import cached_features
    from ..data import build_dataset

    train = build_dataset(dataset.data_config.replace(split="train", size=cfg.train_size))
    got = cached_features(encoder, train, kind="latent", batch_size=cfg.batch_size, device=device,
                          progress=progress)
    if got.labels is None:
        raise ValueError(f"generation needs class labels in the training split of {train.data_config.key()}")
    return got.features, got.labels


def diffusion_for(encoder: LatentEncoder, dataset, cfg: GenerationConfig, device: str, evaluate=None, log=None):
    """-> (EMA model, latent stats, curve rows, provenance dict)."""
    from ..checkpoints import load_state_dict, read_safetensors_metadata
    from ..diffusion.transport import LatentStats
    from ..train.diffusion import DiffusionConfig, build_diffusion_model, train_diffusion

    name, whash = encoder.spec.name, encoder.weights_hash()
    shipped = SHIPPED / f"{name}.safetensors"
    ncls = num_classes_of(dataset)
    if shipped.exists() and not cfg.retrain and dataset.data_config.name == "shapes":
        meta = read_safetensors_metadata(shipped)
        if meta.get("encoder_weights_hash") == whash:
            dcfg = DiffusionConfig(**json.loads(meta["diffusion_config"]))
            model = build_diffusion_model(dcfg, tuple(json.loads(meta["latent_shape"])), ncls)
            state = load_state_dict(shipped)
            stats = LatentStats(state.pop("stats.mean"), state.pop("stats.std"))
            model.load_state_dict(state)
            model.eval().to(device)
            curve = json.loads(meta.get("curve", "[]"))
            return model, stats.to(device), curve, {"diffusion_weights": f"shipped:{shipped.name}", "train_steps": int(meta["step"])}
    if not (cfg.train or cfg.retrain):
        raise NoDiffusionModel(
            f"no shipped diffusion model matches encoder {name!r} (weights {whash}) on "
            f"{dataset.data_config.name}; run with --train-diffusion to train one (CPU: hours, GPU: minutes)")
    latents, labels = _latents(encoder, dataset, cfg, device)
    run_dir = Path(cfg.runs_dir) / f"{name}-{whash[:8]}-{dataset.data_config.key()}"
    dcfg = DiffusionConfig(size=cfg.size, steps=cfg.train_steps, batch_size=cfg.train_batch, lr=cfg.lr,
                           eval_every=cfg.eval_every, seed=cfg.seed, out=str(run_dir))
    result = train_diffusion(latents, labels, dcfg, num_classes=ncls, evaluate=evaluate,
                             log=log or (lambda s: None))
    from ..train.common import RunDir

    curve = [r for r in RunDir(run_dir).curve() if "fid" in r]
    return result.model.eval(), result.extra["stats"], curve, {"diffusion_weights": f"trained:{run_dir}",
                                                               "train_steps": cfg.train_steps, "run_dir": str(run_dir),
                                                               "diffusion_config": asdict(dcfg)}


def recorded_provenance(prov: dict) -> dict:
    """What of diffusion_for's provenance goes into a result record (not the run's paths or config)."""
    return {k: prov[k] for k in ("diffusion_weights", "train_steps") if k in prov}


def export_diffusion(model, stats, encoder: LatentEncoder, latent_shape, dcfg, curve: list[dict], step: int,
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


# ---------------------------------------------------------------------------------------------
# sampling and scoring
# ---------------------------------------------------------------------------------------------

def shard(n: int, rank: int, world: int) -> list[int]:
    """The global sample indices rank `rank` of `world` generates (contiguous shards)."""
    per = -(-n // world)
    return list(range(rank * per, min(n, (rank + 1) * per)))


@torch.no_grad()
def generate(model, stats, encoder: LatentEncoder, indices, num_classes: int, sampler, *, seed: int, batch_size: int,
             device: str) -> tuple[torch.Tensor, dict]:
    """Samples of the given global indices (uint8 N x 3 x H x W).

    Sample i has label i mod num_classes and noise from (seed, i) alone, so any split of the indices over
    batches or processes gives the same images.
    """
    from ..diffusion.samplers import noise_for_indices

    indices = list(indices)
    c, h, w = model.in_channels, model.input_size, model.input_size
    out, t_sample, t_decode = [], 0.0, 0.0
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        noise = noise_for_indices(idx, (c, h, w), seed, device=device)
        labels = torch.tensor(idx, device=device) % num_classes
        t0 = time.perf_counter()
        z = sampler(model, noise, labels)
        _sync(device)
        t1 = time.perf_counter()
        x = encoder.decode(stats.denormalize(z))
        _sync(device)
        t_sample += t1 - t0
        t_decode += time.perf_counter() - t1
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    n = max(1, len(indices))
    return torch.cat(out), {"sample_s_per_image": t_sample / n, "decode_s_per_image": t_decode / n}


def generate_all(model, stats, encoder, n, num_classes, sampler, *, seed, batch_size, device) -> tuple[torch.Tensor, dict]:
    """All n samples; under torch.distributed each rank makes its shard and all ranks receive the whole set."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return generate(model, stats, encoder, range(n), num_classes, sampler, seed=seed, batch_size=batch_size,
                        device=device)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine, timing = generate(model, stats, encoder, shard(n, rank, world), num_classes, sampler, seed=seed,
                            batch_size=batch_size, device=device)
    parts = [None] * world
    dist.all_gather_object(parts, mine)
    return torch.cat([p for p in parts if p is not None and len(p)]), timing


def score(real: torch.Tensor, fake: torch.Tensor, extractor: str, weights: str | None, device: str,
          kid=True, prc=True) -> dict:
    from ..metrics.fidelity import fidelity_metrics

    m = fidelity_metrics(real, fake, feature_extractor=extractor, weights_path=weights, fid=True, kid=kid, prc=prc,
                         device=device)
    out = {"fid": m["frechet_inception_distance"]}
    if kid:
        out["kid"] = m["kernel_inception_distance_mean"]
    if prc:
        out["precision"], out["recall"] = m["precision"], m["recall"]
    return out


def save_adm_npz(images: torch.Tensor, labels: torch.Tensor, path: str | Path) -> Path:
    """Samples as the ADM evaluator (guided-diffusion's evaluations/evaluator.py) reads them: arr_0 = N x H x W x 3
    uint8, arr_1 = class labels. Written atomically."""
    import io

    import numpy as np

    from ..checkpoints import atomic_write_bytes

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"ADM .npz takes N x 3 x H x W uint8 samples, got {tuple(images.shape)} {images.dtype}")
    buf = io.BytesIO()
    np.savez(buf, images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy().astype(np.int64))
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_generation(encoder: LatentEncoder, dataset, cfg: GenerationConfig = GenerationConfig(), device: str = "cpu",
                   progress=None, log=None, on_model=None) -> dict:
    """Final FID/KID/precision/recall of the encoder's diffusion model (and its FID-vs-training-steps curve).

    `log` receives training progress when a model is trained here; `on_model(model, stats, curve, provenance)`
    sees the diffusion model before it is scored (`svgbench train diffusion --export` ships it from there).
    """
    from ..diffusion.samplers import ODESampler

    if not encoder.spec.has_decoder:
        raise ValueError(f"encoder {encoder.spec.name!r} has no decoder: generated latents cannot be scored")
    encoder = encoder.to(device).eval()
    extractor, weights, label = feature_network(dataset.data_config.name)
    if extractor is None:
        return {"fid": None, "kid": None, "precision": None, "recall": None,
                "unavailable": {m: label for m in ("fid", "kid", "precision", "recall")}}
    ncls = num_classes_of(dataset)
    real = real_images(dataset, cfg.eval_samples)
    curve_real = real[: cfg.curve_samples]

    def evaluate(ema, stats, step):
        was = ema.training
        ema.eval()
        fake, _ = generate_all(ema, stats, encoder, len(curve_real), ncls,
                               ODESampler(cfg.sampler, cfg.sample_steps, cfg.shift), seed=cfg.seed,
                               batch_size=cfg.batch_size, device=device)
        ema.train(was)
        return {"fid": round(score(curve_real, fake, extractor, weights, device, kid=False, prc=False)["fid"], 4)}

    try:
        model, stats, curve, prov = diffusion_for(encoder, dataset, cfg, device, evaluate=evaluate, log=log)
    except NoDiffusionModel as e:
        return {"fid": None, "kid": None, "precision": None, "recall": None,
                "unavailable": {m: str(e) for m in ("fid", "kid", "precision", "recall")}}
    if on_model is not None:
        on_model(model, stats, curve, prov)
    prov = recorded_provenance(prov)
    sampler = ODESampler(cfg.sampler, cfg.sample_steps, cfg.shift)
    fake, timing = generate_all(model, stats, encoder, len(real), ncls, sampler, seed=cfg.seed, batch_size=cfg.batch_size,
                                device=device)
    if progress is not None:
        progress(len(real))
    out = score(real, fake, extractor, weights, device)
    out["samples"] = sample_strip(fake, class_names(dataset))
    if cfg.samples_npz:
        save_adm_npz(fake, torch.arange(len(fake)) % ncls, cfg.samples_npz)
    if cfg.fd_dinov2 and dataset.data_config.name != "shapes":
        from ..metrics.fidelity import DINOV2_EXTRACTOR, dinov2_available, fidelity_metrics

        ok, why = dinov2_available()
        if ok:
            out["fd_dinov2"] = fidelity_metrics(real, fake, feature_extractor=DINOV2_EXTRACTOR,
                                                device=device)["frechet_inception_distance"]
        else:
            out["fd_dinov2"] = None
            out.setdefault("unavailable", {})["fd_dinov2"] = why
    out |= timing | prov
    out["feature_network"] = label
    out["fid_curve"] = [[r["step"], r["fid"]] for r in curve]
    if cfg.fid_targets:  # training efficiency: steps to reach each FID level (None: not within the curve)
        out["steps_to_fid"] = {f"{t:g}": next((s for s, f in out["fid_curve"] if f <= t), None)
                               for t in sorted(cfg.fid_targets, reverse=True)}
    out["num_samples"] = len(real)
    return out


def run_sampling(encoder: LatentEncoder, dataset, cfg: SamplingConfig = SamplingConfig(), device: str = "cpu",
                 progress=None) -> dict:
    """FID and time per image at each (method, steps): the few-step sampling table of one encoder."""
    from ..diffusion.samplers import ODESampler

    if not encoder.spec.has_decoder:
        raise ValueError(f"encoder {encoder.spec.name!r} has no decoder: generated latents cannot be scored")
    encoder = encoder.to(device).eval()
    extractor, weights, label = feature_network(dataset.data_config.name)
    if extractor is None:
        return {"unavailable": {"fid": label}}
    try:
        gcfg = cfg.generation if not cfg.train else dataclasses.replace(cfg.generation, train=True)
        model, stats, _, prov = diffusion_for(encoder, dataset, gcfg, device)
        prov = recorded_provenance(prov)
    except NoDiffusionModel as e:
        return {"unavailable": {"fid": str(e)}}
    ncls = num_classes_of(dataset)
    real = real_images(dataset, cfg.eval_samples)
    rows = []
    for method in cfg.methods:
        for steps in cfg.steps:
            if method == "heun" and steps > cfg.heun_max_steps:
                continue
            sampler = ODESampler(method, steps, cfg.shift)
            fake, timing = generate_all(model, stats, encoder, len(real), ncls, sampler, seed=cfg.seed,
                                        batch_size=cfg.batch_size, device=device)
            fid = score(real, fake, extractor, weights, device, kid=False, prc=False)["fid"]
            rows.append({"method": method, "steps": steps, "nfe": sampler.nfe, "fid": fid, **timing})
            if progress is not None:
                progress(0)
    return {"curve": rows, "feature_network": label, "num_samples": len(real), **prov}
