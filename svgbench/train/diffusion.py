"""Flow-matching diffusion on an encoder's latents: the training loop of the generation task.

The model (svgbench.diffusion.models) learns velocity on per-channel normalised latents with the
rectified-flow objective (svgbench.diffusion.transport), keeps an EMA copy for sampling, and runs
resumably: `last.pt` holds model, EMA, optimiser, latent statistics and step; the batch of every step
(indices, noise, t, label dropout) is a function of (seed, step, rank), so a resumed run replays the
uninterrupted one exactly. The latents come as an in-memory tensor (small sets) or a ShardedStore /
CachedFeatures (any size): from a store, the statistics take one streaming pass and each batch reads
its rows from the store's Dataset, so the set is never materialised. Both sources give the same
statistics bit for bit and the same batches (epochs of DistributedSampler, each rank its own share).
An optional `evaluate(ema_model, stats, step)` callback adds rows (e.g. judge-FID) to the curve along
the way; the result's `extra["stats"]` holds the latent statistics. Under torchrun each rank draws its
own batch (DDP).

`diffusion_for` gives the tasks an encoder's model: a checkpoint the config names, the shipped one, or one trained
here on the encoder's cached latents, in a run folder named by a hash of its settings (runs with other settings
never resume it).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..data import num_classes_of
from ..registry import file_name
from ..diffusion.store import (DiffusionConfig, NoDiffusionModel, build_diffusion_model, checkpoint_model,
                               load_shipped, patch_for_grid)
from .common import RunDir, TrainResult, is_main, resume, rng_state, start_run, step_generator


ON_DEVICE_BYTES = 8 << 30  # latent sets up to this size are moved to the GPU once instead of per batch


class StepIndices:
    """Row indices of each step's batch on one rank: positions [step * B, (step + 1) * B) of the
    concatenated epochs of a DistributedSampler (shuffled with `seed`, epoch e seeded by seed + e,
    drop_last), so every rank sees its own disjoint share of each epoch, and the batch of a step is a
    function of (seed, step, rank, world) alone: a resumed run replays the uninterrupted one.
    Holds one epoch's indices (N / world int64), never rows."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        from torch.utils.data import DistributedSampler

        if n < world:
            raise ValueError(f"{n} latents cannot be shared over {world} ranks")
        self.sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.per_epoch, self.batch_size = len(self.sampler), batch_size
        self._epoch, self._order = None, None

    def epoch(self, e: int) -> torch.Tensor:
        if self._epoch != e:
            self.sampler.set_epoch(e)
            self._epoch, self._order = e, torch.tensor(list(self.sampler), dtype=torch.int64)
        return self._order

    def __call__(self, step: int) -> torch.Tensor:
        out, pos = [], step * self.batch_size
        while len(out) < self.batch_size:
            e, j = divmod(pos, self.per_epoch)
            take = min(self.batch_size - len(out), self.per_epoch - j)
            out.extend(self.epoch(e)[j:j + take].tolist())
            pos += take
        return torch.tensor(out, dtype=torch.int64)


def store_rows(dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 rows, int64 labels) of `idx` from a StoreDataset, read in row order (each shard mapped
    once per batch) and returned in the order of `idx`."""
    order = torch.argsort(idx, stable=True)
    items = [dataset[int(i)] for i in idx[order]]
    x = torch.empty((len(idx),) + tuple(items[0][0].shape), dtype=torch.float32)
    y = torch.empty(len(idx), dtype=torch.int64)
    x[order] = torch.stack([r for r, _ in items])
    y[order] = torch.tensor([lab for _, lab in items], dtype=torch.int64)
    return x, y


def train_diffusion(latents, labels: torch.Tensor | None, cfg: DiffusionConfig, *, num_classes: int,
                    evaluate=None, log=print, on_step=None) -> TrainResult:
    """latents: N x C x h x w tensor (un-normalised), or a ShardedStore / CachedFeatures of such rows
    (streamed); labels: N int64, or None to take the store's. -> TrainResult(model=EMA model, extra={"stats"})."""
    from ..diffusion.transport import LatentStats, RectifiedFlow
    from ..store import ShardedStore, channel_stats

    store = getattr(latents, "store", latents)  # CachedFeatures -> its ShardedStore
    if isinstance(store, ShardedStore):
        labels = store.labels() if labels is None else labels
        shape, source = store.shape, store
    else:
        source = latents = torch.as_tensor(latents).float()
        shape = tuple(latents.shape)
    if len(shape) != 4 or labels is None or labels.shape[0] != shape[0]:
        raise ValueError(f"latents must be N x C x h x w with one label each, got {tuple(shape)} "
                         f"and {None if labels is None else tuple(labels.shape)} labels")
    run, rank, world, device = start_run(cfg)
    model = build_diffusion_model(cfg, tuple(shape[1:]), num_classes).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    stats = LatentStats(*channel_stats(source))  # one float64 pass; the same numbers from a store or a tensor
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    flow = RectifiedFlow(shift=cfg.shift)
    start, _ = resume(run, {"model": model, "ema": ema, "opt": opt, "stats": stats}, log)
    stats = stats.to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    indices = StepIndices(shape[0], cfg.batch_size, cfg.seed, rank, world)
    if isinstance(store, ShardedStore):
        rows = store.dataset()

        def batch(idx):
            x, _ = store_rows(rows, idx)
            return stats.normalize(x), labels[idx]
    else:
        data = stats.normalize(latents)  # normalised once; batches index into it
        if device.type == "cuda" and data.numel() * 4 <= ON_DEVICE_BYTES:  # small latent sets live on the GPU
            data, labels = data.to(device), labels.to(device)

        def batch(idx):
            idx = idx.to(data.device)
            return data[idx], labels[idx]
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    t0 = saved_at = time.perf_counter()
    last = {}
    for step in range(start, cfg.steps):
        g = step_generator(cfg.seed, step, rank)
        x, y = batch(indices(step))
        x, y = x.to(device), y.to(device)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        out = flow.loss(ddp, x, y, generator=g)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"diffusion loss is {loss.item()} at step {step}; lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1 - cfg.ema)  # ema += (1 - decay) (model - ema)
        done = step + 1
        evaluated = {}
        if evaluate is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            evaluated = evaluate(ema, stats, done)  # on every rank: sampling is sharded over the processes
        if is_main():
            row = {"step": done, "loss": round(loss.item(), 5), "wall_s": round(time.perf_counter() - t0, 1)}
            row |= evaluated
            if done % 20 == 0 or len(row) > 3:
                run.log(row)
                log(" ".join(f"{k}={v}" for k, v in row.items()))
            last = row
            due = cfg.ckpt_minutes is not None and time.perf_counter() - saved_at >= 60 * cfg.ckpt_minutes
            if done % cfg.ckpt_every == 0 or done == cfg.steps or due:
                run.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                          "stats": stats.state_dict(), "rng": rng_state(), "step": done})
                saved_at = time.perf_counter()
        if on_step is not None:
            on_step(done)
    return TrainResult(last, ema, {"stats": stats})


def diffusion_for(encoder, dataset, cfg, device: str, evaluate=None, log=None):
    """The diffusion model of `encoder` for a generation config (its `diffusion*`, `train`, `retrain` and training
    fields) -> (EMA model, latent stats, curve rows, provenance dict): the config's checkpoint, else the shipped
    model, else one trained here; NoDiffusionModel when none is shipped and training was not asked for."""
    name, whash = encoder.spec.name, encoder.weights_hash()
    got = checkpoint_model(encoder, dataset, cfg, device)
    if got is not None:
        return got
    ncls = num_classes_of(dataset)
    if not cfg.retrain:
        shipped = load_shipped(encoder, dataset.data_config.name, ncls, device)
        if shipped is not None:
            return shipped
    if not (cfg.train or cfg.retrain):
        raise NoDiffusionModel(
            f"no shipped diffusion model matches encoder {name!r} (weights {whash}) on "
            f"{dataset.data_config.name}; run with --train-diffusion to train one (CPU: hours, GPU: minutes)")
    latents, labels = _latents(encoder, dataset, cfg, device)
    dcfg = DiffusionConfig(size=cfg.size, patch_size=patch_for_grid(latents.row_shape[-1]), steps=cfg.train_steps,
                           batch_size=cfg.train_batch, lr=cfg.lr, eval_every=cfg.eval_every, seed=cfg.seed)
    run = f"{file_name(name)}-{whash[:8]}-{dataset.data_config.key()}-{_training_key(dcfg, cfg)}"
    run_dir = Path(cfg.runs_dir) / run  # one folder, whatever the name holds (a family name's path or hub id)
    dcfg = dataclasses.replace(dcfg, out=str(run_dir))
    result = train_diffusion(latents, labels, dcfg, num_classes=ncls, evaluate=evaluate,
                             log=log or (lambda s: None))
    curve = [r for r in RunDir(run_dir).curve() if "fid" in r]
    return result.model.eval(), result.extra["stats"], curve, {"diffusion_weights": f"trained:{run_dir}",
                                                               "train_steps": cfg.train_steps, "run_dir": str(run_dir),
                                                               "diffusion_config": asdict(dcfg)}


def _latents(encoder, dataset, cfg, device):
    """-> (ShardedStore of the training split's latents, int64 labels): streamed by the training, never loaded whole."""
    from ..cache import cached_features
    from ..data import build_dataset

    data = dataset.data_config  # the dataset's own training split (its spec's: "train" for the built-ins)
    train = build_dataset(data.replace(split=data.spec().train_split, size=cfg.train_size))
    got = cached_features(encoder, train, kind="latent", batch_size=cfg.batch_size, device=device)
    if got.labels is None:
        raise ValueError(f"generation needs class labels in the training split of {train.data_config.key()}")
    return got.store, got.labels


def _training_key(dcfg: DiffusionConfig, cfg) -> str:
    """8 hex digits naming a training run's settings: runs with other settings never resume this one."""
    import hashlib
    import json

    d = asdict(dcfg) | {"train_size": cfg.train_size}
    d.pop("out")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
