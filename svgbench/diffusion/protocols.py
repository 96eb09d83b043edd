"""Named sampling protocols: the published settings of SVG, SiT and DiT, fixed in one place.

A protocol fixes the process (flow ODE or DiT's DDPM), the sampler (method, steps, time shift, tolerances) and
the guidance (scale, mode, channels). `build_sampler(name, **overrides)` returns the sampler; overrides (e.g.
steps=5 for a few-step row, method="heun" for SiT's fixed-step alternative) are recorded by the caller beside
the protocol name.

Sources (read from the official code, cited by file and commit):
- SVG (shiml20/SVG). The FID runs: `scripts/fid_abaltion_v3.sh` @ 7b4662d (`--cfg-scale 1.25 --shift 0.15
  --tag euler`, 50,000 samples, `--cfg_mode` linear / constant / interval / late / cfg_star, 10-25 steps),
  sampled by `diffusion/rectified_flow_ori_ablation_guidance.py` @ 7b4662d (`RectifiedFlow.sample`; its
  modes are `samplers.Guidance`'s). No source states which mode produced the paper's CFG column: the script
  ablates them all, its last 256-px run at 25 steps names `cfg_star-1` (a string that file cannot parse: it
  reads a ratio after a second '-'), and the release's `sample_svg.py` (HEAD fd69855) defaults to
  "constant". `svg-paper-cfg` therefore ASSUMES constant guidance at scale 1.25, Euler, 25 steps, shift 0.15;
  the alternatives are one flag away (`--set generation.protocol=svg-paper-cfg-star` and the -linear,
  -interval, -late variants). `svg-demo` is `sample_svg.py`'s demo: scale 4, constant.
- SiT (willisma/SiT): `sample_ddp.py` ODE mode, `transport/integrators.py` `ode` (torchdiffeq dopri5, atol
  1e-6, rtol 1e-3, t from 0 to 1, Linear path, velocity); `forward_with_cfg` guides 3 of the 4 SD-VAE
  channels; the CFG rows of the SiT paper (arXiv 2401.08740) use scale 1.5. `sit-paper-heun` is svgbench's
  fixed-step alternative (Heun, 125 steps, 250 evaluations).
- DiT (facebookresearch/DiT): `sample_ddp.py` (`create_diffusion("250")`, cfg-scale 1.5, `forward_with_cfg`
  on 3 of 4 channels), `diffusion/respace.py`, `diffusion/gaussian_diffusion.py` (learned-range variance);
  see `dit.py`. Only a checkpoint declared kind=dit is sampled by it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .samplers import AdaptiveODESampler, Guidance, ODESampler

SVG_FID = "shiml20/SVG scripts/fid_abaltion_v3.sh @ 7b4662d (cfg-scale 1.25, shift 0.15, euler) with " \
          "diffusion/rectified_flow_ori_ablation_guidance.py @ 7b4662d"
FLOW_METHODS = ("euler", "heun")


@dataclass(frozen=True)
class Protocol:
    """One published sampling setting. guidance: Guidance kwargs; scale 1 is no guidance.

    kind: the model kind it samples ("flow": SVG / SiT / svgbench velocity models; "dit": DiT's DDPM).
    method: "euler" / "heun" (fixed steps), "dopri5" (adaptive, atol / rtol), "ddpm" (DiT, steps respaced).
    """

    name: str
    method: str
    steps: int
    shift: float
    guidance: dict = field(default_factory=dict)
    source: str = ""
    kind: str = "flow"
    atol: float | None = None
    rtol: float | None = None
    assumption: str | None = None  # what the sources leave open and this protocol assumes

    def sampler(self, **overrides):
        """The sampler of this protocol; overrides: method, steps, shift, autocast, null_label, or Guidance fields.

        A flow protocol's method can be overridden by a fixed-step one (euler / heun, with steps); DiT's process
        has no ODE alternative.
        """
        samp = {k: overrides.pop(k) for k in ("method", "steps", "shift", "autocast", "null_label",
                                                "heun_final_euler") if k in overrides}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(Guidance)}
        if unknown:
            raise ValueError(f"protocol {self.name!r}: unknown overrides {sorted(unknown)}")
        guidance = Guidance(**{**self.guidance, **overrides})
        method = samp.pop("method", self.method)
        if self.kind == "dit":
            if method != "ddpm" or "shift" in samp or "heun_final_euler" in samp:
                raise ValueError(f"protocol {self.name!r} samples DiT's DDPM process: no method {method!r}, "
                                 "shift or Heun option applies")
            from .dit import DiTSampler

            return DiTSampler(samp.pop("steps", self.steps), guidance, **samp)
        if method == "dopri5":
            samp.pop("steps", None)  # adaptive: the solver picks its steps
            return AdaptiveODESampler(self.atol, self.rtol, guidance, shift=samp.pop("shift", self.shift), **samp)
        if method not in FLOW_METHODS:
            raise ValueError(f"protocol {self.name!r}: method must be one of {FLOW_METHODS + ('dopri5',)}, "
                             f"got {method!r}")
        return ODESampler(method, samp.pop("steps", self.steps), samp.pop("shift", self.shift), guidance, **samp)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_SVG_ASSUMED = ("the sources do not say which guidance mode the paper's CFG column used: constant assumed "
                "(sample_svg.py's default); alternatives: svg-paper-cfg-star, -linear, -interval, -late")
_SIT_ODE = "willisma/SiT sample_ddp.py ODE + transport/integrators.py: torchdiffeq dopri5, atol 1e-6, rtol 1e-3, t 0 -> 1"
_DIT = "facebookresearch/DiT sample_ddp.py: create_diffusion('250') (respace.py), learned-range variance"

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("svg-paper-cfg", "euler", 25, 0.15, dict(scale=1.25, mode="constant"),
             f"{SVG_FID}: cfg_mode constant, 25 steps", assumption=_SVG_ASSUMED),
    Protocol("svg-paper-cfg-star", "euler", 25, 0.15,
             dict(scale=1.25, mode="cfg-star", zero_init_steps=1, zero_ratio=0.0),
             f"{SVG_FID}: cfg_mode cfg_star-1-0 (first step's velocity zero, then constant), 25 steps",
             assumption="the script's 25-step run names cfg_star-1 without a ratio; ratio 0 (zero-init) assumed"),
    Protocol("svg-paper-cfg-linear", "euler", 25, 0.15, dict(scale=1.25, mode="linear"),
             f"{SVG_FID}: cfg_mode linear (scale ramped 1 -> 1.25 over the steps), 25 steps"),
    Protocol("svg-paper-cfg-interval", "euler", 25, 0.15, dict(scale=1.25, mode="interval", every=2),
             f"{SVG_FID}: cfg_mode interval (guidance on every 2nd step, cfg_interval's default), 25 steps"),
    Protocol("svg-paper-cfg-late", "euler", 25, 0.15, dict(scale=1.25, mode="late"),
             f"{SVG_FID}: cfg_mode late (guidance on the second half of the steps), 25 steps"),
    Protocol("svg-paper-nocfg", "euler", 25, 0.15, dict(scale=1.0),
             "shiml20/SVG sample_svg.py @ fd69855 without guidance (euler, 25 steps, shift 0.15): the 'w/o CFG' column"),
    Protocol("svg-demo", "euler", 25, 0.15, dict(scale=4.0, mode="constant"),
             "shiml20/SVG sample_svg.py @ fd69855: euler, 25 steps, timestep_shift 0.15, cfg_mode constant, "
             "cfg_scale 4 (the demo setting, not the FID one)"),
    Protocol("svg-paper-cfg-zero", "euler", 25, 0.15, dict(scale=4.0, mode="zero-init", zero_init_steps=1),
             "shiml20/SVG rectified_flow/rectified_flow.py @ fd69855 cfg_mode 'cfg_star-1-0' at sample_svg.py's "
             "demo scale 4"),
    Protocol("sit-paper", "dopri5", 0, 1.0, dict(scale=1.5, mode="constant", guided_channels=3),
             f"{_SIT_ODE}; forward_with_cfg on 3 of 4 channels; scale 1.5: SiT paper's CFG rows",
             atol=1e-6, rtol=1e-3),
    Protocol("sit-paper-nocfg", "dopri5", 0, 1.0, dict(scale=1.0), f"{_SIT_ODE}; cfg_scale 1.0",
             atol=1e-6, rtol=1e-3),
    Protocol("sit-paper-heun", "heun", 125, 1.0, dict(scale=1.5, mode="constant", guided_channels=3),
             "svgbench's fixed-step alternative to SiT's dopri5: Heun, 125 steps (250 evaluations), SiT's guidance"),
    Protocol("dit-paper", "ddpm", 250, 1.0, dict(scale=1.5, mode="constant", guided_channels=3),
             f"{_DIT}; forward_with_cfg on 3 of 4 channels, cfg-scale 1.5 (the paper's FID-50K)", kind="dit"),
    Protocol("dit-paper-nocfg", "ddpm", 250, 1.0, dict(scale=1.0), f"{_DIT}; cfg-scale 1.0", kind="dit"),
]}

# the protocol a declared checkpoint kind is sampled by when the run names none
DEFAULT_PROTOCOL = {"dit": "dit-paper", "sit": "sit-paper", "svg": "svg-paper-cfg"}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise KeyError(f"unknown sampling protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def check_kind(protocol: str, kind: str | None) -> None:
    """Refuse a protocol of another process than the checkpoint's kind (DiT's DDPM vs a flow), one line."""
    p = get_protocol(protocol)
    if (kind == "dit") != (p.kind == "dit"):
        want = "dit-paper or dit-paper-nocfg" if kind == "dit" else "a flow protocol (svg-paper-cfg, sit-paper, ...)"
        raise ValueError(f"protocol {protocol!r} samples {'DiT DDPM' if p.kind == 'dit' else 'a flow ODE'} but the "
                         f"checkpoint is kind={kind or 'flow'}: use {want}")


def build_sampler(name: str, **overrides):
    """The sampler of protocol `name`, e.g. build_sampler('svg-paper-cfg', steps=5, autocast=torch.bfloat16)."""
    return get_protocol(name).sampler(**overrides)
