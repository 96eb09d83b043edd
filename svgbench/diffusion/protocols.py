"""Named sampling protocols: the published settings of SVG and SiT, fixed in one place.

A protocol fixes the sampler (method, steps, time shift) and the guidance (scale, mode, interval, channels).
`build_sampler(name, **overrides)` returns an `ODESampler`; overrides (e.g. steps=5 for a few-step row)
are recorded by the caller beside the protocol name.

Sources (read from the official code, not guessed):
- SVG (shiml20/SVG): `sample_svg.py` samples with mode "euler", num_steps 25, timestep_shift 0.15,
  cfg_mode "constant", cfg_scale 4 (its demo setting; the repository ships no FID-evaluation script, so
  the guidance scale behind the paper's CFG column is not stated there); `rectified_flow.py`
  `RectifiedFlow.sample` implements constant / early-r / cfg_star-K-r guidance, t = 0 noise.
- SiT (willisma/SiT): `sample_ddp.py` defaults to 250 sampling steps and cfg_scale 1.0; the CFG rows of the
  SiT paper (arXiv 2401.08740) use scale 1.5, DiT's FID setting; `forward_with_cfg` guides 3 of the 4 SD-VAE channels, Linear path with t = 0 noise and no time
  shift; its ODE solver is adaptive dopri5 (atol 1e-6, rtol 1e-3). svgbench has fixed-step solvers only, so
  `sit-paper` uses Heun with 125 steps (250 evaluations), the fixed-step stand-in for that ODE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .samplers import Guidance, ODESampler


@dataclass(frozen=True)
class Protocol:
    """One published sampling setting. guidance: Guidance kwargs; scale 1 is no guidance."""

    name: str
    method: str
    steps: int
    shift: float
    guidance: dict = field(default_factory=dict)
    source: str = ""

    def sampler(self, **overrides) -> ODESampler:
        """The ODESampler of this protocol; overrides: method, steps, shift, or Guidance fields."""
        samp = {k: overrides.pop(k) for k in ("method", "steps", "shift", "autocast", "null_label",
                                                "heun_final_euler") if k in overrides}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(Guidance)}
        if unknown:
            raise ValueError(f"protocol {self.name!r}: unknown overrides {sorted(unknown)}")
        guidance = Guidance(**{**self.guidance, **overrides})
        return ODESampler(samp.pop("method", self.method), samp.pop("steps", self.steps),
                          samp.pop("shift", self.shift), guidance, **samp)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("svg-paper-cfg", "euler", 25, 0.15, dict(scale=4.0, mode="constant"),
             "shiml20/SVG sample_svg.py: euler, 25 steps, timestep_shift 0.15, cfg_mode constant, cfg_scale 4"),
    Protocol("svg-paper-nocfg", "euler", 25, 0.15, dict(scale=1.0),
             "shiml20/SVG sample_svg.py without guidance (the paper's 'w/o CFG' column)"),
    Protocol("svg-paper-cfg-zero", "euler", 25, 0.15, dict(scale=4.0, mode="zero-init", zero_init_steps=1),
             "shiml20/SVG rectified_flow.py cfg_mode 'cfg_star-1-0': first step's velocity zero, then constant CFG"),
    Protocol("sit-paper", "heun", 125, 1.0, dict(scale=1.5, mode="constant", guided_channels=3),
             "willisma/SiT sample_ddp.py (250 steps, forward_with_cfg on 3 of 4 channels, no shift); scale 1.5: SiT paper's CFG rows"),
    Protocol("sit-paper-nocfg", "heun", 125, 1.0, dict(scale=1.0),
             "willisma/SiT sample_ddp.py with cfg_scale 1.0"),
]}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise KeyError(f"unknown sampling protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def build_sampler(name: str, **overrides) -> ODESampler:
    """The sampler of protocol `name`, e.g. build_sampler('svg-paper-cfg', steps=5, autocast=torch.bfloat16)."""
    return get_protocol(name).sampler(**overrides)
