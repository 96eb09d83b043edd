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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..diffusion.generate import generate_all, sample_labels, sample_strip, save_adm_npz
from ..diffusion.store import DiffusionConfig, NoDiffusionModel, load_shipped
from ..encoders.base import LatentEncoder
from ..metrics.generative import (FEATURE_BATCH, NO_JUDGE, Scorer, adm_reference_fields, adm_scorer,
                                  feature_network, real_batches, streamed_features)


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
# feature network
# ---------------------------------------------------------------------------------------------


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
    """-> (ShardedStore of the training split's latents, int64 labels): streamed by the training, never loaded whole."""
    from ..cache import cached_features
    from ..data import build_dataset

    data = dataset.data_config  # the dataset's own training split (its spec's: "train" for the built-ins)
    train = build_dataset(data.replace(split=data.spec().train_split, size=cfg.train_size))
    got = cached_features(encoder, train, kind="latent", batch_size=cfg.batch_size, device=device,
                          progress=progress)
    if got.labels is None:
        raise ValueError(f"generation needs class labels in the training split of {train.data_config.key()}")
    return got.store, got.labels


MAX_TOKEN_GRID = 16  # SiT/DiT's token grid at 256 px: SD-VAE's 32 x 32 latent at patch 2, SVG's 16 x 16 at patch 1


def patch_for_grid(side: int) -> int:
    """The diffusion model's patch size for a latent `side` cells wide: the smallest divisor of `side` that leaves at
    most MAX_TOKEN_GRID tokens a side, so that any latent costs about the tokens of SiT-XL/2 on SD-VAE."""
    return next(p for p in range(1, side + 1) if side % p == 0 and side // p <= MAX_TOKEN_GRID)


def diffusion_for(encoder: LatentEncoder, dataset, cfg: GenerationConfig, device: str, evaluate=None, log=None):
    """-> (EMA model, latent stats, curve rows, provenance dict)."""
    from ..train.diffusion import train_diffusion

    name, whash = encoder.spec.name, encoder.weights_hash()
    got = checkpoint_model(encoder, dataset, cfg, device)
    if got is not None:
        return got
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
    dcfg = DiffusionConfig(size=cfg.size, patch_size=patch_for_grid(latents.row_shape[-1]), steps=cfg.train_steps,
                           batch_size=cfg.train_batch, lr=cfg.lr, eval_every=cfg.eval_every, seed=cfg.seed)
    run_dir = Path(cfg.runs_dir) / f"{name}-{whash[:8]}-{dataset.data_config.key()}-{_training_key(dcfg, cfg)}"
    dcfg = dataclasses.replace(dcfg, out=str(run_dir))
    result = train_diffusion(latents, labels, dcfg, num_classes=ncls, evaluate=evaluate,
                             log=log or (lambda s: None))
    from ..train.common import RunDir

    curve = [r for r in RunDir(run_dir).curve() if "fid" in r]
    return result.model.eval(), result.extra["stats"], curve, {"diffusion_weights": f"trained:{run_dir}",
                                                               "train_steps": cfg.train_steps, "run_dir": str(run_dir),
                                                               "diffusion_config": asdict(dcfg)}


def shipped_model_files(encoder: LatentEncoder) -> dict:
    """The shipped diffusion model file of `encoder` (whether or not it exists): part of a generation or
    sampling cell's key, so a retrained and re-exported model recomputes the cells that scored the old one."""
    from ..diffusion.store import SHIPPED

    return {"shipped_diffusion": str(SHIPPED / f"{encoder.spec.name}.safetensors")}


def _training_key(dcfg: DiffusionConfig, cfg) -> str:
    """8 hex digits naming a training run's settings: runs with other settings never resume this one."""
    import hashlib
    import json

    d = asdict(dcfg) | {"train_size": cfg.train_size}
    d.pop("out")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def checkpoint_model(encoder: LatentEncoder, dataset, cfg, device: str):
    """The model of cfg.diffusion for this encoder -> (model, stats, [], provenance), or None when the config
    names no checkpoint or names one for another encoder (`diffusion_encoder`). The load is strict: a latent
    shape that differs from the encoder's raises CheckpointError naming both."""
    from ..diffusion.official import load_diffusion_checkpoint

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


PRECISIONS = ("fp32", "tf32", "bf16", "auto")


def precision_plan(cfg, device_type: str) -> tuple[torch.dtype | None, bool]:
    """-> (autocast dtype of the model's forward, TF32 matmuls) of a config's `precision` (and legacy `bf16`) on
    a device type. The ODE / DDPM state stays float32 in every plan: the samplers integrate in float32."""
    precision = getattr(cfg, "precision", "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)} (auto: bf16 autocast + TF32 "
                         "on CUDA, fp32 elsewhere)")
    cuda = device_type == "cuda"
    bf16 = cfg.bf16 or precision == "bf16" or (precision == "auto" and cuda)
    return (torch.bfloat16 if bf16 else None), cuda and precision in ("tf32", "auto")


def precision_label(autocast, tf32: bool) -> str:
    """The record's `numeric_precision`: fp32, tf32, bf16-autocast or bf16-autocast+tf32 (fp32 ops under
    autocast)."""
    return "+".join((["bf16-autocast"] if autocast == torch.bfloat16 else []) + (["tf32"] if tf32 else [])) or "fp32"


class TaskSampler:
    """A sampler as the tasks run it: the precision plan is chosen by the device of the noise at each call
    (`precision_plan`; one inner sampler per plan), TF32 is switched on for the call only (other cells of the
    run keep full fp32 matmuls), and with `compile` the model's forward is torch.compile'd once per model.
    Every other attribute is the inner sampler's (method, steps, nfe, guidance, ...)."""

    def __init__(self, build, cfg):
        self._build, self._cfg, self._inner = build, cfg, {}
        self.compiled = bool(getattr(cfg, "compile", False))
        self.labels = getattr(cfg, "labels", "balanced")  # read by diffusion.generate when it draws the labels
        self.tf32 = False
        self._active = self._sampler(precision_plan(cfg, "cpu")[0])

    def _sampler(self, autocast):
        if autocast not in self._inner:
            self._inner[autocast] = self._build(autocast)
        return self._inner[autocast]

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._active, name)

    @property
    def precision(self) -> str:
        return precision_label(self._active.autocast, self.tf32)

    def __call__(self, model, noise: torch.Tensor, labels: torch.Tensor, **kw):
        autocast, self.tf32 = precision_plan(self._cfg, noise.device.type)
        self._active = self._sampler(autocast)
        if self.compiled:
            compile_forward(model)
        with tf32_matmuls(self.tf32):
            return self._active(model, noise, labels, **kw)


def compile_forward(model) -> None:
    """torch.compile the forward of the nn.Module under `model` (which may be a counting wrapper with `.model`),
    once: the module keeps its attributes and state-dict names, and FLOP counting still sees its operations."""
    m = model
    while not isinstance(m, torch.nn.Module) and hasattr(m, "model"):
        m = m.model
    if isinstance(m, torch.nn.Module) and not getattr(m, "_svgbench_compiled", False):
        m._svgbench_eager_forward = m.forward  # FLOP counting runs it: no recompile for another batch size
        m.forward = torch.compile(m.forward)
        m._svgbench_compiled = True


class tf32_matmuls:
    """CUDA matmuls and convolutions with TF32 inside the block (as SiT's and DiT's sample_ddp.py allow), the
    previous setting restored after it; off inside the block when `on` is False."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.on

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.old


def make_sampler(cfg, method: str | None = None, steps: int | None = None, kind: str | None = None):
    """The sampler of a generation or sampling config: its protocol (with method / steps / guidance
    overrides) or its own sampler fields, run as a TaskSampler (cfg.precision's plan on the device it runs on,
    bf16 autocast when cfg.bf16, torch.compile when cfg.compile). kind: the model's declared kind
    (`samplers.model_kind`): a DiT checkpoint is sampled by its DDPM protocol (dit-paper unless the config
    names another DiT one); a flow protocol for it, or DiT's for a flow model, is refused."""
    from ..diffusion.generate import LABEL_POLICIES

    precision_plan(cfg, "cpu")  # an unknown precision fails before any work
    if getattr(cfg, "labels", "balanced") not in LABEL_POLICIES:
        raise ValueError(f"labels {cfg.labels!r}: one of {', '.join(LABEL_POLICIES)}")
    return TaskSampler(lambda autocast: _make_sampler(cfg, method, steps, kind, autocast), cfg)


def _make_sampler(cfg, method, steps, kind, autocast):
    from ..diffusion.protocols import DEFAULT_PROTOCOL, build_sampler, check_kind
    from ..diffusion.samplers import Guidance, ODESampler

    if kind == "dit":
        if method not in (None, "ddpm"):
            raise ValueError(f"a kind=dit checkpoint is sampled by DiT's DDPM, not {method!r}: set "
                             'sampling.methods=["ddpm"] (its steps respace DiT\'s 1000)')
        cfg = cfg if cfg.protocol else dataclasses.replace(cfg, protocol=DEFAULT_PROTOCOL["dit"])
    if cfg.protocol:
        check_kind(cfg.protocol, kind)
        over = {"autocast": autocast}
        if not isinstance(cfg, GenerationConfig):
            over |= {"steps": steps} if kind == "dit" else {"method": method, "steps": steps}
        elif cfg.protocol_steps:
            over["steps"] = cfg.protocol_steps
        if cfg.guidance != 1.0:
            over["scale"] = cfg.guidance
        return build_sampler(cfg.protocol, **over)
    method = method or getattr(cfg, "sampler", "euler")
    steps = steps or getattr(cfg, "sample_steps", 25)
    mode = getattr(cfg, "guidance_mode", "constant")
    guidance = Guidance(scale=cfg.guidance, mode=mode, interval=getattr(cfg, "guidance_interval", None))
    return ODESampler(method, steps, cfg.shift, guidance, autocast=autocast)


def model_kind(model) -> str | None:
    from ..diffusion.samplers import model_kind as kind_of

    return kind_of(model)


def sampler_protocol(cfg, sampler) -> str | None:
    """The protocol a sampler ran: the config's, or DiT's own where a kind=dit checkpoint named none."""
    return cfg.protocol or ("dit-paper" if sampler.method == "ddpm" else None)


def forward_batches(sampler) -> float:
    """Model forwards per sampled batch, in units of one forward at the batch size: a guided evaluation runs
    the 2B batch [cond, uncond], a zero-init step none (the sampler counts them: its guidance schedule)."""
    return sampler.forward_batches()


def forward_flops(model, batch: int, device: str) -> float:
    """FLOPs of one model forward per image at batch size `batch` (torch's FlopCounterMode): the same for
    every sampler of the model, so a cell counts it once."""
    from ..diffusion.flops import count_flops

    c, h = model.in_channels, model.input_size
    x = torch.zeros(batch, c, h, h, device=device)
    t, y = torch.full((batch,), 0.5, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    eager = getattr(model, "_svgbench_eager_forward", None)
    compiled = model.forward
    if eager is not None:  # a compiled forward would recompile for this batch size just to be counted
        model.forward = eager
    try:
        with torch.no_grad():
            return count_flops(model, x, t, y) / batch
    finally:
        if eager is not None:
            model.forward = compiled


def sampling_efficiency(model, sampler, batch: int, sample_s_per_image: float, device: str,
                        per_forward: float | None = None) -> dict:
    """{"gflops_per_image", "mfu"}: FLOPs of one model forward at the sampling batch size (`per_forward`, else
    counted here by `forward_flops`) x forwards per batch, per image; MFU against the device's dense peak for
    the arithmetic used (None where the peak is unknown, e.g. on a CPU)."""
    from ..diffusion.flops import mfu, precision_of

    if per_forward is None:
        per_forward = forward_flops(model, batch, device)
    per_image = per_forward * forward_batches(sampler)
    # a TaskSampler switches TF32 on only inside its calls: its own word says whether the run used it
    prec = "tf32" if getattr(sampler, "tf32", False) and sampler.autocast is None else \
        precision_of(sampler.autocast, device)
    util = mfu(per_image, sample_s_per_image, device, prec)
    return {"gflops_per_image": round(per_image / 1e9, 4), "mfu": None if util is None else round(util, 5)}


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
    _add_class_accuracy(out, scorer, feats, ncls, sample_labels(range(len(fake)), ncls, cfg.seed, cfg.labels))
    if len(seeds) > 1:
        fids = [out["fid_plugin"]]  # plug-in for every seed: the other seeds are scored without an interval
        for sd in seeds[1:]:
            more, _ = generate_all(model, stats, encoder, n, ncls, sampler, seed=sd,
                                   batch_size=cfg.sample_batch_size, device=device, progress=bar)
            fids.append(scorer.score(scorer.features(more), kid=False, prc=False, ci=False)["fid_plugin"])
        from ..metrics.stats import seed_spread

        out["seed_spread"] = {"fid": seed_spread(fids, seeds)}
    out["samples"] = sample_strip(fake, _class_labels(dataset, ncls),
                                  labels=sample_labels(range(10), ncls, cfg.seed, cfg.labels))
    if cfg.samples_npz:
        save_adm_npz(fake, sample_labels(range(len(fake)), ncls, cfg.seed, cfg.labels), cfg.samples_npz)
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


def precision_fields(cfg, sampler) -> dict:
    """What a record says about the arithmetic and compilation its samples came from (the config's precision and
    compile are in its cell key too; the device type as well, which `auto` depends on)."""
    autocast = getattr(sampler, "autocast", None) if sampler is not None else (torch.bfloat16 if cfg.bf16 else None)
    return {"autocast": "bf16" if autocast == torch.bfloat16 else None,
            # not "precision": that key is the precision of precision / recall
            "numeric_precision": getattr(sampler, "precision", None) or precision_label(autocast, False),
            "compiled": bool(getattr(cfg, "compile", False)), "labels": getattr(cfg, "labels", "balanced")}


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
    if writer is not None:
        writer.close(arr_1=sample_labels(range(n), ncls, cfg.seed, cfg.labels).numpy())
    from ..metrics.fidelity import SFID_NA

    out |= {"kid": None, "class_accuracy": None,
            "unavailable": {"kid": "not part of the ADM evaluation protocol", "class_accuracy": NO_JUDGE}
            | ({"sfid": SFID_NA} if out.get("sfid") is None else {}),
            "samples": sample_strip(first, _class_labels(dataset, ncls),
                                    labels=sample_labels(range(10), ncls, cfg.seed, cfg.labels)),
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


def sample_cache():
    """The decoded-sample cache the generation and sampling cells share (`diffusion.generate.SampleCache`),
    beside the feature cache: with the embedded preset the sampling cell's Euler 25-step point is the
    generation cell's first batch, which costs 25 model evaluations a sample."""
    from ..cache import default_cache_dir
    from ..diffusion.generate import SampleCache

    return SampleCache(default_cache_dir() / "samples")


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
