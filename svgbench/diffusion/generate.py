"""Sampling an encoder's diffusion model into images: by global sample index, sharded over processes.

Sample i has label i mod num_classes and noise from (seed, i) alone, so any split of the indices over batches
or processes gives the same images.
"""

from __future__ import annotations

import contextlib
import os
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

# On a CPU the diffusion model is evaluated MODEL_CHUNK samples at a time, whatever the sampling batch: its
# elementwise work (layer norms, GELU, modulation, residuals) is bound by memory traffic, and a chunk's
# activations stay in the caches (tiny model, 64 tokens, 1 thread: 4.7-5.3 ms per image per evaluation at
# 32-64 samples, 7.1 at 256 in float32; bf16 autocast 2.9 at any size). The model's rows are independent,
# so the samples are the same bits as one whole-batch call on this machine's kernels.
MODEL_CHUNK = 64


class _Chunked:
    """The model evaluated `chunk` rows at a time (every input's first dimension is the batch)."""

    def __init__(self, model, chunk: int):
        self.model, self.chunk = model, chunk

    def __call__(self, x, *args, **kwargs):
        if len(x) <= self.chunk:
            return self.model(x, *args, **kwargs)
        k = self.chunk
        return torch.cat([self.model(x[i:i + k], *(a[i:i + k] if isinstance(a, torch.Tensor) and a.dim() else a
                                                   for a in args), **kwargs) for i in range(0, len(x), k)])

    def __getattr__(self, name):
        return getattr(self.model, name)


LABEL_POLICIES = ("balanced", "random")


def sample_labels(indices, num_classes: int, seed: int, policy: str = "balanced", device="cpu") -> torch.Tensor:
    """Class labels of the samples `indices` (long tensor on `device`): "balanced", i mod C (every class equally
    often, svgbench's default), or "random", i.i.d. uniform as DiT's and SiT's sample_ddp.py draw them
    (torch.randint per batch there; here drawn per index from the seed, so the labels do not depend on the
    batch size or the number of processes)."""
    import numpy as np

    idx = np.asarray(list(indices), dtype=np.int64)
    if policy == "balanced":
        out = idx % num_classes
    elif policy == "random":
        table = np.random.default_rng([int(seed), 0x1ABE1]).integers(0, num_classes, int(idx.max(initial=-1)) + 1)
        out = table[idx]
    else:
        raise ValueError(f"labels {policy!r}: one of {', '.join(LABEL_POLICIES)}")
    return torch.from_numpy(out).to(device)


def _label_policy(samplers: dict) -> str:
    """The label policy the samplers carry (a task's TaskSampler says; any other sampler: balanced)."""
    got = {getattr(s, "labels", "balanced") for s in samplers.values()}
    if len(got) > 1:
        raise ValueError(f"samplers of one pass draw labels differently: {sorted(got)}")
    return got.pop() if got else "balanced"


class _unfused_attention:
    """timm's attention layers (`fused_attn`) on their explicit q k^T, softmax, v path inside the block, restored
    after: on a CPU at the tiny models' 64 tokens, scaled_dot_product_attention's flash kernel is slower than the
    three plain ops (tiny model, 64 samples, 1 thread: 2.81 -> 2.53 ms per image per evaluation under bf16
    autocast, 5.17 -> 4.74 in float32); the same attention up to float rounding."""

    def __init__(self, model):
        self.layers = [m for m in (model.modules() if isinstance(model, torch.nn.Module) else ())
                       if isinstance(getattr(m, "fused_attn", None), bool)]

    def __enter__(self):
        self.was = [m.fused_attn for m in self.layers]
        for m in self.layers:
            m.fused_attn = False

    def __exit__(self, *exc):
        for m, was in zip(self.layers, self.was):
            m.fused_attn = was


@torch.no_grad()
def sample_batches(model, stats, encoder, indices, num_classes: int, sampler, *, seed: int, batch_size: int,
                   device: str, progress=None, cache: SampleCache | None = None):
    """Yields (global indices, uint8 B x 3 x H x W images on the CPU, sample seconds, decode seconds) per batch.

    Sample i has label i mod num_classes and noise from (seed, i) alone, so any split of the indices over
    batches or processes gives the same images. progress(k), if given, is called after each model evaluation
    with k = the batch's share of images (B / the sampler's nfe; float), the rest when the batch is decoded:
    the calls of one batch sum to its B images. cache: as in `sample_point_batches`.
    """
    on = None if progress is None else (lambda point, k: progress(k))
    for idx, _, x, ts, td in sample_point_batches(model, stats, encoder, indices, num_classes, {None: sampler},
                                                  seed=seed, batch_size=batch_size, device=device, progress=on,
                                                  cache=cache):
        yield idx, x, ts, td


@torch.no_grad()
def sample_point_batches(model, stats, encoder, indices, num_classes: int, samplers: dict, *, seed: int,
                         batch_size: int, device: str, progress=None, cache: SampleCache | None = None,
                         blocks: dict | None = None):
    """Every sampler of `samplers` ({point: sampler}) on each batch's one noise and labels: yields
    (global indices, point, uint8 images, sample seconds, decode seconds) per batch and point, one batch of
    images held at a time.

    The evaluations the samplers share exactly (`SharedEvaluations`: the first one, and Euler's second with
    Heun's first corrector at the same step count) run once; each point's sample seconds include the
    reused evaluations' seconds, so they are its cost when run alone. progress(point, k): as in
    `sample_batches`, per point (a reused evaluation reports nothing; the rest comes with the decoding).

    blocks ({point: size}): those points are sampled in whole aligned blocks of `size` indices ([k size,
    (k + 1) size)) covering the batch, and trimmed to it: the batches another cell samples with batch size `size`
    (`generate` over range(n)), so that its cached samples serve here bit for bit, and computing them here
    gives the same bits. cache: a SampleCache that batches of deterministic samplers are read from and
    written to (their seconds are those of the computation that wrote them).
    """
    from .samplers import SharedEvaluations, noise_for_indices

    indices = list(indices)
    c, h, w = model.in_channels, model.input_size, model.input_size
    blocks = blocks or {}
    policy = _label_policy(samplers)
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        noise = noise_for_indices(idx, (c, h, w), seed, device=device)
        labels = sample_labels(idx, num_classes, seed, policy, device)
        shared = SharedEvaluations() if len(samplers) > 1 else None
        for point, sampler in samplers.items():
            on = None if progress is None else (lambda k, point=point: progress(point, k))
            span = blocks.get(point)
            if span and _contiguous(idx):
                xs, ts, td = [], 0.0, 0.0
                for b0 in range(idx[0] // span * span, idx[-1] + 1, span):
                    blk = list(range(b0, b0 + span))
                    lo, hi = max(idx[0], b0) - b0, min(idx[-1] + 1, b0 + span) - b0
                    bn = noise_for_indices(blk, (c, h, w), seed, device=device)
                    bl = sample_labels(blk, num_classes, seed, policy, device)
                    x, s1, s2 = _cached_point(model, stats, encoder, blk, bn, bl, sampler, None, seed, device,
                                              cache, on, share=(hi - lo) / span)
                    xs.append(x[lo:hi])
                    ts, td = ts + s1 * (hi - lo) / span, td + s2 * (hi - lo) / span
                x = torch.cat(xs)
            else:
                x, ts, td = _cached_point(model, stats, encoder, idx, noise, labels, sampler, shared, seed, device,
                                          cache if _contiguous(idx) else None, on)
            yield idx, point, x, ts, td


def _contiguous(idx: list[int]) -> bool:
    return bool(idx) and idx[-1] - idx[0] == len(idx) - 1 and idx == list(range(idx[0], idx[-1] + 1))


def _cached_point(model, stats, encoder, idx, noise, labels, sampler, shared, seed, device, cache, progress,
                  share: float = 1.0):
    """One sampler on one batch -> (uint8 images, sample seconds, decode seconds): from `cache` where it holds
    this batch of this sampler (bit-identical to computing it: the key holds everything the images depend on),
    else computed (and stored). progress(k): the batch's images as the work advances, `share` of them."""
    key = None if cache is None else cache.key(model, stats, encoder, sampler, noise, labels, device)
    if key is not None:
        hit = cache.get(key)
        if hit is not None:
            if progress is not None:
                progress(len(idx) * share)
            return hit
    x, ts, td = _sample_point(model, stats, encoder, idx, noise, labels, sampler, shared, seed, device,
                              None if progress is None else (lambda k: progress(k * share)))
    if key is not None:
        cache.put(key, x, ts, td)
    return x, ts, td


def _sample_point(model, stats, encoder, idx, noise, labels, sampler, shared, seed, device, progress):
    """One sampler on one batch's noise and labels, decoded -> (uint8 images, sample seconds, decode seconds)."""
    from .samplers import index_seed, noise_for_indices

    c, h, w = noise.shape[1:]
    per_call = 1.0 / max(1, int(getattr(sampler, "nfe", 1) or 1))
    calls = [0]

    def on_call(b=len(idx)):
        calls[0] += 1
        if calls[0] * per_call <= 1 + 1e-9:  # an adaptive solver may take more evaluations than it did
            progress(b * per_call)

    cpu = torch.device(device).type == "cpu"
    net = _Chunked(model, MODEL_CHUNK) if cpu else model  # see MODEL_CHUNK
    net = net if progress is None else _Counted(net, on_call)
    charged = 0.0 if shared is None else shared.charged_s
    t0 = time.perf_counter()
    kw = {} if shared is None else {"shared": shared}
    if getattr(sampler, "stochastic", False):  # DDPM: step k's noise per sample index, as the start's
        kw["step_noise"] = lambda k, idx=idx: noise_for_indices(idx, (c, h, w), index_seed(k + 1, seed),
                                                                device=device)
    with _unfused_attention(model) if cpu else contextlib.nullcontext():
        z = sampler(net, noise, labels, **kw)
    _sync(device)
    t1 = time.perf_counter()
    x = torch.cat([encoder.decode(stats.denormalize(z[j:j + DECODE_CHUNK]))
                   for j in range(0, len(z), DECODE_CHUNK)])
    _sync(device)
    if progress is not None:  # zero-init guidance steps and reused evaluations call no model
        progress(max(0.0, len(idx) * (1 - calls[0] * per_call)))
    sample_s = t1 - t0 + (0.0 if shared is None else shared.charged_s - charged)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu(), sample_s, time.perf_counter() - t1


class SampleCache:
    """Decoded samples of whole sampling batches on disk (`root`/<key>.safetensors), keyed by a sha256 of
    everything the images depend on: the diffusion model's and latent statistics' bytes, the decoder's weights
    and spec, the sampler's settings, the batch's noise and labels themselves, the device type, the thread
    count, torch's version and the decode chunk. Two cells that sample the same batch with the same settings
    (the generation task's first batch and the sampling task's Euler point at the generation's steps) compute it
    once; a hit is bit-identical to recomputing. Only deterministic fixed-step ODE samplers on a CPU are cached:
    CUDA kernels need not repeat their bits, and adaptive or stochastic samplers are not keyed by their
    settings alone. The entry keeps its computation's seconds, which stay the batch's cost.

    The cache is bounded: after each write, the least recently used entries (a hit renews an entry's time) go
    until the folder holds at most `max_bytes`, so it does not grow with every model, sampler and seed ever run.
    An entry serves within a run (generation, then sampling) or on recomputing a cell, never as a result."""

    VERSION = "samples-v1"
    MAX_BYTES = 512 * 2**20  # the embedded default writes about 120 MB a run; 256-px batches are 48x larger

    def __init__(self, root, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_bytes = self.MAX_BYTES if max_bytes is None else int(max_bytes)
        self._digests: dict[int, tuple] = {}  # id(module) -> (module, digest): a cell hashes each module once

    def _digest(self, module) -> str:
        import hashlib

        got = self._digests.get(id(module))
        if got is not None and got[0] is module:
            return got[1]
        h = hashlib.sha256(type(module).__name__.encode())
        for k, v in sorted(module.state_dict().items()):
            h.update(f"{k}{tuple(v.shape)}{v.dtype}".encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self._digests[id(module)] = (module, h.hexdigest())
        return h.hexdigest()

    @staticmethod
    def sampler_settings(sampler) -> dict | None:
        """The settings of a fixed-step deterministic ODE sampler that move its samples, or None (not cached)."""
        if getattr(sampler, "stochastic", False) or getattr(sampler, "method", None) not in ("euler", "heun") \
                or not hasattr(sampler, "heun_final_euler"):
            return None
        return {k: repr(getattr(sampler, k, None)) for k in ("method", "steps", "shift", "guidance", "null_label",
                                                              "heun_final_euler", "autocast", "compiled", "tf32")}

    def key(self, model, stats, encoder, sampler, noise: torch.Tensor, labels: torch.Tensor, device) -> str | None:
        import hashlib
        import json

        settings = self.sampler_settings(sampler)
        if settings is None or torch.device(device).type != "cpu":
            return None
        spec = getattr(encoder, "spec", None)
        parts = {"version": self.VERSION, "model": self._digest(model), "stats": self._digest(stats),
                 "decoder": self._digest(encoder), "spec": repr(spec), "sampler": settings,
                 "threads": torch.get_num_threads(), "torch": torch.__version__, "decode_chunk": DECODE_CHUNK,
                 "model_chunk": MODEL_CHUNK, "attention": "unfused"}
        h = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
        for t in (noise, labels):
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:32]

    def get(self, key: str):
        """-> (uint8 images, sample seconds, decode seconds), or None where the entry is missing or unreadable."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from ..checkpoints import read_safetensors_metadata

        path = self.root / f"{key}.safetensors"
        if not path.exists():
            return None
        try:
            meta = read_safetensors_metadata(path)
            images = load_file(path)["images"]
            # the decoder's memory layout restored: the feature network rounds differently on channels-last input
            if meta.get("layout") == "channels_last":
                images = images.contiguous(memory_format=torch.channels_last)
            got = images, float(meta["sample_s"]), float(meta["decode_s"])
        except (OSError, KeyError, ValueError, SafetensorError):  # a damaged entry is recomputed (and replaced)
            return None
        with contextlib.suppress(OSError):  # used now: the last to go (another process may have pruned it)
            os.utime(path)
        return got

    def put(self, key: str, images: torch.Tensor, sample_s: float, decode_s: float) -> None:
        from ..checkpoints import save_safetensors

        save_safetensors({"images": images}, self.root / f"{key}.safetensors",
                         metadata={"sample_s": repr(float(sample_s)), "decode_s": repr(float(decode_s)),
                                   "layout": "channels_last" if _channels_last(images) else "contiguous"})
        self.prune(keep=key)

    def prune(self, keep: str | None = None) -> int:
        """Remove the least recently used entries until the cache holds at most `max_bytes` (never `keep`, the
        entry just written); -> the number removed. Entries another process removes meanwhile are skipped."""
        entries = []
        for p in self.root.glob("*.safetensors"):
            with contextlib.suppress(OSError):
                st = p.stat()
                entries.append((st.st_mtime, p.name, st.st_size, p))
        total = sum(e[2] for e in entries)
        removed = 0
        for _, name, size, p in sorted(entries):  # oldest use first
            if total <= self.max_bytes:
                break
            if name == f"{keep}.safetensors":
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed += 1
            total -= size
        return removed


def sample_cache():
    """The decoded-sample cache the generation and sampling cells share (`diffusion.generate.SampleCache`),
    beside the feature cache: with the embedded preset the sampling cell's Euler 25-step point is the
    generation cell's first batch, which costs 25 model evaluations a sample."""
    from ..cache import default_cache_dir

    return SampleCache(default_cache_dir() / "samples")


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def generate(model, stats, encoder, indices, num_classes: int, sampler, *, seed: int, batch_size: int,
             device: str, progress=None, cache: SampleCache | None = None) -> tuple[torch.Tensor, dict]:
    """Samples of the given global indices (uint8 N x 3 x H x W) and seconds per image (sampling, decoding).
    progress(k): images done (float, as `sample_batches` reports them, after each model evaluation)."""
    out, t_sample, t_decode = [], 0.0, 0.0
    indices = list(indices)
    for _, x, ts, td in sample_batches(model, stats, encoder, indices, num_classes, sampler, seed=seed,
                                       batch_size=batch_size, device=device, progress=progress, cache=cache):
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
                            seed: int, batch_size: int, device: str, keep: int = 10, writer=None, progress=None,
                            cache: SampleCache | None = None, blocks: dict | None = None):
    """`generate_features` for several samplers ({point: sampler}) on the same n noises in one pass
    (`sample_point_batches`, with its `cache` and `blocks`) -> {point: (features, first `keep` images, timing)}.
    writer: one sampler only."""
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
                                                  batch_size=batch_size, device=device, progress=progress,
                                                  cache=cache, blocks=blocks):
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
                 progress=None, cache: SampleCache | None = None) -> tuple[torch.Tensor, dict]:
    """All n samples; under torch.distributed each rank makes its shard and all ranks receive the whole set.
    progress(k): images done on this rank (float, after each model evaluation), scaled to the whole set's count.
    cache: as in `sample_point_batches`."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return generate(model, stats, encoder, range(n), num_classes, sampler, seed=seed, batch_size=batch_size,
                        device=device, progress=progress, cache=cache)
    rank, world = dist.get_rank(), dist.get_world_size()
    scaled = None if progress is None else (lambda k: progress(k * world))  # the shards advance together
    mine, timing = generate(model, stats, encoder, shard(n, rank, world), num_classes, sampler, seed=seed,
                            batch_size=batch_size, device=device, progress=scaled, cache=cache)
    parts = [None] * world
    dist.all_gather_object(parts, mine)
    return torch.cat([p for p in parts if p is not None and len(p)]), timing


def sample_strip(samples: torch.Tensor, classes: list[str], n: int = 10, size: int = 64, labels=None) -> dict:
    """The first n samples (labels 0..n-1, or `labels` where given) as one PNG strip of thumbnails at most `size`
    px, base64, for the record: what the scored samples look like, drawn by the report as results/samples.png."""
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
            "classes": [classes[(i if labels is None else int(labels[i])) % len(classes)] for i in range(len(x))]}


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
