"""The sampler a generation or sampling config asks for, as the tasks run it: its protocol or its own sampler
fields (`make_sampler`), the arithmetic of the model's forward (`PRECISIONS`: fp32, TF32, bf16 autocast, auto) chosen
on the device each call runs on, TF32 switched on for the call only, and torch.compile of the forward
(`TaskSampler`); what a record says about them (`precision_fields`, `sampler_protocol`).

A config is read by its fields alone (a generation config has `sampler`, `sample_steps` and `protocol_steps`; a
sampling config passes each point's method and steps), so this module knows no task.
"""

from __future__ import annotations
# a change here that can move a number bumps VERSIONS["generation"] / ["sampling"] in svgbench/tasks/builtin.py

import dataclasses

import torch


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


def precision_fields(cfg, sampler) -> dict:
    """What a record says about the arithmetic and compilation its samples came from (the config's precision and
    compile are in its cell key too; the device type as well, which `auto` depends on)."""
    autocast = getattr(sampler, "autocast", None) if sampler is not None else (torch.bfloat16 if cfg.bf16 else None)
    return {"autocast": "bf16" if autocast == torch.bfloat16 else None,
            # not "precision": that key is the precision of precision / recall
            "numeric_precision": getattr(sampler, "precision", None) or precision_label(autocast, False),
            "compiled": bool(getattr(cfg, "compile", False)), "labels": getattr(cfg, "labels", "balanced")}


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
    if isinstance(m, torch.nn.Module) and not hasattr(m, "_svgbench_eager_forward"):  # not compiled yet
        m._svgbench_eager_forward = m.forward  # FLOP counting runs it: no recompile for another batch size
        m.forward = torch.compile(m.forward)


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
    from .generate import LABEL_POLICIES

    precision_plan(cfg, "cpu")  # an unknown precision fails before any work
    if getattr(cfg, "labels", "balanced") not in LABEL_POLICIES:
        raise ValueError(f"labels {cfg.labels!r}: one of {', '.join(LABEL_POLICIES)}")
    return TaskSampler(lambda autocast: _make_sampler(cfg, method, steps, kind, autocast), cfg)


def _make_sampler(cfg, method, steps, kind, autocast):
    from .protocols import DEFAULT_PROTOCOL, build_sampler, check_kind
    from .samplers import Guidance, ODESampler

    if kind == "dit":
        if method not in (None, "ddpm"):
            raise ValueError(f"a kind=dit checkpoint is sampled by DiT's DDPM, not {method!r}: set "
                             'sampling.methods=["ddpm"] (its steps respace DiT\'s 1000)')
        cfg = cfg if cfg.protocol else dataclasses.replace(cfg, protocol=DEFAULT_PROTOCOL["dit"])
    if cfg.protocol:
        check_kind(cfg.protocol, kind)
        over = {"autocast": autocast}
        if not hasattr(cfg, "protocol_steps"):  # a sampling config: each point runs at its own (method, steps)
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


def sampler_protocol(cfg, sampler) -> str | None:
    """The protocol a sampler ran: the config's, or DiT's own where a kind=dit checkpoint named none."""
    return cfg.protocol or ("dit-paper" if sampler.method == "ddpm" else None)
