"""Rectified flow between Gaussian noise and (normalised) latents: the path, its time shift, the loss.

Convention throughout svgbench (SVG's and SiT's): t = 0 is pure noise, t = 1 is data,
    x_t = (1 - t) * noise + t * x,    target velocity  v = x - noise,
so the ODE dx/dt = v runs from noise at t = 0 to a sample at t = 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoints import CheckpointError, load_state_dict


#################################################################################
#                                 Time shift                                    #
#################################################################################

def time_shift(t, shift: float):
    """t' = s t / (1 + (s - 1) t) for t in [0, 1] (tensor or float).

    Monotone increasing with t' (0) = 0 and t'(1) = 1 for every s > 0; s = 1 is the identity and s < 1
    moves time towards the noise end (more of training / more sampling steps at high noise). SVG uses
    s = 0.4 in training and s = 0.15 in sampling.
    """
    if not shift > 0:
        raise ValueError(f"time shift must be > 0, got {shift}")
    # 1 + (s - 1) t written as s t + (1 - t), so that t = 0 and t = 1 map to exactly 0 and 1 in floating point
    return shift * t / (shift * t + (1 - t))


def rae_alpha(latent_shape: Iterable[int], base_dim: int = 4096) -> float:
    """RAE's dimension-dependent shift alpha = sqrt(tokens * channels / 4096) for a latent of that shape.

    latent_shape is C x H x W (or tokens x channels): only the number of elements counts. RAE measures
    time as a noise level (1 = noise), where the shift is applied with alpha; see `rae_shift`.
    """
    return math.sqrt(math.prod(latent_shape) / base_dim)


def rae_shift(latent_shape: Iterable[int], base_dim: int = 4096) -> float:
    """The `time_shift` s that reproduces RAE's alpha-shift in svgbench's t = 0-noise convention: 1 / alpha.

    (Shifting the noise level u = 1 - t by alpha, u' = alpha u / (1 + (alpha - 1) u), is the same map as
    shifting t by s = 1 / alpha.) For SVG's 392 x 16 x 16 latents this gives about 0.20.
    """
    return 1.0 / rae_alpha(latent_shape, base_dim)


#################################################################################
#                                Rectified flow                                 #
#################################################################################

def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], *([1] * (x.ndim - 1)))


@dataclass
class RectifiedFlow:
    """The linear path from noise to data and its flow-matching loss.

    shift: the training time shift s (SVG: 0.4); t is drawn uniform in [0, 1] and then shifted.
    """

    shift: float = 0.4

    def sample_t(self, n: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(n,) float32 shifted times in [0, 1]."""
        t = torch.rand(n, generator=generator, device=_gen_device(generator))
        return time_shift(t, self.shift).to(device)

    @staticmethod
    def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) noise + t x; t: (B,)."""
        t = _bcast(t, x).to(x.dtype)
        return (1 - t) * noise + t * x

    @staticmethod
    def target(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The velocity along the path, x - noise (independent of t)."""
        return x - noise

    def loss(self, model, x: torch.Tensor, y: torch.Tensor, *,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Flow-matching MSE for one batch of (normalised) latents x: B x C x H x W, labels y: (B,).

        Noise, times and (in training mode) the class-dropout draw all come from `generator`, so a step
        is reproducible from its generator alone. Returns {"loss": scalar, "mse": (B,) per-sample MSE}.
        """
        b = x.shape[0]
        dev = _gen_device(generator)
        noise = torch.randn(x.shape, generator=generator, device=dev).to(device=x.device, dtype=x.dtype)
        t = self.sample_t(b, generator=generator, device=x.device)
        kwargs = {}
        core = model.module if hasattr(model, "module") else model
        p = getattr(getattr(core, "y_embedder", None), "dropout_prob", 0.0)
        if core.training and p > 0:
            drop = torch.rand(b, generator=generator, device=dev) < p
            kwargs["force_drop_ids"] = drop.long().to(x.device)
        v = model(self.interpolate(x, noise, t), t, y, **kwargs)
        mse = ((v.float() - self.target(x, noise).float()) ** 2).mean(dim=tuple(range(1, x.ndim)))
        return {"loss": mse.mean(), "mse": mse}


def _gen_device(generator: torch.Generator | None):
    return generator.device if generator is not None else None


#################################################################################
#                          Per-channel latent statistics                        #
#################################################################################

class LatentStats(nn.Module):
    """Per-channel mean and std of latents B x C x H x W; normalize before diffusion, denormalize after.

    Held as buffers `mean` and `std` (shape (C,), float32), so they travel in state dicts and safetensors
    files beside the model. std is floored at `eps` so that a constant channel normalises to 0, not inf.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6):
        super().__init__()
        mean, std = torch.as_tensor(mean).flatten().float(), torch.as_tensor(std).flatten().float()
        if mean.shape != std.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and std {tuple(std.shape)} differ in shape")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std.clamp_min(eps))

    @property
    def channels(self) -> int:
        return self.mean.numel()

    @classmethod
    def from_latents(cls, latents: torch.Tensor | Iterable[torch.Tensor], eps: float = 1e-6) -> "LatentStats":
        """Statistics over every batch and position of a B x C x H x W tensor, or of an iterable of them.

        Accumulated in float64, so a stream of batches gives the same numbers as one concatenated tensor.
        The std is the population one (divides by the count).
        """
        if isinstance(latents, torch.Tensor):
            latents = [latents]
        n, s, ss = 0, None, None
        for z in latents:
            z = z.detach().to(torch.float64).transpose(0, 1).reshape(z.shape[1], -1)
            if s is None:
                s, ss = torch.zeros(z.shape[0], dtype=torch.float64), torch.zeros(z.shape[0], dtype=torch.float64)
            elif z.shape[0] != s.shape[0]:
                raise ValueError(f"latents with {z.shape[0]} channels after ones with {s.shape[0]}")
            n += z.shape[1]
            s += z.sum(1).cpu()
            ss += (z * z).sum(1).cpu()
        if not n:
            raise ValueError("no latents to compute statistics from")
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0)
        return cls(mean, var.sqrt(), eps)

    # key pairs tried in order when none are given: svgbench's, svgbench's diffusion export, official SVG's
    KNOWN_KEYS = (("mean", "std"), ("stats.mean", "stats.std"), ("dinov3_sp_mean", "dinov3_sp_std"))

    @classmethod
    def load(cls, path, *, mean_key: str | None = None, std_key: str | None = None,
             eps: float = 1e-6) -> "LatentStats":
        """Read stats from a tensor file; any shape that flattens to (C,) is accepted.

        Without keys, the first of KNOWN_KEYS the file holds is used: the official SVG file
        `dinov3_sp_stats.pt` holds (1, 1, 392) tensors under dinov3_sp_mean / dinov3_sp_std (token layout,
        channel last, same channel order).
        """
        state = load_state_dict(path)
        pairs = [(mean_key or "mean", std_key or "std")] if mean_key or std_key else cls.KNOWN_KEYS
        for mk, sk in pairs:
            if mk in state and sk in state:
                return cls(state[mk], state[sk], eps)
        raise CheckpointError(f"latent stats {path} has none of the key pairs {pairs}; keys: {sorted(state)[:10]}")

    def _view(self, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if z.ndim < 2 or z.shape[1] != self.channels:
            raise ValueError(f"latents {tuple(z.shape)} do not have {self.channels} channels in dim 1")
        return v.to(device=z.device, dtype=z.dtype).reshape(1, -1, *([1] * (z.ndim - 2)))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(z - mean) / std per channel (dim 1)."""
        return (z - self._view(self.mean, z)) / self._view(self.std, z)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """z * std + mean per channel (dim 1): the inverse of normalize."""
        return z * self._view(self.std, z) + self._view(self.mean, z)
