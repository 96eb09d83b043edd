"""`svgbench.evaluate`: the benchmark's cells on an encoder object or module, from a notebook.

It goes through `run_matrix`, the path of `svgbench run`: the object is registered under a name for the length
of the call, so its cells have the same keys, caches, seeds and numbers as the same model registered by name,
and a second call with unchanged weights reuses its records.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .encoders import LatentEncoder
from .encoders.base import EncoderInputError, EncoderSpec
from .encoders.registry import _REGISTRY, family_of, list_encoders, register_encoder, unregister_encoder
from .records import Record

__all__ = ["ModuleEncoder", "evaluate", "records_frame", "state_hash"]

DEFAULT_TASKS = ("reconstruction", "probe", "knn")


def state_hash(module: nn.Module) -> str:
    """sha256 over a module's parameter and buffer bytes (names and shapes included): what its numbers depend on."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class ModuleEncoder(LatentEncoder):
    """A plain nn.Module with `encode` (B x 3 x H x W in [-1, 1] -> B x C x h x w) and optionally `decode`
    (and `features`, returning {"patch", "pooled"}), seen through the encoder contract. The spec is read from
    one encode of a blank image at `resolution`."""

    def __init__(self, module: nn.Module, name: str, resolution: int):
        if not callable(getattr(module, "encode", None)):
            raise TypeError(f"{type(module).__name__} has no encode(images) method; svgbench.evaluate takes a "
                            f"registered name, a LatentEncoder, or a module with encode (and optionally decode)")
        module = module.eval()
        with torch.no_grad():
            p = next(module.parameters(), None)
            z = module.encode(torch.zeros(1, 3, resolution, resolution, device=p.device if p is not None else "cpu"))
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or resolution % z.shape[2] or z.shape[2] != z.shape[3]:
            raise EncoderInputError(f"{type(module).__name__}.encode must return B x C x h x w latents on a square "
                                    f"grid dividing {resolution}; got {getattr(z, 'shape', type(z).__name__)}")
        spec = EncoderSpec(name=name, family="module", latent_channels=int(z.shape[1]),
                           downsample=resolution // int(z.shape[2]), resolution=resolution,
                           has_decoder=callable(getattr(module, "decode", None)), weights=f"module:{state_hash(module)}",
                           feature_dim=int(z.shape[1]), notes=f"in-memory {type(module).__name__}")
        super().__init__(spec)
        self.module = module

    def _encode(self, images):
        return self.module.encode(images)

    def _decode(self, latent):
        return self.module.decode(latent).clamp(-1, 1)

    def _features(self, images):
        if callable(getattr(self.module, "features", None)):
            return self.module.features(images)
        return super()._features(images)


def _default_name(obj: nn.Module) -> str:
    base = re.sub(r"[^a-z0-9._+-]+", "-", type(obj).__name__.lower()).strip("-") or "module"
    return f"{base}-{state_hash(obj)[:8]}"


def records_frame(records: Iterable[Record]):
    """Records (e.g. `load_records(...)`, a run's) -> one row per (encoder, task, metric): value, its interval
    (level, method, n) or why it is n/a."""
    import pandas as pd

    rows = []
    for r in records:
        m = r.metrics
        for key, value in m.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            ci = (m.get("ci") or {}).get(key) or {}
            rows.append({"encoder": r.encoder, "task": r.task, "metric": key, "value": float(value),
                         "ci_low": ci.get("ci_low"), "ci_high": ci.get("ci_high"), "level": ci.get("level"),
                         "method": ci.get("method"), "n": ci.get("n"), "unavailable": None})
        for key, why in (m.get("unavailable") or {}).items():
            if m.get(key) is None:
                rows.append({"encoder": r.encoder, "task": r.task, "metric": key, "value": None,
                             "ci_low": None, "ci_high": None, "level": None, "method": None, "n": None,
                             "unavailable": why})
    df = pd.DataFrame(rows, columns=["encoder", "task", "metric", "value", "ci_low", "ci_high", "level", "method",
                                     "n", "unavailable"])
    # a record read back from disk lists its metrics in another order than a fresh one: sort, so both give one frame
    return df.sort_values(["encoder", "task", "metric"], kind="stable").reset_index(drop=True)


def evaluate(encoder: str | LatentEncoder | nn.Module, tasks=DEFAULT_TASKS, data=None, results: str | Path | None = None,
             *, name: str | None = None, settings: dict | None = None, preset: str | None = None, device: str = "auto",
             batch_size: int = 32, seed: int = 0, encoder_kwargs: dict | None = None,
             log: Callable[[str], None] | None = None):
    """Run `tasks` on `encoder` over `data`; return a pandas DataFrame (see `records_frame`).

    encoder: a registered name ("tiny-vae", "diffusers:DIR", "timm:MODEL@FILE"), a LatentEncoder, or an
    nn.Module with encode (and optionally decode). data: a DataConfig, a dataset name, a dict of its fields (over
    the preset's), or None (the preset's data; without a preset the embedded shapes at 64 px). results: where
    records are kept (default: `evaluate/` beside the feature cache), so a rerun with the same weights is read
    back, not recomputed. name: the row name of an object (default: its spec's name, or class name + weights
    hash). settings: {task: {field: value}} as `svgbench run --set`. preset: a `svgbench run --preset` name
    ("tiny": the cells, and keys, of `svgbench run`), or None for each task's default settings.
    """
    import dataclasses

    from .cache import default_cache_dir
    from .runner import RunConfig, run_matrix

    if isinstance(tasks, str):
        tasks = (tasks,)
    results = Path(results) if results is not None else default_cache_dir().parent / "evaluate"
    run = RunConfig.from_preset(preset, tasks=tuple(tasks), data=data, settings=settings, device=device,
                                results_dir=str(results), batch_size=batch_size, seed=seed)
    data = run.data
    registered = None
    if isinstance(encoder, str):
        enc_name = encoder
    elif isinstance(encoder, nn.Module):
        obj = encoder if isinstance(encoder, LatentEncoder) else None
        enc_name = name or (obj.spec.name if obj is not None and not family_of(obj.spec.name) else None)
        if obj is None:
            enc_name = enc_name or _default_name(encoder)
            obj = ModuleEncoder(encoder, enc_name, data.resolution)
        elif name and name != obj.spec.name:
            obj.spec = obj.spec.replace(name=name)
        enc_name = enc_name or _default_name(encoder)
        if enc_name in list_encoders() and _REGISTRY[enc_name].source != "evaluate":
            raise ValueError(f"svgbench.evaluate: {enc_name!r} is already a registered encoder (by "
                             f"{_REGISTRY[enc_name].source}); pass name='another-name' for this object")
        unregister_encoder(enc_name)
        register_encoder(enc_name, lambda **_: obj, spec=obj.spec, source="evaluate")
        registered = enc_name
    else:
        raise TypeError(f"svgbench.evaluate takes a registered name, a LatentEncoder or an nn.Module with encode; "
                        f"got {type(encoder).__name__}")
    cfg = dataclasses.replace(run, encoders=(enc_name,),
                              encoder_kwargs={enc_name: dict(encoder_kwargs or {})} if encoder_kwargs else {})
    try:
        summary = run_matrix(cfg, log=log or (lambda msg: None))
    finally:
        if registered is not None:
            unregister_encoder(registered)
    if summary.failures:
        raise RuntimeError("svgbench.evaluate: " + "; ".join(f"{f.encoder} / {f.task}: {f.error}"
                                                            for f in summary.failures))
    return records_frame(summary.records)
