"""Memory is bounded by the batch, not the dataset: SVG-shaped latents through the sharded store.

A subprocess (so that its peak RSS is its own) encodes a synthetic set with a cheap encoder that
produces SVG-shaped 392 x 16 x 16 latents (a fixed random 1 x 1 projection of 3 x 16 x 16 noise)
through `svgbench.cache` into the store, then computes per-channel latent statistics and FID moments
of the pooled features by streaming. The cap is the process's RSS after its imports and a warm-up
plus CAP_MB; the set is sized so that its fp32 latents take 4x the whole cap with `--benchmark` (9,024
latents, 3.4 GB; the published row), 4x CAP_MB in quick mode (2,112 latents: a process that held them, even
in the store's fp16, would pass the cap). Peak RSS (getrusage ru_maxrss) must stay under the cap: a
correctness property, not a timing. Throughput is reported. The store goes with the test's folder.

Encoding throughput through the pipeline (`test_pipeline_encoding_throughput`): JPEG files at 256 px on
disk (an ImageNet-layout folder), the SVG encoder's ViT-S/16+ configuration at random init loaded from a
safetensors file it writes. Both sides run the same encoder on the same consecutive batches:
- bare: the images decoded once before any timing and held in memory; per batch, `encoder.encode`
  (eval, no grad), output dropped;
- pipeline: `svgbench.cache.cached_features(kind="latent")` into an empty cache folder with 2 DataLoader
  workers: JPEG decode and resize in the workers, the same forward, fp16 check, shards written.
Bare passes and pipeline calls alternate; the ratio is the median over rounds of bare time / pipeline
time (goal >= 0.9x; reported, not asserted). The stored latents equal the bare outputs to fp16
precision. Quick mode (`pytest tasks/`): a depth-1 configuration and 8 images, sanity only;
`--benchmark`: the published sizes, and the rows go to <results>/scale.md and scale.csv.
"""

import csv
import io
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from svgbench.checkpoints import atomic_write_bytes

from .conftest import rows_written_by

CAP_MB = 200
LATENT = (392, 16, 16)
PIPELINE_GOAL = 0.9  # pipeline throughput / bare forward throughput, at least (reported)
WORKERS = 2
CSV_FIELDS = ("benchmark", "subject", "images", "batch_size", "workers", "rounds", "bare_img_per_s",
              "pipeline_img_per_s", "ratio", "goal", "meets_goal", "peak_mb", "cap_mb", "note")


def write_scale(results: Path, rows: list[dict]) -> None:
    """<results>/scale.md and scale.csv from the rows of this module's benchmarks."""
    results.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(results / "scale.csv", buf.getvalue().encode())
    lines = ["# scale", "", "Measured by `pytest tasks/test_scale.py --benchmark` (see its docstring); wall-clock "
             "values vary with the machine's load.", "",
             "| benchmark | subject | images | batch | workers | rounds | bare img/s | pipeline img/s | ratio "
             "| goal | peak RSS MB / cap | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(k, fmt="{:.2f}"):
            v = r.get(k)
            return "" if v is None else fmt.format(v) if isinstance(v, float) else str(v)
        mem = f"{r['peak_mb']:.0f} / {r['cap_mb']:.0f}" if r.get("peak_mb") is not None else ""
        goal = f">= {r['goal']}x ({'met' if r['meets_goal'] else 'not met'})" if r.get("goal") else ""
        lines.append(f"| {r['benchmark']} | {r['subject']} | {f('images')} | {f('batch_size')} | {f('workers')} "
                     f"| {f('rounds')} | {f('bare_img_per_s')} | {f('pipeline_img_per_s')} | {f('ratio', '{:.3f}x')} "
                     f"| {goal} | {mem} | {r.get('note', '')} |")
    atomic_write_bytes(results / "scale.md", ("\n".join(lines) + "\n").encode())


scale_rows = rows_written_by(write_scale)

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
    sized = cap if sys.argv[3] == "full" else cap_mb
    n = math.ceil(4 * sized * 2**20 / (C * H * H * 4) / 64) * 64  # fp32 latents = 4 x that
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


def test_store_memory_is_bounded_by_the_batch(benchmark, tmp_path, full, scale_rows):
    def run():
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "cache"), str(CAP_MB),
                               "full" if full else "quick"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    m = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(m)
    print("\nstore scale:", json.dumps(m))
    scale_rows.append({"benchmark": "bounded memory", "subject": "392x16x16 projection latents -> store -> stats",
                       "images": m["images"], "batch_size": 64, "workers": 0, "rounds": 1,
                       "pipeline_img_per_s": m["encode_img_per_s"], "peak_mb": m["peak_mb"], "cap_mb": m["cap_mb"],
                       "note": f"fp32 latents {m['latent_gb_fp32']:.2f} GiB; stats pass {m['stats_img_per_s']:.0f} "
                               f"img/s; {m['shards']} shards ({m['store_dtype']})"})
    assert m["latent_gb_fp32"] * 1024 >= 4 * (m["cap_mb"] if full else CAP_MB)
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


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)


def _svg_encoder(folder: Path, full: bool):
    """The SVG encoder (published ViT-S/16+ configuration, or a depth-1 one in quick mode) at random init,
    written to and loaded from an svgbench safetensors file."""
    import dataclasses

    from svgbench.encoders import create_encoder
    from svgbench.encoders.svg import ENCODER_CONFIGS, create_svg

    torch.manual_seed(0)
    if full:
        ref = create_encoder("svg-dinov3-vits16plus", weights="random")
        path = folder / "svg-dinov3-vits16plus-random.safetensors"
        ref.save(path)
        return create_encoder("svg-dinov3-vits16plus", weights=str(path))
    cfg = dataclasses.replace(ENCODER_CONFIGS["svg-dinov3-vits16plus"][0], dino_overrides={"depth": 1},
                              residual_layers=1, decoder_ch=8, decoder_res_blocks=1, decoder_attn_resolutions=(),
                              decoder_groups=4)
    ref = create_svg("svg-dinov3-vits16plus", weights="random", config=cfg)
    path = folder / "svg-depth1-random.safetensors"
    ref.save(path)
    return create_svg("svg-dinov3-vits16plus", weights=str(path), config=cfg)


def test_pipeline_encoding_throughput(benchmark, tmp_path, full, scale_rows):
    from svgbench.cache import cached_features
    from svgbench.data import DataConfig, build_dataset
    from svgbench.data.synthetic import write_stripes_imagefolder

    n, batch, rounds = (32, 16, 3) if full else (8, 4, 1)
    root = write_stripes_imagefolder(tmp_path / "imagenet", {"val": n // 4}, num_classes=4, resolution=256)
    dataset = build_dataset(DataConfig(name="imagefolder", root=str(root), split="val", resolution=256, size=n))
    encoder = _svg_encoder(tmp_path, full).eval()
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])  # decoded once, outside any timing
    batches = [images[i:i + batch] for i in range(0, len(images), batch)]

    def bare(keep=False):
        t0 = time.perf_counter()
        out = [encoder.encode(b) for b in batches]
        return time.perf_counter() - t0, (torch.cat(out) if keep else None)

    def pipeline():
        with tempfile.TemporaryDirectory(dir=tmp_path) as cache:
            t0 = time.perf_counter()
            got = cached_features(encoder, dataset, kind="latent", batch_size=batch, cache_dir=cache,
                                  num_workers=WORKERS)
            return time.perf_counter() - t0, got.features.clone()

    _, reference = bare(keep=True)  # warm-up, and the values the pipeline must reproduce
    bare_s, pipe_s = [], []

    def one_round():
        bare_s.append(bare()[0])
        t, stored = pipeline()
        pipe_s.append(t)
        return stored

    stored = benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    torch.testing.assert_close(stored, reference, atol=0.02 * float(reference.abs().max()), rtol=2e-3)
    ratio = statistics.median(b / p for b, p in zip(bare_s, pipe_s))
    row = {"benchmark": "encoding throughput",
           "subject": f"svg-dinov3-vits16plus encode ({'ViT-S/16+' if full else 'depth-1'}, random init), "
                      f"256 px JPEG", "images": n, "batch_size": batch, "workers": WORKERS, "rounds": rounds,
           "bare_img_per_s": n / statistics.median(bare_s), "pipeline_img_per_s": n / statistics.median(pipe_s),
           "ratio": ratio, "goal": PIPELINE_GOAL, "meets_goal": ratio >= PIPELINE_GOAL,
           "note": f"{torch.get_num_threads()} torch threads"}
    benchmark.extra_info.update(row)
    scale_rows.append(row)
    print("\npipeline throughput:", json.dumps(row))
    assert stored.shape == (n,) + LATENT
