"""A complete third-party task for svgbench: statistics of an encoder's latent space.

Run it for every encoder with:
    svgbench --plugin examples/my_task.py run --tasks latent-stats
It gets its own table (results/latent-stats.md), a scorecard column and a line in `svgbench list`.
"""

from dataclasses import dataclass

import numpy as np

from svgbench import MetricSpec, register_task


@dataclass(frozen=True)
class LatentStatsConfig:
    batch_size: int = 64  # encoder batch (the runner passes its --batch-size)
    num_images: int | None = None  # None: the whole evaluation set


def run_latent_stats(encoder, dataset, cfg: LatentStatsConfig, device="cpu", progress=None) -> dict:
    """Channel statistics of the latents (N x C x h x w), each spatial position one C-dim sample, in one pass."""
    from svgbench.cache import cached_features

    z = cached_features(encoder, dataset, kind="latent", batch_size=cfg.batch_size, device=device,
                        progress=progress).features
    z = z[: cfg.num_images] if cfg.num_images else z
    c = z.shape[1]
    n, s, ss = 0, np.zeros(c), np.zeros((c, c))  # float64 accumulators: sum and sum of outer products
    for i in range(0, len(z), 256):
        x = z[i:i + 256].double().permute(0, 2, 3, 1).reshape(-1, c).numpy()
        n, s, ss = n + len(x), s + x.sum(0), ss + x.T @ x
    mean = s / n
    cov = ss / n - np.outer(mean, mean)
    eig = np.clip(np.linalg.eigvalsh(cov), 0, None)
    p = eig / eig.sum()
    # effective rank (Roy & Vetterli 2007): exp of the entropy of the normalised covariance spectrum
    eff_rank = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    # differential entropy of the fitted Gaussian, per dimension, in bits (its NLL on the fitted data)
    _, logdet = np.linalg.slogdet(cov + 1e-12 * np.eye(c))
    bits = float(0.5 * np.log2(2 * np.pi * np.e) + 0.5 * logdet / np.log(2) / c)
    return {"effective_rank": eff_rank, "rank_fraction": eff_rank / c, "bits_per_dim": bits,
            "mean_abs_channel_mean": float(np.abs(mean).mean()), "mean_channel_std": float(np.sqrt(np.diag(cov)).mean()),
            "channels": c, "num_images": len(z)}


register_task(
    "latent-stats", run_latent_stats, LatentStatsConfig,
    # enters every cell's key and record: bump it with any change that can move a number, and the next run
    # recomputes this task's cells (and only those), reporting the old records as stale
    version=1,
    metrics=[
        MetricSpec("effective_rank", "effective rank", "{:.1f}", headline=True, scorecard_title="latent eff. rank"),
        MetricSpec("rank_fraction", "eff. rank / channels", "{:.3f}"),
        MetricSpec("bits_per_dim", "Gaussian bits/dim", "{:.3f}"),
        MetricSpec("mean_abs_channel_mean", "mean |channel mean|", "{:.4f}"),
        MetricSpec("mean_channel_std", "mean channel std", "{:.4f}"),
        MetricSpec("channels", "channels", "{:d}"),
        MetricSpec("num_images", "images", "{:d}"),
    ],
    description="latent channel statistics: effective rank of the covariance, Gaussian bits/dim")
