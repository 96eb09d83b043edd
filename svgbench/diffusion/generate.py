"""Sampling an encoder's diffusion model into images: by global sample index, sharded over processes.

Sample i has label i mod num_classes and noise from (seed, i) alone, so any split of the indices over batches
or processes gives the same images.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def shard(n: int, rank: int, world: int) -> list[int]:
    """The global sample indices rank `rank` of `world` generates (contiguous shards)."""
    per = -(-n // world)
    return list(range(rank * per, min(n, (rank + 1) * per)))


class _Counted:
    """The model, reporting each evaluation: progress inside a batch, whose many steps can take minutes."""

    def __init__(self, model, on_call):
        self.model, self.on_call = model, on_call

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        self.on_call()
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)


# Generated latents are decoded DECODE_CHUNK at a time, whatever the sampling batch: a whole batch's
# full-resolution decoder activations overflow the CPU's caches (the tiny decoders, 2 threads: 11 ms per image
# at 256, 3.8 ms at 32), and a 256-px decoder's GPU memory stays bounded.
DECODE_CHUNK = 32


@torch.no_grad()
def sample_batches(model, stats, encoder, indices, num_classes: int, sampler, *, seed: int, batch_size: int,
                   device: str, progress=None):
    """Yields (global indices, uint8 B x 3 x H x W images on the CPU, sample seconds, decode seconds) per batch.

    Sample i has label i mod num_classes and noise from (seed, i) alone, so any split of the indices over
    batches or processes gives the same images. progress(k), if given, is called after each model evaluation
    with k = the batch's share of images (B / the sampler's nfe; float), the rest when the batch is decoded:
    the calls of one batch sum to its B images.
    """
    on = None if progress is None else (lambda point, k: progress(k))
    for idx, _, x, ts, td in sample_point_batches(model, stats, encoder, indices, num_classes, {None: sampler},
                                                  seed=seed, batch_size=batch_size, device=device, progress=on):
        yield idx, x, ts, td


@torch.no_grad()
def sample_point_batches(model, stats, encoder, indices, num_classes: int, samplers: dict, *, seed: int,
                         batch_size: int, device: str, progress=None):
    """Every sampler of `samplers` ({point: sampler}) on each batch's one noise and labels: yields
    (global indices, point, uint8 images, sample seconds, decode seconds) per batch and point, one batch of
    images held at a time.

    The evaluations the samplers share exactly (`SharedEvaluations`: the first one, and Euler's second with
    Heun's first corrector at the same step count) run once; each point's sample seconds include the
    reused evaluations' seconds, so they are its cost when run alone. progress(point, k): as in
    `sample_batches`, per point (a reused evaluation reports nothing; the rest comes with the decoding).
    """
    from .samplers import SharedEvaluations, index_seed, noise_for_indices

    indices = list(indices)
    c, h, w = model.in_channels, model.input_size, model.input_size
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        noise = noise_for_indices(idx, (c, h, w), seed, device=device)
        labels = torch.tensor(idx, device=device) % num_classes
        shared = SharedEvaluations() if len(samplers) > 1 else None
        for point, sampler in samplers.items():
            per_call = 1.0 / max(1, int(getattr(sampler, "nfe", 1) or 1))
            calls = [0]

            def on_call(b=len(idx), point=point, per_call=per_call, calls=calls):
                calls[0] += 1
                if calls[0] * per_call <= 1 + 1e-9:  # an adaptive solver may take more evaluations than it did
                    progress(point, b * per_call)

            net = model if progress is None else _Counted(model, on_call)
            charged = 0.0 if shared is None else shared.charged_s
            t0 = time.perf_counter()
            kw = {} if shared is None else {"shared": shared}
            if getattr(sampler, "stochastic", False):  # DDPM: step k's noise per sample index, as the start's
                kw["step_noise"] = lambda k, idx=idx: noise_for_indices(idx, (c, h, w), index_seed(k + 1, seed),
                                                                        device=device)
            z = sampler(net, noise, labels, **kw)
            _sync(device)
            t1 = time.perf_counter()
            x = torch.cat([encoder.decode(stats.denormalize(z[j:j + DECODE_CHUNK]))
                           for j in range(0, len(z), DECODE_CHUNK)])
            _sync(device)
            if progress is not None:  # zero-init guidance steps and reused evaluations call no model
                progress(point, max(0.0, len(idx) * (1 - calls[0] * per_call)))
            sample_s = t1 - t0 + (0.0 if shared is None else shared.charged_s - charged)
            yield idx, point, ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu(), sample_s, \
                time.perf_counter() - t1


def generate(model, stats, encoder, indices, num_classes: int, sampler, *, seed: int, batch_size: int,
             device: str, progress=None) -> tuple[torch.Tensor, dict]:
    """Samples of the given global indices (uint8 N x 3 x H x W) and seconds per image (sampling, decoding).
    progress(k): images done (float, as `sample_batches` reports them, after each model evaluation)."""
    out, t_sample, t_decode = [], 0.0, 0.0
    indices = list(indices)
    for _, x, ts, td in sample_batches(model, stats, encoder, indices, num_classes, sampler, seed=seed,
                                       batch_size=batch_size, device=device, progress=progress):
        out.append(x)
        t_sample, t_decode = t_sample + ts, t_decode + td
    n = max(1, len(indices))
    return torch.cat(out), {"sample_s_per_image": t_sample / n, "decode_s_per_image": t_decode / n}


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def generate_features(model, stats, encoder, n: int, num_classes: int, sampler, features, *, seed: int,
                      batch_size: int, device: str, keep: int = 10, writer=None, progress=None):
    """Features of n samples without keeping the images: -> (features dict of N-row CPU tensors in sample order,
    the first `keep` images, timing).

    features(uint8 B x 3 x H x W) -> {name: B x D tensor}. Under torch.distributed each rank samples its shard
    and only the features are gathered (every rank gets all of them). writer.write(images) receives every image
    in order (one process only: ranks do not exchange images).
    """
    on = None if progress is None else (lambda point, k: progress(k))
    return generate_point_features(model, stats, encoder, n, num_classes, {None: sampler}, features, seed=seed,
                                   batch_size=batch_size, device=device, keep=keep, writer=writer,
                                   progress=on)[None]


def generate_point_features(model, stats, encoder, n: int, num_classes: int, samplers: dict, features, *,
                            seed: int, batch_size: int, device: str, keep: int = 10, writer=None, progress=None):
    """`generate_features` for several samplers ({point: sampler}) on the same n noises in one pass
    (`sample_point_batches`) -> {point: (features, first `keep` images, timing)}. writer: one sampler only."""
    import torch.distributed as dist

    rank, world = _world()
    if writer is not None and (world > 1 or len(samplers) > 1):
        raise ValueError("streaming samples to an .npz is done in one process for one sampler; "
                         "run without torch.distributed")
    parts = {p: [] for p in samplers}
    kept = {p: [] for p in samplers}
    secs = {p: [0.0, 0.0] for p in samplers}
    mine = shard(n, rank, world)
    for idx, p, x, ts, td in sample_point_batches(model, stats, encoder, mine, num_classes, samplers, seed=seed,
                                                  batch_size=batch_size, device=device, progress=progress):
        parts[p].append({k: v.cpu() for k, v in features(x).items()})
        if writer is not None:
            writer.write(x)
        if idx[0] < keep:
            kept[p].append(x[: keep - idx[0]])
        secs[p][0] += ts
        secs[p][1] += td
    out = {}
    for p in samplers:
        feats = {k: torch.cat([q[k] for q in parts[p]]) for k in parts[p][0]} if parts[p] else {}
        timing = {"sample_s_per_image": secs[p][0] / max(1, len(mine)),
                  "decode_s_per_image": secs[p][1] / max(1, len(mine))}
        mine_kept = kept[p]
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, (feats, mine_kept, timing))
            feats = {k: torch.cat([g[0][k] for g in gathered if g[0]])
                     for k in next(g[0] for g in gathered if g[0])}
            mine_kept = gathered[0][1]
        first = torch.cat(mine_kept)[:keep] if mine_kept else torch.empty(0, dtype=torch.uint8)
        out[p] = (feats, first, timing)
    return out


def generate_all(model, stats, encoder, n, num_classes, sampler, *, seed, batch_size, device,
                 progress=None) -> tuple[torch.Tensor, dict]:
    """All n samples; under torch.distributed each rank makes its shard and all ranks receive the whole set.
    progress(k): images done on this rank (float, after each model evaluation), scaled to the whole set's count."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return generate(model, stats, encoder, range(n), num_classes, sampler, seed=seed, batch_size=batch_size,
                        device=device, progress=progress)
    rank, world = dist.get_rank(), dist.get_world_size()
    scaled = None if progress is None else (lambda k: progress(k * world))  # the shards advance together
    mine, timing = generate(model, stats, encoder, shard(n, rank, world), num_classes, sampler, seed=seed,
                            batch_size=batch_size, device=device, progress=scaled)
    parts = [None] * world
    dist.all_gather_object(parts, mine)
    return torch.cat([p for p in parts if p is not None and len(p)]), timing


def sample_strip(samples: torch.Tensor, classes: list[str], n: int = 10, size: int = 64) -> dict:
    """The first n samples (labels 0..n-1) as one PNG strip of thumbnails at most `size` px, base64, for the
    record: what the scored samples look like, drawn by the report as results/samples.png."""
    import base64
    import io

    from PIL import Image

    x = samples[:n]
    if x.shape[-1] > size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    strip = torch.cat(list(x), dim=2).permute(1, 2, 0).contiguous().numpy()  # H x (n W) x 3
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG", optimize=True)
    return {"png_base64": base64.b64encode(buf.getvalue()).decode("ascii"), "count": len(x),
            "classes": [classes[i % len(classes)] for i in range(len(x))]}


def save_adm_npz(images: torch.Tensor, labels: torch.Tensor, path: str | Path) -> Path:
    """Samples as the ADM evaluator (guided-diffusion's evaluations/evaluator.py) reads them: arr_0 = N x H x W x 3
    uint8, arr_1 = class labels. Written atomically."""
    import io

    import numpy as np

    from ..checkpoints import atomic_write_bytes

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"ADM .npz takes N x 3 x H x W uint8 samples, got {tuple(images.shape)} {images.dtype}")
    buf = io.BytesIO()
    np.savez(buf, images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy().astype(np.int64))
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
