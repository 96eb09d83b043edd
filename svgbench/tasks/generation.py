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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..diffusion.generate import generate_all, sample_strip, save_adm_npz
from ..diffusion.store import DiffusionConfig, NoDiffusionModel, load_shipped
from ..encoders.base import LatentEncoder


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
    from ..train.diffusion import train_diffusion

    name, whash = encoder.spec.name, encoder.weights_hash()
    ncls = num_classes_of(dataset)
    if not cfg.retrain:
        shipped = load_shipped(encoder, dataset.data_config.name, ncls, device)
        if shipped is not None:
            return shipped
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


# ---------------------------------------------------------------------------------------------
# sampling and scoring
# ---------------------------------------------------------------------------------------------

def steps_to_fid_columns(record: dict) -> dict:
    """The generation table's training-efficiency columns: steps to reach each FID level ("> N": not within the
    N-step curve)."""
    from ..records import feature_network_prefix

    m = record["metrics"]
    curve = m.get("fid_curve") or []
    return {f"steps to {feature_network_prefix(record)}-FID <= {target}": (
        step if step is not None else (f"> {curve[-1][0]}" if curve else None))
        for target, step in (m.get("steps_to_fid") or {}).items()}


def sampling_missing_reason(record: dict, method: str, steps: int) -> str | None:
    """Why the sampling table has no value for (method, steps) of `record`, where the task knows."""
    heun_max = (record.get("config") or {}).get("heun_max_steps")
    if method == "heun" and heun_max is not None and steps > heun_max:
        return f"Heun (2 model evaluations a step) runs up to {heun_max} steps"
    return None


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
