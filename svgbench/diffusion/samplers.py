"""ODE samplers for the rectified flow (t = 0 noise -> t = 1 data), with classifier-free guidance.

A sampler is a small object: `sampler(model, noise, labels) -> x`, with model(x, t, y) -> velocity,
noise B x C x H x W and labels (B,). It returns latents in the model's (normalised) space; undo the
normalisation with `LatentStats.denormalize` before decoding.

Noise is a function of each sample's global index (`noise_for_indices`), so a set of N samples is the
same whatever the batch size or the number of processes that produced it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .transport import time_shift

CFG_MODES = ("constant", "interval", "zero-init")


def _mix32(x: int) -> int:
    """A bijection of 32-bit integers with good avalanche (Wellons' lowbias32)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def index_seed(index: int, seed: int) -> int:
    """The CPU generator seed of sample `index` under `seed`: mix32(index ^ mix32(seed)).

    torch's CPU generator keeps only 32 bits of a seed, so the pair is folded into 32 bits with a
    bijection: under one seed, distinct indices always get distinct generators.
    """
    return _mix32(index ^ _mix32(seed))


def noise_for_indices(indices: Sequence[int] | torch.Tensor, shape: Sequence[int], seed: int, *,
                      device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """len(indices) x *shape standard normal noise; row i depends on (seed, indices[i]) only.

    Each row is drawn on the CPU from its own generator (`index_seed`), so the values are also the same
    on every device. Requires 0 <= index < 2**32 and 0 <= seed < 2**32.
    """
    indices = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    bad = [i for i in indices if not 0 <= i < 2**32]
    if bad:
        raise ValueError(f"sample indices must be in [0, 2**32), got {bad[:5]}")
    out = torch.empty(len(indices), *shape, dtype=torch.float32)
    g = torch.Generator()
    for row, i in enumerate(indices):
        g.manual_seed(index_seed(i, seed))
        out[row] = torch.randn(*shape, generator=g)
    return out.to(device=device, dtype=dtype)


def sampling_times(steps: int, shift: float = 1.0) -> torch.Tensor:
    """(steps + 1,) float64 times from 0 to 1: uniform, then time-shifted; t[0] = 0 and t[-1] = 1 exactly."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return time_shift(torch.linspace(0, 1, steps + 1, dtype=torch.float64), shift)


@dataclass
class Guidance:
    """Classifier-free guidance v = vu + scale * (vc - vu), in the official SVG sampler's modes.

    Time is svgbench's (and SVG's and SiT's) t: 0 = noise, 1 = data; t is the (shifted) time of the evaluation.
    mode "constant": at every evaluation. "interval": only where interval[0] <= t <= interval[1], the plain
    conditional velocity elsewhere (SVG's `early-r` mode is interval=(r, 1) with the bound excluded, a
    difference only when an evaluation lands exactly on r). "zero-init": the velocity is zero for the first
    `zero_init_steps` steps (SVG's `cfg_star-K-0`, CFG-Zero*'s zero-init: the sample stays at its noise while
    time advances), constant guidance afterwards. scale = 1 is the conditional model alone.

    guided_channels: guide only the first k channels and keep the conditional velocity in the rest. None
    (all channels) is standard CFG and SVG's code; 3 reproduces DiT's and SiT's `forward_with_cfg` on 4-channel
    SD-VAE latents ("for exact reproducibility reasons, we apply classifier-free guidance on only three
    channels"), with which their published FIDs were computed.
    """

    scale: float = 1.0
    mode: str = "constant"
    interval: tuple[float, float] | None = None
    zero_init_steps: int = 1
    guided_channels: int | None = None

    def __post_init__(self):
        if self.mode not in CFG_MODES:
            raise ValueError(f"cfg mode must be one of {CFG_MODES}, got {self.mode!r}")
        if self.mode == "interval" and (self.interval is None or not self.interval[0] <= self.interval[1]):
            raise ValueError(f"cfg mode 'interval' needs interval=(lo, hi) with lo <= hi, got {self.interval}")
        if self.mode == "interval":
            self.interval = (float(self.interval[0]), float(self.interval[1]))
        if self.mode == "zero-init" and self.zero_init_steps < 1:
            raise ValueError(f"cfg mode 'zero-init' needs zero_init_steps >= 1, got {self.zero_init_steps}")
        if self.guided_channels is not None and self.guided_channels < 1:
            raise ValueError(f"guided_channels must be >= 1 or None, got {self.guided_channels}")

    def scale_at(self, t: float) -> float:
        if self.mode == "interval" and not self.interval[0] <= t <= self.interval[1]:
            return 1.0
        return self.scale

    def zeroed(self, step: int) -> bool:
        return self.mode == "zero-init" and step < self.zero_init_steps


def cfg_velocity(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float,
                 null_label: int, guided_channels: int | None = None) -> torch.Tensor:
    """vu + scale * (vc - vu) from one forward of the 2B batch [x, x] with labels [y, null].

    The mix is done in float32 whatever the model's output dtype (a bf16 difference vc - vu loses the
    small guidance signal). guided_channels: see `Guidance`.
    """
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    vc, vu = v.float().chunk(2)
    if guided_channels is None:
        return vu + scale * (vc - vu)
    k = guided_channels
    return torch.cat([vu[:, :k] + scale * (vc[:, :k] - vu[:, :k]), vc[:, k:]], dim=1)


@dataclass
class ODESampler:
    """Euler or Heun integration of dx/dt = v(x, t, y) on `sampling_times(steps, shift)`.

    method "euler": `steps` model evaluations. method "heun": Heun's predictor-corrector on every step
    (2 x steps evaluations, the last one at t = 1), as SVG's sampler does; a velocity-predicting model is
    well-defined at t = 1, so this is safe for trained models. heun_final_euler=True makes the last step
    a plain Euler step (2 x steps - 1 evaluations), for velocity fields that are singular at t = 1, such
    as the exact field of a point-mass data distribution, (x* - x) / (1 - t).

    shift: the sampling time shift (SVG: 0.15); null_label: the unconditional class (default: the
    model's num_classes). The model must be in eval mode (training mode would drop labels at random).

    autocast: a dtype (torch.bfloat16) to run the model's forward under torch.autocast; the state x and
    every update stay float32, so only the network's arithmetic is in reduced precision.
    """

    method: str = "euler"
    steps: int = 25
    shift: float = 1.0
    guidance: Guidance | None = None
    null_label: int | None = None
    heun_final_euler: bool = False
    autocast: torch.dtype | None = None

    def __post_init__(self):
        if self.method not in ("euler", "heun"):
            raise ValueError(f"sampler method must be 'euler' or 'heun', got {self.method!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.guidance is None:
            self.guidance = Guidance()

    @property
    def times(self) -> torch.Tensor:
        """(steps + 1,) float64 evaluation times, 0 -> 1."""
        return sampling_times(self.steps, self.shift)

    @property
    def nfe(self) -> int:
        """Velocity evaluations per batch: a guided cond+uncond forward counts as one, and zero-init steps
        count although they call no model."""
        if self.method == "euler":
            return self.steps
        return 2 * self.steps - int(self.heun_final_euler)

    def velocity(self, model, x: torch.Tensor, t: float, y: torch.Tensor, step: int) -> torch.Tensor:
        """The (guided) velocity at time t of step `step`, float32."""
        if self.guidance.zeroed(step):
            return torch.zeros_like(x)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        scale = self.guidance.scale_at(t)
        with torch.autocast(x.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            if scale == 1.0:  # guidance with scale 1 is the conditional velocity: skip the unconditional half
                return model(x, tt, y).float()
            null = self.null_label
            if null is None:
                null = (model.module if hasattr(model, "module") else model).num_classes
            return cfg_velocity(model, x, tt, y, scale, null, self.guidance.guided_channels)

    @torch.no_grad()
    def __call__(self, model, noise: torch.Tensor, labels: torch.Tensor,
                 shared: SharedEvaluations | None = None) -> torch.Tensor:
        """noise: B x C x H x W at t = 0, labels: (B,) long -> samples B x C x H x W at t = 1.

        shared: the SharedEvaluations of this batch, when other samplers run on the same noise and labels.
        """
        if getattr(model, "training", False):
            raise ValueError("sampling needs the model in eval mode (call model.eval())")
        x = noise.float() if noise.dtype in (torch.float16, torch.bfloat16) else noise
        ts = self.times.tolist()

        def velocity(x, t, step, state):
            # state: which shared state x is ("noise", or noise + (ts[1] - ts[0]) * v(noise)), or None
            if shared is None or state is None:
                return self.velocity(model, x, t, labels, step)
            key = (self._shared_key(), noise.data_ptr(), labels.data_ptr(), state, ts[0], t, self.guidance.zeroed(step))
            return shared.velocity(key, lambda: self.velocity(model, x, t, labels, step))

        for i in range(self.steps):
            t0, t1 = ts[i], ts[i + 1]
            dt = t1 - t0
            # after an Euler first step, the second evaluation is at the state a Heun first predictor reaches
            state = "noise" if i == 0 else ("first-euler" if i == 1 and self.method == "euler" else None)
            v0 = velocity(x, t0, i, state)
            x_euler = x + dt * v0
            last = i == self.steps - 1
            if self.method == "euler" or (last and self.heun_final_euler):
                x = x_euler
            else:
                v1 = velocity(x_euler, t1, i, "first-euler" if i == 0 else None)
                x = x + 0.5 * dt * (v0 + v1)
        return x

    def _shared_key(self) -> tuple:
        """What besides the state and time decides a velocity: samplers that differ here share nothing."""
        return repr(self.guidance), self.autocast, self.null_label


class SharedEvaluations:
    """The velocity evaluations that samplers of different methods and step counts share exactly on one batch
    (same noise, labels, guidance and precision), because the math gives them the same input:

    - the first, v(noise, 0), of every sampler;
    - v(noise + (t1 - 0) * v(noise, 0), t1), the second Euler evaluation and the first Heun corrector
      evaluation of samplers whose first step ends at the same t1 (Euler and Heun at one step count).

    The first sampler to need one computes it; the others reuse the tensor (the samples are bit-identical to
    sampling alone) and are charged the seconds it took (`charged_s`), so a sampler's time per image stays
    its cost when run alone. One SharedEvaluations serves one batch: it holds one velocity batch per
    distinct first step.
    """

    def __init__(self):
        self._store: dict[tuple, tuple[torch.Tensor, float]] = {}
        self.charged_s = 0.0  # seconds of reused evaluations, charged to the samplers that reused them

    def velocity(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        hit = self._store.get(key)
        if hit is not None:
            self.charged_s += hit[1]
            return hit[0]
        t0 = time.perf_counter()
        v = compute()
        if v.is_cuda:  # the evaluation's seconds, not its launch's
            torch.cuda.synchronize(v.device)
        self._store[key] = (v, time.perf_counter() - t0)
        return v


def euler(steps: int = 25, shift: float = 0.15, guidance: Guidance | None = None, **kw) -> ODESampler:
    """SVG's default sampler: Euler, 25 steps, sampling shift 0.15."""
    return ODESampler("euler", steps, shift, guidance, **kw)


def heun(steps: int = 25, shift: float = 0.15, guidance: Guidance | None = None, **kw) -> ODESampler:
    return ODESampler("heun", steps, shift, guidance, **kw)
