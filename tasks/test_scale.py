"""Memory is bounded by the batch, not the dataset: SVG-shaped latents through the sharded store.

A subprocess (so that its peak RSS is its own) encodes a synthetic set with a cheap encoder that
produces SVG-shaped 392 x 16 x 16 latents (a fixed random 1 x 1 projection of 3 x 16 x 16 noise)
through `svgbench.cache` into the store, then computes per-channel latent statistics and FID moments
of the pooled features by streaming. The cap is the process's RSS after its imports and a warm-up
plus CAP_MB; the set is sized so that its fp32 latents take 4x the cap. Peak RSS (getrusage
ru_maxrss) must stay under the cap: a correctness property, not a timing. Throughput is reported.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

CAP_MB = 200
LATENT = (392, 16, 16)

_SCRIPT = textwrap.dedent(r"""
    import json, math, resource, sys, tempfile, time
    import numpy as np, torch
    from svgbench.cache import cached_features_all
    from svgbench.encoders import EncoderSpec, LatentEncoder
    from svgbench.store import channel_stats, fid_moments

    torch.set_num_threads(1)
    C, H = 392, 16

    class Cfg:
        def __init__(self, n): self.n = n
        def key(self): return f"scale-noise-{self.n}"

    class Noise(torch.utils.data.Dataset):
        def __init__(self, n): self.n, self.data_config = n, Cfg(n)
        def __len__(self): return self.n
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.rand(3, H, H, generator=g) * 2 - 1, "label": i % 10}

    class Projection(LatentEncoder):
        def __init__(self):
            super().__init__(EncoderSpec(name="scale-projection", family="test", latent_channels=C, downsample=1,
                                         resolution=H, has_decoder=False, weights="random"))
            torch.manual_seed(0)
            self.proj = torch.nn.Conv2d(3, C, 1)
        def _encode(self, x): return self.proj(x)

    def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    enc, cap_mb = Projection(), float(sys.argv[2])
    with tempfile.TemporaryDirectory() as warm:  # every code path once, on a tiny set
        cached_features_all(enc, Noise(64), kinds=("latent", "pooled"), batch_size=64, cache_dir=warm)
    base = rss_mb()
    cap = base + cap_mb
    n = math.ceil(4 * cap * 2**20 / (C * H * H * 4) / 64) * 64  # fp32 latents = 4 x cap
    t0 = time.perf_counter()
    out = cached_features_all(enc, Noise(n), kinds=("latent", "pooled"), batch_size=64, cache_dir=sys.argv[1])
    t1 = time.perf_counter()
    mean, std = channel_stats(out["latent"].store)
    t2 = time.perf_counter()
    mu, cov = fid_moments(out["pooled"].store)
    t3 = time.perf_counter()
    assert mean.shape == (C,) and cov.shape == (C, C) and torch.isfinite(cov).all()
    print(json.dumps({"images": n, "latent_gb_fp32": n * C * H * H * 4 / 2**30, "baseline_mb": base,
                      "cap_mb": cap, "peak_mb": rss_mb(), "encode_img_per_s": n / (t1 - t0),
                      "stats_img_per_s": n / (t2 - t1), "fid_moments_s": t3 - t2,
                      "shards": out["latent"].store.num_shards, "store_dtype": out["latent"].store.meta["dtype"]}))
""")


def test_store_memory_is_bounded_by_the_batch(benchmark, tmp_path):
    def run():
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "cache"), str(CAP_MB)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    m = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(m)
    print("\nstore scale:", json.dumps(m))
    assert m["latent_gb_fp32"] * 1024 >= 4 * m["cap_mb"]
    assert m["peak_mb"] < m["cap_mb"], f"peak RSS {m['peak_mb']:.0f} MB over the cap {m['cap_mb']:.0f} MB"


def test_streamed_statistics_equal_in_memory_on_a_small_set(tmp_path, monkeypatch):
    import svgbench.store as store
    from svgbench.cache import cached_features_all
    from svgbench.data import DataConfig, build_dataset
    from svgbench.encoders import EncoderSpec, LatentEncoder
    from svgbench.store import channel_stats, fid_moments

    class Projection(LatentEncoder):
        def __init__(self):
            super().__init__(EncoderSpec(name="scale-projection-small", family="test", latent_channels=LATENT[0],
                                         downsample=2, resolution=32, has_decoder=False, weights="random"))
            torch.manual_seed(0)
            self.proj = torch.nn.Conv2d(3, LATENT[0], 2, 2)

        def _encode(self, x):
            return self.proj(x)

    monkeypatch.setattr(store, "MAX_SHARD_ROWS", 8)  # several shards even for 24 images
    got = cached_features_all(Projection(), build_dataset(DataConfig(resolution=32, size=24, split="val")),
                              kinds=("latent", "pooled"), batch_size=4, cache_dir=tmp_path)
    assert got["latent"].store.num_shards == 3 and got["latent"].features.shape == (24,) + LATENT
    for streamed, in_memory in ((channel_stats(got["latent"].store, batch_size=5), channel_stats(got["latent"].features)),
                                (fid_moments(got["pooled"].store, batch_size=7), fid_moments(got["pooled"].features))):
        for a, b in zip(streamed, in_memory):
            assert a.dtype == torch.float64 and torch.equal(a, b)
