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

# The modes of shiml20/SVG `diffusion/rectified_flow_ori_ablation_guidance.py` at commit 7b4662d (the sampler
# of its FID script `scripts/fid_abaltion_v3.sh`), plus svgbench's time window and the zero-init shorthand.
CFG_MODES = ("constant", "interval", "late", "early", "linear", "cfg-star", "window", "zero-init")

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
    """Classifier-free guidance v = vu + w * (vc - vu), with the schedules of SVG's FID sampler.

    Time is svgbench's (and SVG's and SiT's) t: 0 = noise, 1 = data. `step` is the index i of the sampler
    step (0-based, of `steps`); both evaluations of a Heun step use their step's i, as SVG's loop does. The
    step modes are those of shiml20/SVG `diffusion/rectified_flow_ori_ablation_guidance.py` @ 7b4662d:

    - "constant": w = scale at every evaluation.
    - "interval": w = scale on the steps with i % every == 0, w = 1 (the conditional velocity) on the others
      (the official `cfg_interval`, default 2, which the FID script never changes).
    - "late": w = scale where (i + 1) / steps > 1/2, else 1; "early": where (i + 1) / steps < 1/2, else 1.
    - "linear": w = 1 + (scale - 1) (i + 1) / steps, a ramp to the full scale at the last step.
    - "cfg-star" (the official `cfg_star-K-r`, K = zero_init_steps, r = zero_ratio): on the first K steps the
      velocity is -r * vu (r = 0: zero, the sample stays at its noise while time advances; at scale 1, which
      the official script runs without an unconditional model, -r * vc); afterwards constant guidance. At
      7b4662d the optimised scale s* = <vc, vu> / |vu|^2 (CFG-Zero*) is computed but not used (its line is
      commented out): the default here. optimized_scale=True applies it, v = s* vu + w (vc - s* vu), as the
      CFG-Zero* paper does.
    - "zero-init": "cfg-star" with r = 0 (the release's `rectified_flow.py` `cfg_star-K-0`).
    - "window": svgbench's time window, w = scale where window[0] <= t <= window[1], else 1 (the release's
      `early-r` is window=(r, 1), bound excluded: a difference only when an evaluation lands exactly on r).

    guided_channels: guide only the first k channels and keep the conditional velocity in the rest. None
    (all channels) is standard CFG and SVG's code; 3 reproduces DiT's and SiT's `forward_with_cfg` on 4-channel
    SD-VAE latents ("for exact reproducibility reasons, we apply classifier-free guidance on only three
    channels"), with which their published FIDs were computed.
    """

    scale: float = 1.0
    mode: str = "constant"
    interval: tuple[float, float] | None = None  # mode "window": (lo, hi)
    zero_init_steps: int = 1
    guided_channels: int | None = None
    every: int = 2
    zero_ratio: float = 0.0
    optimized_scale: bool = False

    def __post_init__(self):
        if self.mode not in CFG_MODES:
            raise ValueError(f"cfg mode must be one of {CFG_MODES}, got {self.mode!r}")
        if self.mode == "interval" and self.interval is not None:
            raise ValueError("cfg mode 'interval' guides every k-th step (every=k), as SVG's FID sampler; for a "
                             f"time window {self.interval} use mode 'window'")
        if self.mode == "window" and (self.interval is None or not self.interval[0] <= self.interval[1]):
            raise ValueError(f"cfg mode 'window' needs interval=(lo, hi) with lo <= hi, got {self.interval}")
        if self.mode == "window":
            self.interval = (float(self.interval[0]), float(self.interval[1]))
        if self.mode in ("zero-init", "cfg-star") and self.zero_init_steps < 0:
            raise ValueError(f"cfg mode {self.mode!r} needs zero_init_steps >= 0, got {self.zero_init_steps}")
        if self.mode == "zero-init" and self.zero_ratio != 0:
            raise ValueError("cfg mode 'zero-init' has zero_ratio 0; use mode 'cfg-star' for another ratio")
        if self.every < 1:
            raise ValueError(f"cfg mode 'interval' needs every >= 1, got {self.every}")
        if self.guided_channels is not None and self.guided_channels < 1:
            raise ValueError(f"guided_channels must be >= 1 or None, got {self.guided_channels}")

    @property
    def star(self) -> bool:
        return self.mode in ("cfg-star", "zero-init")

    def scale_at(self, t: float, step: int = 0, steps: int = 1) -> float:
        """The guidance weight w of an evaluation at time t of step `step` of `steps`."""
        m, r = self.mode, (step + 1) / steps
        if m == "window" and not self.interval[0] <= t <= self.interval[1]:
            return 1.0
        if m == "interval" and step % self.every:
            return 1.0
        if (m == "late" and not r > 0.5) or (m == "early" and not r < 0.5):
            return 1.0
        if m == "linear":
            return 1.0 + (self.scale - 1.0) * r
        return self.scale

    def in_star_phase(self, step: int) -> bool:
        """True on the first zero_init_steps steps of "cfg-star" / "zero-init" (velocity -r * vu)."""
        return self.star and step < self.zero_init_steps

    def zeroed(self, step: int) -> bool:
        """True where the velocity is zero without any model call (star phase with ratio 0)."""
        return self.in_star_phase(step) and self.zero_ratio == 0

    def forwards(self, t: float, step: int, steps: int) -> int:
        """Model forwards (in units of one at the batch size) of one evaluation: 0, 1 or 2 (cond + uncond)."""
        if self.zeroed(step):
            return 0
        if self.in_star_phase(step):
            return 1
        return 1 if self.scale_at(t, step, steps) == 1.0 else 2


def model_kind(model) -> str | None:
    """The diffusion kind a loaded checkpoint declared ("dit", "sit", "svg"), or None (svgbench's own models)."""
    for attr in ("model", "module"):  # unwrap svgbench's counting wrapper and DDP
        if hasattr(model, attr) and not hasattr(model, "diffusion_kind"):
            model = getattr(model, attr)
    return getattr(model, "diffusion_kind", None)


def refuse_kind(model, kinds: tuple[str, ...], sampler: str) -> None:
    """A model of another process cannot be integrated by this sampler: DiT predicts noise, not a velocity."""
    kind = model_kind(model)
    if kind in kinds:
        raise ValueError(f"a {kind!r} checkpoint cannot be sampled by {sampler}: use its protocol "
                         f"({'dit-paper' if kind == 'dit' else 'a flow protocol such as sit-paper or svg-paper-cfg'})")


def cfg_velocity(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float,
                 null_label: int, guided_channels: int | None = None, optimized_scale: bool = False) -> torch.Tensor:
    """vu + scale * (vc - vu) from one forward of the 2B batch [x, x] with labels [y, null].

    The mix is done in float32 whatever the model's output dtype (a bf16 difference vc - vu loses the
    small guidance signal). guided_channels, optimized_scale: see `Guidance`.
    """
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    vc, vu = v.float().chunk(2)
    if optimized_scale:  # CFG-Zero*: s* = <vc, vu> / |vu|^2 per sample, the 1e-8 as in SVG's code
        b = vc.shape[0]
        s_star = (vc.reshape(b, -1) * vu.reshape(b, -1)).sum(1) / (vu.reshape(b, -1).pow(2).sum(1) + 1e-8)
        vu = vu * s_star.view(b, *([1] * (vc.ndim - 1)))
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
        g = self.guidance
        if g.zeroed(step):
            return torch.zeros_like(x)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        scale = g.scale_at(t, step, self.steps)
        with torch.autocast(x.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            if g.in_star_phase(step):  # -r * vu; at scale 1 there is no unconditional model: -r * vc (SVG's script)
                u = y if scale == 1.0 else torch.full_like(y, self._null(model))
                return -g.zero_ratio * model(x, tt, u).float()
            if scale == 1.0:  # guidance with scale 1 is the conditional velocity: skip the unconditional half
                return model(x, tt, y).float()
            return cfg_velocity(model, x, tt, y, scale, self._null(model), g.guided_channels,
                                g.star and g.optimized_scale)

    def _null(self, model) -> int:
        """The unconditional label: null_label, else the model's num_classes (its null row)."""
        if self.null_label is not None:
            return self.null_label
        return (model.module if hasattr(model, "module") else model).num_classes

    def forward_batches(self) -> float:
        """Model forwards per sampled batch, in units of one forward at the batch size."""
        ts, n = self.times.tolist(), 0
        for i in range(self.steps):
            evals = [ts[i]] if self.method == "euler" or (i == self.steps - 1 and self.heun_final_euler) \
                else [ts[i], ts[i + 1]]
            n += sum(self.guidance.forwards(t, i, self.steps) for t in evals)
        return float(n)

    @torch.no_grad()
    def __call__(self, model, noise: torch.Tensor, labels: torch.Tensor,
                 shared: SharedEvaluations | None = None) -> torch.Tensor:
        """noise: B x C x H x W at t = 0, labels: (B,) long -> samples B x C x H x W at t = 1.

        shared: the SharedEvaluations of this batch, when other samplers run on the same noise and labels.
        """
        if getattr(model, "training", False):
            raise ValueError("sampling needs the model in eval mode (call model.eval())")
        refuse_kind(model, ("dit",), f"the {self.method} ODE sampler")
        x = noise.float() if noise.dtype in (torch.float16, torch.bfloat16) else noise
        ts = self.times.tolist()

        def velocity(x, t, step, state):
            # state: which shared state x is ("noise", or noise + (ts[1] - ts[0]) * v(noise)), or None
            if shared is None or state is None:
                return self.velocity(model, x, t, labels, step)
            key = (self._shared_key(), noise.data_ptr(), labels.data_ptr(), state, ts[0], t,
                   self.guidance.in_star_phase(step), self.guidance.scale_at(t, step, self.steps))
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


@dataclass
class AdaptiveODESampler:
    """SiT's ODE sampler: torchdiffeq's adaptive `dopri5` from t = 0 (noise) to 1 (data), tolerances atol, rtol.

    As willisma/SiT `transport/integrators.py` (`ode.sample`) with `sample_ddp.py`'s defaults (atol 1e-6, rtol
    1e-3, Linear path, velocity model, t0 = 0, t1 = 1). With guidance the state is SiT's [x, x] (2B rows) and
    the drift its `forward_with_cfg` on the first half, so the step sizes, chosen on the error of the whole
    state, are SiT's; they also depend on the other samples of the batch (within the tolerances), as in SiT.
    Only t = 1 is asked of the solver: torchdiffeq interpolates requested times without shortening steps, so
    SiT's 250-point output grid gives the same last state while holding 250 copies of it.

    nfe: function evaluations per batch of the last call (the solver decides them); `nfe_history` all calls'.
    """

    atol: float = 1e-6
    rtol: float = 1e-3
    guidance: Guidance | None = None
    null_label: int | None = None
    autocast: torch.dtype | None = None
    method: str = "dopri5"
    steps: int = 0  # no fixed step count: recorded as 0
    shift: float = 1.0
    nfe_history: list = None

    def __post_init__(self):
        if self.guidance is None:
            self.guidance = Guidance()
        if self.guidance.mode != "constant":
            raise ValueError(f"the adaptive ODE sampler guides with constant mode only, got {self.guidance.mode!r}")
        if self.method not in ("dopri5", "dopri8", "bosh3", "adaptive_heun"):
            raise ValueError(f"adaptive ODE method must be one of torchdiffeq's adaptive solvers, got {self.method!r}")
        self.nfe_history = []

    @property
    def nfe(self) -> float | None:
        """Mean function evaluations per batch so far (None before any sampling)."""
        return sum(self.nfe_history) / len(self.nfe_history) if self.nfe_history else None

    def forward_batches(self) -> float | None:
        n = self.nfe
        return None if n is None else n * (1 if self.guidance.scale == 1.0 else 2)

    @torch.no_grad()
    def __call__(self, model, noise: torch.Tensor, labels: torch.Tensor, shared=None) -> torch.Tensor:
        """noise: B x C x H x W at t = 0, labels (B,) -> samples at t = 1. shared: unused (adaptive steps share
        no evaluation with fixed-step samplers)."""
        from torchdiffeq import odeint

        if getattr(model, "training", False):
            raise ValueError("sampling needs the model in eval mode (call model.eval())")
        refuse_kind(model, ("dit",), f"the {self.method} ODE sampler")
        g, b = self.guidance, noise.shape[0]
        guided = g.scale != 1.0
        null = self.null_label
        if null is None:
            null = (model.module if hasattr(model, "module") else model).num_classes
        y2 = torch.cat([labels, torch.full_like(labels, null)])
        calls = [0]

        def drift(t, x):
            calls[0] += 1
            tt = torch.full((b,), float(t), device=x.device, dtype=torch.float32)
            with torch.autocast(x.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                if not guided:
                    return model(x, tt, labels).float()
                half = x[:b]  # forward_with_cfg: the model sees the first half twice
                out = model(torch.cat([half, half]), torch.cat([tt, tt]), y2).float()
            k = g.guided_channels or x.shape[1]
            cond, uncond = out.chunk(2)
            eps = uncond[:, :k] + g.scale * (cond[:, :k] - uncond[:, :k])
            return torch.cat([torch.cat([eps, eps]), out[:, k:]], dim=1)

        x0 = noise.float()
        if guided:
            x0 = torch.cat([x0, x0])
        t = torch.tensor([0.0, 1.0], device=x0.device)
        x1 = odeint(drift, x0, t, method=self.method, atol=self.atol, rtol=self.rtol)[-1]
        self.nfe_history.append(calls[0])
        return x1[:b]
