"""DiT's own sampling process: DDPM with learned variance, respaced, as facebookresearch/DiT samples its FIDs.

A DiT checkpoint predicts noise (eps) and a variance interpolation v in 2C output channels on the
discrete-time Gaussian diffusion of `diffusion/gaussian_diffusion.py` (linear betas 1e-4 .. 0.02 over 1000
steps); it is not a velocity field on t in [0, 1] and must not be integrated as one. `sample_ddp.py` samples
with `create_diffusion("250")`: the 1000 steps respaced to 250 (`respace.py` `space_timesteps`), the model
called with the original step index, `clip_denoised=False`, classifier-free guidance by `forward_with_cfg`
(guidance on the first 3 of the 4 eps channels; the 4th and the variance channels from the conditional
half) at cfg-scale 1.5 for the paper's FID-50K.

Written here, not taken from diffusers: diffusers' DDPMScheduler spaces 250 of 1000 steps differently
("leading"/"trailing" rather than DiT's rounded fractional stride) and has no learned-range variance
interpolation on a respaced schedule, so it cannot reproduce DiT's samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .samplers import Guidance, model_kind

TRAIN_STEPS = 1000


def linear_betas(steps: int = TRAIN_STEPS) -> np.ndarray:
    """DiT's "linear" schedule in float64: 1e-4 .. 0.02, scaled by 1000 / steps."""
    scale = 1000 / steps
    return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """The `count` original steps DiT keeps of `num_timesteps` (one section): a fractional stride, rounded."""
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"cannot keep {count} of {num_timesteps} diffusion steps")
    stride = 1 if count == 1 else (num_timesteps - 1) / (count - 1)
    return sorted({int(round(i * stride)) for i in range(count)})


@dataclass(frozen=True)
class Schedule:
    """The respaced process's per-step constants (float64 numpy, index = respaced step)."""

    timestep_map: np.ndarray
    betas: np.ndarray
    sqrt_recip_ac: np.ndarray
    sqrt_recipm1_ac: np.ndarray
    coef1: np.ndarray
    coef2: np.ndarray
    log_var_clipped: np.ndarray
    log_betas: np.ndarray

    @classmethod
    def respaced(cls, steps: int, train_steps: int = TRAIN_STEPS) -> "Schedule":
        keep = space_timesteps(train_steps, steps)
        ac_base = np.cumprod(1.0 - linear_betas(train_steps))
        betas, last = [], 1.0
        for i in keep:  # the respaced betas keep the original cumulative products at the kept steps
            betas.append(1 - ac_base[i] / last)
            last = ac_base[i]
        betas = np.array(betas, dtype=np.float64)
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        return cls(np.array(keep), betas, np.sqrt(1.0 / ac), np.sqrt(1.0 / ac - 1),
                   betas * np.sqrt(ac_prev) / (1.0 - ac), (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
                   np.log(np.append(post_var[1], post_var[1:])), np.log(betas))


def _at(arr: np.ndarray, i: int, x: torch.Tensor) -> torch.Tensor:
    # DiT indexes float64 arrays and casts the value to float32 (`_extract_into_tensor`)
    return torch.tensor(arr[i], dtype=torch.float64).float().to(x.device)


@dataclass
class DiTSampler:
    """DDPM ancestral sampling of a DiT checkpoint (`kind=dit`): `sampler(model, noise, labels) -> x`.

    steps: respaced sampling steps (DiT: 250 of 1000). guidance: constant mode only (DiT has no schedule);
    guided_channels 3 is DiT's `forward_with_cfg`. The model must output 2C channels (learn_sigma). Each step
    adds fresh noise: `step_noise(k)` gives step k's B x C x H x W noise (svgbench draws it per sample index,
    so a sample does not depend on its batch); without it a CPU generator seeded `seed` draws it per batch.
    The state stays float32; autocast applies to the network only.
    """

    steps: int = 250
    guidance: Guidance | None = None
    null_label: int | None = None
    autocast: torch.dtype | None = None
    seed: int = 0
    method: str = field(default="ddpm", init=False)
    shift: float = field(default=1.0, init=False)
    stochastic: bool = field(default=True, init=False)

    def __post_init__(self):
        if self.guidance is None:
            self.guidance = Guidance()
        if self.guidance.mode != "constant":
            raise ValueError(f"DiT samples with constant guidance only, got mode {self.guidance.mode!r}")
        self.schedule = Schedule.respaced(self.steps)

    @property
    def nfe(self) -> int:
        return self.steps

    def forward_batches(self) -> float:
        return float(self.steps * (1 if self.guidance.scale == 1.0 else 2))

    def model_output(self, model, x: torch.Tensor, i: int, y: torch.Tensor) -> torch.Tensor:
        """eps (guided) and v, B x 2C, float32, at respaced step i."""
        tt = torch.full((x.shape[0],), float(self.schedule.timestep_map[i]), device=x.device)
        g = self.guidance
        with torch.autocast(x.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            if g.scale == 1.0:
                return model(x, tt, y, learned_sigma=True).float()
            null = self.null_label
            if null is None:
                null = (model.module if hasattr(model, "module") else model).num_classes
            out = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, null)]),
                        learned_sigma=True).float()
        cond, uncond = out.chunk(2)
        k = g.guided_channels or x.shape[1]
        guided = uncond[:, :k] + g.scale * (cond[:, :k] - uncond[:, :k])
        return torch.cat([guided, cond[:, k:]], dim=1)

    @torch.no_grad()
    def __call__(self, model, noise: torch.Tensor, labels: torch.Tensor, shared=None,
                 step_noise: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
        """noise: B x C x H x W (x_T), labels (B,) -> x_0 B x C x H x W. shared: unused (no evaluation of DDPM
        is shared with another sampler)."""
        if getattr(model, "training", False):
            raise ValueError("sampling needs the model in eval mode (call model.eval())")
        kind = model_kind(model)
        if kind != "dit":
            raise ValueError(f"the DiT DDPM sampler needs a checkpoint declared kind=dit, got kind {kind!r} "
                             f"(a flow model: sample it with an ODE protocol such as sit-paper or svg-paper-cfg)")
        if step_noise is None:
            gen = torch.Generator().manual_seed(self.seed)
            step_noise = lambda k: torch.randn(noise.shape, generator=gen)  # noqa: E731
        s, x = self.schedule, noise.float()
        c = x.shape[1]
        for k, i in enumerate(range(self.steps - 1, -1, -1)):
            out = self.model_output(model, x, i, labels)
            if out.shape[1] != 2 * c:
                raise ValueError(f"a DiT checkpoint outputs eps and variance (2 x {c} channels), this model "
                                 f"{out.shape[1]}: it was not trained with learn_sigma")
            eps, v = out[:, :c], out[:, c:]
            x0 = _at(s.sqrt_recip_ac, i, x) * x - _at(s.sqrt_recipm1_ac, i, x) * eps
            mean = _at(s.coef1, i, x) * x0 + _at(s.coef2, i, x) * x
            frac = (v + 1) / 2
            log_var = frac * _at(s.log_betas, i, x) + (1 - frac) * _at(s.log_var_clipped, i, x)
            z = step_noise(k).to(device=x.device, dtype=x.dtype)  # drawn at every step, as DiT's p_sample
            x = mean + (torch.exp(0.5 * log_var) * z if i > 0 else 0.0)
        return x
