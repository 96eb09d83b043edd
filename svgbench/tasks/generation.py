"""Generation: flow-matching diffusion on an encoder's latents; FID/KID/precision/recall, training
efficiency (FID vs training steps) and few-step sampling (FID and time vs sampler steps).

Per encoder, the diffusion model comes from a checkpoint file (`diffusion`: official SVG-XL `{"ema": ...}`
with its `diffusion_stats`, SiT/DiT-XL/2 on SD-VAE latents, or an svgbench export; CLI `--diffusion
ENCODER=PATH[,stats=PATH]`), else from svgbench's shipped weights for that encoder (when their recorded
encoder-weights hash matches), or is trained here for `train_steps` on the encoder's cached latents of the
training split, with judge-FID evaluated along the way. Samples are decoded by the encoder's own decoder
(a decode-only encoder suffices) and compared with real images of the evaluation split, or, with
`reference_npz`, scored by the ADM protocol (FID / IS / precision / recall against a reference batch .npz,
Inception features only, sharded over torch.distributed ranks).

The sampling task takes the same model: SamplingConfig has the same `diffusion`, `diffusion_stats`,
`diffusion_encoder`, `protocol`, `guidance`, `bf16` and `reference_npz` fields (the CLI's --diffusion sets
both tasks); its nested `generation` config only carries the training settings for --train-diffusion.
Trained runs live in a folder named by a hash of their training settings, so generation and sampling share
one trained model when their settings agree and never resume each other's runs when they differ.

Feature network: torch-fidelity's inception-v3-compat where its weights are on the machine and the
data is not the embedded shapes; on shapes, svgbench's shapes judge (labelled `judge-FID` in every
table). Each sample's noise depends on its index alone, so the sample set does not depend on the batch
size or the number of processes.
"""

from __future__ import annotations
# a change here that can move a number bumps VERSIONS["generation"] / ["sampling"] in svgbench/tasks/builtin.py

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from ..data import class_names, num_classes_of
from ..diffusion.flops import forward_flops, sampling_efficiency
from ..diffusion.generate import generate_all, sample_cache, sample_labels, sample_strip, save_adm_npz
from ..diffusion.samplers import model_kind
from ..diffusion.store import NoDiffusionModel, recorded_provenance
from ..diffusion.task_sampler import make_sampler, precision_fields, sampler_protocol
from ..encoders.base import LatentEncoder
from ..metrics.generative import (FEATURE_BATCH, NO_JUDGE, Scorer, adm_reference_fields, adm_scorer,
                                  feature_network, real_batches, streamed_features)
from ..train.diffusion import diffusion_for


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
    guidance: float = 1.0  # CFG scale (1: none); with a protocol, a value other than 1 overrides the protocol's
    guidance_mode: str = "constant"  # diffusion.samplers.CFG_MODES: SVG's constant / interval / late / early /
    # linear / cfg-star, and window / zero-init (see diffusion.samplers.Guidance)
    guidance_interval: tuple[float, float] | None = None  # mode "window": guide where lo <= t <= hi
    protocol: str | None = None  # a named published setting (diffusion.protocols.PROTOCOLS); None: the fields above
    protocol_steps: int | None = None  # run the protocol at this many steps instead of its own (few-step rows)
    bf16: bool = False  # run the diffusion model's forward under bf16 autocast (the ODE state stays float32)
    precision: str = "fp32"  # PRECISIONS: fp32 | tf32 | bf16 | auto (bf16 autocast + TF32 on CUDA, fp32 elsewhere)
    compile: bool = False  # torch.compile the diffusion model's forward (its compile time counts in the sampling time)
    require_reference: bool = False  # FID only against an ADM reference batch: without reference_npz, n/a pending
    labels: str = "balanced"  # balanced (sample i has class i mod C) | random (uniform, as DiT/SiT's sample_ddp.py)
    diffusion: str | None = None  # diffusion checkpoint file (official SVG-XL, SiT/DiT-XL/2, svgbench export)
    diffusion_stats: str | None = None  # its latent statistics (e.g. the official dinov3_sp_stats.pt)
    diffusion_kind: str | None = None  # "dit" | "sit" | "svg": its process, where its tensors cannot tell (DiT/SiT)
    diffusion_encoder: str | None = None  # the encoder `diffusion` belongs to; others ignore it (None: every one)
    reference_npz: str | None = None  # ADM reference batch (arr_0 N x H x W x 3 uint8, optional mu / sigma)
    fid_targets: tuple[float, ...] = ()  # for each, report the first training step whose FID is at or below it
    fd_dinov2: bool = True  # real data: also FD on DINOv2 ViT-L/14 features where those weights are local
    samples_npz: str | None = None  # write the scored samples here as an ADM-evaluator .npz (arr_0: N x H x W x 3)
    seed: int = 0
    sample_batch_size: int = 256  # diffusion sampling + decoding batch (noise is per sample: the set does not change)
    spread_seeds: tuple[int, ...] = ()  # >= 2 more sampling seeds: the headline FID's spread over seed + these
    # (each costs one more full sampling of eval_samples: off by default, the embedded run's time budget)
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
    # diffusion sampling + decoding batch: a small model on a CPU runs ~3x faster per image at 256 than at 32;
    # noise is per sample, so only float rounding in batched kernels differs from another batch size
    sample_batch_size: int = 256
    heun_max_steps: int = 50  # Heun costs 2 evaluations a step: its curve can stop earlier (fewer step counts)
    shift: float = 0.15
    seed: int = 0
    train: bool = False  # as GenerationConfig.train
    guidance: float = 1.0  # as GenerationConfig (the fields below name the same model as the generation task's)
    protocol: str | None = None  # each row runs the protocol with its (method, steps)
    bf16: bool = False
    precision: str = "fp32"  # as GenerationConfig
    compile: bool = False
    require_reference: bool = False
    labels: str = "balanced"
    diffusion: str | None = None
    diffusion_stats: str | None = None
    diffusion_kind: str | None = None
    diffusion_encoder: str | None = None
    reference_npz: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # training settings for train=True
    # the scorecard's few-step number: this one (method, steps), fixed before the run (never the best point)
    headline: tuple[str, int] = ("euler", 4)
    # F5: FID(k) / FID(ratio_reference) for these Euler step counts, each by one paired bootstrap over the
    # same generated samples (every point shares its noise) and the same reference samples
    ratio_steps: tuple[int, ...] = (1, 2, 4)
    ratio_reference: int = 25


# ---------------------------------------------------------------------------------------------
# sampling and scoring
# ---------------------------------------------------------------------------------------------

def steps_to_fid_columns(record) -> dict:
    """The generation table's training-efficiency columns: steps to reach each FID level ("> N": not within the
    N-step curve)."""
    from ..records import feature_network_prefix

    m = record.metrics
    curve = m.get("fid_curve") or []
    return {f"steps to {feature_network_prefix(record)}-FID <= {target}": (
        step if step is not None else (f"> {curve[-1][0]}" if curve else None))
        for target, step in (m.get("steps_to_fid") or {}).items()}


def sampling_missing_reason(record, method: str, steps: int) -> str | None:
    """Why the sampling table has no value for (method, steps) of `record` (a `records.Record`), where the task
    knows."""
    heun_max = (record.config or {}).get("heun_max_steps")
    if method == "heun" and heun_max is not None and steps > heun_max:
        return f"Heun (2 model evaluations a step) runs up to {heun_max} steps"
    return None


class Progress:
    """Maps work done (any unit) onto the runner's bar of `total` items: `progress(k)` receives the items
    the fraction of work done corresponds to, as the work advances."""

    def __init__(self, progress, total: int, work: float):
        self.progress, self.total, self.work, self.done, self.sent = progress, int(total), float(work), 0.0, 0

    def __call__(self, work: float) -> None:
        self.done += work
        target = min(self.total, int(self.total * self.done / max(self.work, 1e-12)))
        if self.progress is not None and target > self.sent:
            self.progress(target - self.sent)
            self.sent = target


_GEN_METRICS = ("fid", "kid", "precision", "recall", "class_accuracy")
_ADM_METRICS = ("fid", "sfid", "inception_score", "precision", "recall", "class_accuracy")


def _na(metrics, reason: str, pending: bool) -> dict:
    """Every metric None with its reason; pending (recomputed on rerun) when the reason is missing weights."""
    out = {m: None for m in metrics} | {"unavailable": {m: reason for m in metrics}}
    return out | ({"pending": {m: reason for m in metrics}} if pending else {})


def _na_on(dataset, metrics, reason: str) -> dict:
    """_na(metrics, reason, pending=True), except the judge's class accuracy on data the judge was not trained for:
    its own reason, which no weights arriving later would change (so not pending)."""
    out = _na(metrics, reason, pending=True)
    if "class_accuracy" in metrics and dataset.data_config.spec().feature_network != "judge":
        out["unavailable"]["class_accuracy"] = NO_JUDGE
        del out["pending"]["class_accuracy"]
    return out


def score_adm(model, stats, encoder, n, ncls, sampler, feats_fn, ref, cfg, device, writer=None, progress=None):
    """ADM metrics of n samples -> (metrics, first images, timing)."""
    from ..diffusion.generate import generate_features
    from ..metrics.fidelity import adm_metrics

    feats, first, timing = generate_features(model, stats, encoder, n, ncls, sampler, feats_fn, seed=cfg.seed,
                                              batch_size=cfg.sample_batch_size, device=device, writer=writer,
                                              progress=progress)
    return adm_metrics(feats, ref), first, timing


def run_generation(encoder: LatentEncoder, dataset, cfg: GenerationConfig = GenerationConfig(), device: str = "cpu",
                   progress=None, log=None, on_model=None) -> dict:
    """Final FID/KID/precision/recall of the encoder's diffusion model (and its FID-vs-training-steps curve);
    with cfg.reference_npz, FID / Inception Score / precision / recall by the ADM protocol instead.

    `log` receives training progress when a model is trained here; `on_model(model, stats, curve, provenance)`
    sees the diffusion model before it is scored (`svgbench train diffusion --export` ships it from there).
    """
    from ..diffusion.samplers import ODESampler

    if not encoder.spec.has_decoder:
        raise ValueError(f"encoder {encoder.spec.name!r} has no decoder: generated latents cannot be scored")
    encoder = encoder.to(device).eval()
    if cfg.reference_npz or cfg.require_reference:
        return _run_generation_adm(encoder, dataset, cfg, device, progress, log, on_model)
    extractor, weights, label = feature_network(dataset.data_config.name)
    if extractor is None:
        return _na_on(dataset, _GEN_METRICS, label)
    ncls = num_classes_of(dataset)
    n = min(cfg.eval_samples, len(dataset))
    curve_scorer = []  # built at the first evaluation: a shipped or checkpoint model never needs it

    def evaluate(ema, stats, step):
        if not curve_scorer:
            curve_scorer.append(Scorer(extractor, weights, real_batches(dataset, min(n, cfg.curve_samples),
                                                                        FEATURE_BATCH), device))
        sc = curve_scorer[0]
        was = ema.training
        ema.eval()
        fake, _ = generate_all(ema, stats, encoder, sc.n, ncls,
                               ODESampler(cfg.sampler, cfg.sample_steps, cfg.shift), seed=cfg.seed,
                               batch_size=cfg.sample_batch_size, device=device)
        ema.train(was)
        got = sc.score(sc.features(fake), kid=False, prc=False, seed=cfg.seed + step)
        return {"fid": round(got["fid"], 4), "fid_ci_low": round(got["ci"]["fid"]["ci_low"], 4),
                "fid_ci_high": round(got["ci"]["fid"]["ci_high"], 4)}

    try:
        model, stats, curve, prov = diffusion_for(encoder, dataset, cfg, device, evaluate=evaluate, log=log)
    except NoDiffusionModel as e:  # pending: a model trained and exported later is picked up by a rerun
        return _na_on(dataset, _GEN_METRICS, str(e))
    if on_model is not None:
        on_model(model, stats, curve, prov)
    prov = recorded_provenance(prov)
    ncls = _model_classes(model, ncls)
    sampler = make_sampler(cfg, kind=model_kind(model))
    seeds = (cfg.seed, *cfg.spread_seeds) if cfg.spread_seeds else (cfg.seed,)
    # the bar: sampling batches of every seed, then the scoring (about one more sampling pass)
    bar = Progress(progress, len(dataset), n * (len(seeds) + 1))
    fake, timing = generate_all(model, stats, encoder, n, ncls, sampler, seed=cfg.seed,
                                batch_size=cfg.sample_batch_size, device=device, progress=bar,
                                cache=sample_cache())
    scorer = Scorer(extractor, weights, real_batches(dataset, n, FEATURE_BATCH), device)
    feats = scorer.features(fake)
    out = scorer.score(feats, seed=cfg.seed)
    bar(n)
    labels = sample_labels(range(len(fake)), ncls, cfg.seed, cfg.labels)  # sample i's conditioning class
    _add_class_accuracy(out, scorer, feats, ncls, labels)
    if len(seeds) > 1:
        fids = [out["fid_plugin"]]  # plug-in for every seed: the other seeds are scored without an interval
        for sd in seeds[1:]:
            more, _ = generate_all(model, stats, encoder, n, ncls, sampler, seed=sd,
                                   batch_size=cfg.sample_batch_size, device=device, progress=bar)
            fids.append(scorer.score(scorer.features(more), kid=False, prc=False, ci=False)["fid_plugin"])
        from ..metrics.stats import seed_spread

        out["seed_spread"] = {"fid": seed_spread(fids, seeds)}
    out["samples"] = sample_strip(fake, _class_labels(dataset, ncls), labels=labels[:10])
    if cfg.samples_npz:
        save_adm_npz(fake, labels, cfg.samples_npz)
    # FD-DINOv2 goes beside Inception-FID on natural images; judge data has its own network
    if cfg.fd_dinov2 and dataset.data_config.spec().feature_network == "inception":
        from ..metrics.fidelity import DINOV2_EXTRACTOR, dinov2_available, metrics_from_features, network_extractor

        ok, why = dinov2_available()
        if ok:  # fidelity_metrics' FD from streamed real features (its batches of 64, its statistics)
            ext, layer = network_extractor(DINOV2_EXTRACTOR, None, device)
            real_f = streamed_features(ext, real_batches(dataset, n, FEATURE_BATCH), device)[layer]
            fake_f = streamed_features(ext, [fake], device)[layer]
            out["fd_dinov2"] = metrics_from_features(fake_f, real_f, fid=True)["frechet_inception_distance"]
        else:
            out["fd_dinov2"] = None
            out.setdefault("unavailable", {})["fd_dinov2"] = why
            out.setdefault("pending", {})["fd_dinov2"] = why
    out |= timing | prov | _efficiency(model, sampler, cfg, timing, device)
    out["feature_network"] = label
    out["fid_curve"] = _fid_curve(curve)
    if curve and len(out["fid_curve"][0]) < 4:
        out.setdefault("notes", {})["fid_curve"] = (
            "the FID-vs-training-steps points come from the shipped model's stored curve, which was evaluated "
            "without intervals: they carry none")
    if cfg.fid_targets:  # training efficiency: steps to reach each FID level (None: not within the curve)
        out["steps_to_fid"] = {f"{t:g}": next((p[0] for p in out["fid_curve"] if p[1] <= t), None)
                               for t in sorted(cfg.fid_targets, reverse=True)}
    out["num_samples"] = n
    out["stats_s"] = scorer.stats_s
    return out | _protocol_fields(cfg, sampler)


def _fid_curve(curve: list[dict]) -> list[list]:
    """Curve rows -> [step, fid, ci_low, ci_high] where the rows carry an interval, else [step, fid]."""
    return [[r["step"], r["fid"], r["fid_ci_low"], r["fid_ci_high"]] if "fid_ci_low" in r and "fid_ci_high" in r
            else [r["step"], r["fid"]] for r in curve]


def _add_class_accuracy(out: dict, scorer: Scorer, feats: dict, ncls: int, labels: torch.Tensor) -> None:
    """The record's class_accuracy fields (F6): value, interval and per-sample hits, or n/a with the reason."""
    got = scorer.class_accuracy(feats, labels, ncls)
    if isinstance(got, str):
        out["class_accuracy"] = None
        out.setdefault("unavailable", {})["class_accuracy"] = got
        return
    out["class_accuracy"] = got["value"]
    out.setdefault("per_item", {})["class_accuracy"] = got["per_item"]
    out.setdefault("ci", {})["class_accuracy"] = got["ci"]


def _model_classes(model, dataset_classes: int) -> int:
    """Sample labels cycle over the model's classes (a published checkpoint's 1000, not the folder's)."""
    return int(getattr(model, "num_classes", dataset_classes) or dataset_classes)


def _class_labels(dataset, ncls: int) -> list[str]:
    names = class_names(dataset)
    return names if len(names) == ncls else [str(i) for i in range(ncls)]


def _efficiency(model, sampler, cfg, timing, device) -> dict:
    eff = sampling_efficiency(model, sampler, cfg.batch_size, timing["sample_s_per_image"], device)
    return {"sample_gflops_per_image": eff["gflops_per_image"], "sample_mfu": eff["mfu"]}


def _protocol_fields(cfg, sampler) -> dict:
    g = sampler.guidance
    return {"protocol": sampler_protocol(cfg, sampler), "sampler_method": sampler.method, "sampler_steps": sampler.steps,
            "sampler_nfe": sampler.nfe,
            "sampler_shift": sampler.shift, "guidance_scale": g.scale, "guidance_mode": g.mode} \
        | precision_fields(cfg, sampler)


def _run_generation_adm(encoder, dataset, cfg, device, progress, log, on_model) -> dict:
    from ..metrics.fidelity import AdmNpzWriter

    feats_fn, ref, label = adm_scorer(cfg.reference_npz, cfg.batch_size, device, "generation")
    if feats_fn is None:
        return _na(_ADM_METRICS, label, pending=True)
    try:
        model, stats, curve, prov = diffusion_for(encoder, dataset, cfg, device, log=log)
    except NoDiffusionModel as e:
        return _na_on(dataset, _ADM_METRICS, str(e))
    if on_model is not None:
        on_model(model, stats, curve, prov)
    ncls = _model_classes(model, num_classes_of(dataset))
    sampler = make_sampler(cfg, kind=model_kind(model))
    n, res = cfg.eval_samples, dataset.data_config.resolution
    writer = AdmNpzWriter(cfg.samples_npz, n, res, res) if cfg.samples_npz else None
    out, first, timing = score_adm(model, stats, encoder, n, ncls, sampler, feats_fn, ref, cfg, device,
                                   writer=writer, progress=Progress(progress, len(dataset), n))
    labels = sample_labels(range(n), ncls, cfg.seed, cfg.labels)  # sample i's conditioning class
    if writer is not None:
        writer.close(arr_1=labels.numpy())
    from ..metrics.fidelity import SFID_NA

    out |= {"kid": None, "class_accuracy": None,
            "unavailable": {"kid": "not part of the ADM evaluation protocol", "class_accuracy": NO_JUDGE}
            | ({"sfid": SFID_NA} if out.get("sfid") is None else {}),
            "samples": sample_strip(first, _class_labels(dataset, ncls), labels=labels[:10]),
            "feature_network": label,
            "num_samples": n, "fid_curve": []} | adm_reference_fields(cfg.reference_npz, ref)
    return out | timing | recorded_provenance(prov) | _efficiency(model, sampler, cfg, timing, device) \
        | _protocol_fields(cfg, sampler)


def _diffusion_of_sampling(encoder, dataset, cfg: SamplingConfig, device):
    gcfg = dataclasses.replace(cfg.generation, train=cfg.train or cfg.generation.train, diffusion=cfg.diffusion,
                               diffusion_stats=cfg.diffusion_stats, diffusion_kind=cfg.diffusion_kind,
                               diffusion_encoder=cfg.diffusion_encoder)
    model, stats, _, prov = diffusion_for(encoder, dataset, gcfg, device)
    return model, stats, recorded_provenance(prov)


def run_sampling(encoder: LatentEncoder, dataset, cfg: SamplingConfig = SamplingConfig(), device: str = "cpu",
                 progress=None) -> dict:
    """FID and time per image at each (method, steps): the few-step sampling table of one encoder. Each row
    also carries GFLOPs per image and MFU; with reference_npz, FID / IS / precision / recall by the ADM
    protocol."""
    from ..diffusion.generate import generate_point_features
    from ..metrics.fidelity import adm_metrics

    if not encoder.spec.has_decoder:
        raise ValueError(f"encoder {encoder.spec.name!r} has no decoder: generated latents cannot be scored")
    encoder = encoder.to(device).eval()
    if cfg.reference_npz or cfg.require_reference:
        feats_fn, ref, label = adm_scorer(cfg.reference_npz, cfg.batch_size, device, "sampling")
        if feats_fn is None:
            return {"unavailable": {"fid": label}, "pending": {"fid": label}}
    else:
        extractor, weights, label = feature_network(dataset.data_config.name)
        if extractor is None:
            return {"unavailable": {"fid": label}, "pending": {"fid": label}}
    try:
        model, stats, prov = _diffusion_of_sampling(encoder, dataset, cfg, device)
    except NoDiffusionModel as e:
        return {"unavailable": {"fid": str(e)}, "pending": {"fid": str(e)}}
    ncls = _model_classes(model, num_classes_of(dataset))
    n = cfg.eval_samples if cfg.reference_npz else min(cfg.eval_samples, len(dataset))
    points = [(method, steps) for method in cfg.methods for steps in cfg.steps
              if not (method == "heun" and steps > cfg.heun_max_steps)]
    samplers = {p: make_sampler(cfg, *p, kind=model_kind(model)) for p in points}
    # the bar: a point costs about (model evaluations + 1 for decoding and scoring) per sample
    cost = {p: (samplers[p].nfe or 1) + 1 for p in points}  # an adaptive solver's evaluations: unknown yet
    bar = Progress(progress, len(dataset), n * sum(cost.values()))
    scorer = None if cfg.reference_npz else Scorer(extractor, weights, real_batches(dataset, n, FEATURE_BATCH),
                                                   device)
    # every point on the same noise in one pass: the evaluations they share run once (each point's time
    # stays its cost alone); only each point's features are kept. The point the generation task samples with
    # (its sampler and steps) is sampled in the generation's batches, so one cell's samples serve the other
    # (`sample_cache`): the records are the same whichever cell ran first
    got = generate_point_features(model, stats, encoder, n, ncls, samplers,
                                  feats_fn if scorer is None else scorer.features, seed=cfg.seed,
                                  batch_size=cfg.sample_batch_size, device=device, keep=0,
                                  progress=lambda p, k: bar(k * (cost[p] - 1)), cache=sample_cache(),
                                  blocks=_generation_blocks(cfg, points, device))
    rows, per_forward = [], forward_flops(model, cfg.batch_size, device)
    for p in points:
        sampler, (feats, _, timing) = samplers[p], got[p]
        if scorer is None:
            m = adm_metrics(feats, ref)
        else:
            fid = scorer.score(feats, kid=False, prc=False, seed=cfg.seed)
            ci = fid["ci"]["fid"]
            m = {"fid": fid["fid"], "fid_plugin": fid["fid_plugin"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                 "n": ci["n"], "method_ci": ci["method"], "level": ci["level"]}
        bar(n)
        eff = sampling_efficiency(model, sampler, cfg.batch_size, timing["sample_s_per_image"], device,
                                  per_forward)
        rows.append({"method": sampler.method, "steps": p[1], "nfe": sampler.nfe, **m, **timing, **eff})
    extra = {"headline": _headline_point(cfg, points)}
    if scorer is not None:
        t0 = time.perf_counter()
        extra |= _few_step_ratios(cfg, points, {p: got[p][0][scorer.layer] for p in points},
                                  scorer.real[scorer.layer])
        scorer.stats_s += time.perf_counter() - t0
    stats_s = {} if scorer is None else {"stats_s": scorer.stats_s}
    return {"curve": rows, "feature_network": label, "num_samples": n,
            "protocol": sampler_protocol(cfg, samplers[points[0]]) if points else cfg.protocol,
            **precision_fields(cfg, samplers[points[0]] if points else None),
            **(adm_reference_fields(cfg.reference_npz, ref) if scorer is None else {}), **extra, **stats_s, **prov}


def _generation_blocks(cfg: SamplingConfig, points, device: str) -> dict:
    """{point: batch size} for the sampling point that the generation task runs (cfg.generation's sampler and
    steps), sampled in the generation's batches; {} off the CPU, where samples are not cached."""
    g = cfg.generation
    p = (g.sampler, g.sample_steps)
    return {p: g.sample_batch_size} if p in points and torch.device(device).type == "cpu" else {}


def _headline_point(cfg: SamplingConfig, points) -> dict:
    """The scorecard's few-step point as the record states it: {"method", "steps"}, or {"missing": why}."""
    method, steps = cfg.headline
    if (method, int(steps)) in points:
        return {"method": method, "steps": int(steps)}
    return {"missing": f"the headline point ({method}, {steps} steps) is not among this run's sampler points"}


def _few_step_ratios(cfg: SamplingConfig, points, feats: dict, real) -> dict:
    """{"few_step_ratios": [...]}: FID(euler, k) / FID(euler, reference) with the paired log-ratio interval
    (metrics.stats.frechet_log_ratio_ci) for each of cfg.ratio_steps run here, or a reason why none."""
    from ..metrics import stats

    euler = sorted(s for m, s in points if m == "euler")
    ref = cfg.ratio_reference if cfg.ratio_reference in euler else (euler[-1] if euler else None)
    ks = [k for k in cfg.ratio_steps if k in euler and ref is not None and k < ref]
    if not ks:
        return {"few_step_ratios": [], "notes": {"few_step_ratios": "no Euler point below a reference point"}}
    out = []
    r = real.double().numpy()
    for k in ks:
        res = stats.frechet_log_ratio_ci(feats[("euler", k)].double().numpy(), feats[("euler", ref)].double().numpy(),
                                         r, seed=cfg.seed)
        # "method" names the sampler, as in the curve's rows; the interval's method goes to "method_ci"
        out.append({**res, "method": "euler", "steps": k, "reference_steps": ref, "method_ci": res["method"]})
    return {"few_step_ratios": out}
