"""The encoder x task matrix: one record per cell, resumable, written atomically.

A cell is (task, encoder, dataset, config). Its record is one JSON file under
results/records/<task>/, named by the cell's key, which hashes everything the numbers depend on:
task config, dataset config, encoder name and build arguments, and the hash of the encoder's
weights. A rerun skips cells whose record exists; a crash loses at most the cell in flight.

Interrupting a run (Ctrl-C) raises RunInterrupted, which names the cell in flight; records and
feature-cache entries are only ever replaced whole (temporary file + rename), so an interrupt or a
kill at any moment leaves every finished cell reusable and nothing half-written under its name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import distributed as dist
from .claims import read_claim, release, shard_of, try_claim
from .data import DataConfig, build_dataset
from .errors import UserError, debug_enabled
from .presets import EMBEDDED_ENCODERS
from .records import Record, load_records, read_record, record_path, write_record

__all__ = ["CellFailure", "RunConfig", "RunInterrupted", "RunSummary", "load_records", "read_record", "record_path",
           "resolve_device", "run_matrix", "write_record"]


@dataclass
class RunConfig:
    encoders: tuple[str, ...] = EMBEDDED_ENCODERS
    tasks: tuple[str, ...] = ("reconstruction",)
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    results_dir: str = "results"
    batch_size: int = 32
    skip_existing: bool = True
    encoder_kwargs: dict = field(default_factory=dict)  # encoder name -> create_encoder kwargs
    task_overrides: dict = field(default_factory=dict)  # task name -> config field overrides
    seed: int = 0
    shard: tuple[int, int] | None = None  # (I, N): only cells I, I+N, ... of the matrix (`--shard I/N`)
    claims: bool = True  # claim each cell, so processes sharing results_dir compute it once


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return device


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("svgbench", "timm", "diffusers", "torch-fidelity", "torchmetrics", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during run_matrix. `cell` is what was in flight (e.g. "tiny-ssl / probe"), or None
    between cells; `computed` / `skipped` count the cells finished (and saved) / reused before it."""

    def __init__(self, cell: str | None, computed: int, skipped: int, results_dir: str):
        super().__init__(cell)
        self.cell, self.computed, self.skipped, self.results_dir = cell, computed, skipped, results_dir


@dataclass
class CellFailure:
    task: str
    encoder: str
    error: str


@dataclass
class RunSummary:
    records: list[dict]
    failures: list[CellFailure]
    computed: int
    skipped: int
    claimed_elsewhere: int = 0  # cells left to the other processes that held their claims
    cell_times: list[tuple[str, float]] = field(default_factory=list)  # (cell, seconds) computed here
    not_applicable: int = 0  # cells recorded as n/a with their reason (e.g. reconstruction without a decoder)


def run_matrix(cfg: RunConfig, log=None) -> RunSummary:
    """Run every (encoder, task) cell of `cfg`; return the records (new and reused) and the failures.

    Ctrl-C raises RunInterrupted (a KeyboardInterrupt) naming the cell in flight; the cells finished
    before it keep their records, so rerunning the same configuration resumes after them.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    state = {"cell": None, "computed": 0, "skipped": 0, "claimed": 0, "na": 0, "times": []}
    try:
        return _run_cells(cfg, log, state)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(state["cell"], state["computed"], state["skipped"], cfg.results_dir) from None


def _run_cells(cfg: RunConfig, log, state: dict) -> RunSummary:
    from .encoders import create_encoder, encoder_spec
    from .tasks import get_task

    device = str(dist.device()) if cfg.device == "auto" and dist.is_initialized() else resolve_device(cfg.device)
    tasks = [get_task(t) for t in cfg.tasks]
    configs = {t.name: task_config(t, cfg) for t in tasks}  # strict: an unknown field fails here, before any work
    unknown = sorted(set(cfg.task_overrides) - {t.name for t in tasks} - set(_known_task_names()))
    if unknown:
        raise ValueError(f"run config: settings for unknown task(s) {', '.join(unknown)}; "
                         f"tasks: {', '.join(_known_task_names())}")
    for name in cfg.encoders:
        encoder_spec(name)  # unknown names fail before any work, with the list of known ones
    dataset = build_dataset(cfg.data)
    records, failures = [], []
    main = dist.is_main()
    cells = [(name, task) for name in cfg.encoders for task in tasks]
    if cfg.shard is not None:
        cells = shard_of(cells, *cfg.shard)
        log(f"shard {cfg.shard[0]}/{cfg.shard[1]}: {len(cells)} of {len(cfg.encoders) * len(tasks)} cells")
    for name in dict.fromkeys(n for n, _ in cells):
        kwargs = cfg.encoder_kwargs.get(name, {})
        mine = [t for n, t in cells if n == name]
        try:
            torch.manual_seed(cfg.seed)  # encoders without weights initialise from the run's seed
            encoder = create_encoder(name, **kwargs)
            encoder.spec.check_resolution(cfg.data.resolution, cfg.data.resolution)
        except Exception as e:
            failures += [CellFailure(t.name, name, f"{type(e).__name__}: {e}") for t in mine]
            log(f"[{name}] cannot be built or used at {cfg.data.resolution}px: {e}")
            continue
        weights_hash = encoder.weights_hash()
        for task in mine:
            state["cell"] = None
            tcfg = configs[task.name]
            tcfg_dict = dataclasses.asdict(tcfg)
            tcfg_key = {k: v for k, v in tcfg_dict.items() if k != "batch_size"}  # batch size: speed only
            files = {f: _file_hash(getattr(tcfg, f, None)) for f in task.file_fields}
            files |= {k: _file_hash(v) if Path(v).is_file() else None for k, v in task.key_files_of(encoder).items()}
            # the device type, not its index: every rank of a distributed run computes the same cell
            key = _hash({"task": task.name, "config": tcfg_key, "data": cfg.data.key(), "encoder": name,
                         "kwargs": kwargs, "weights": weights_hash, "seed": cfg.seed, "device": device.split(":")[0]}
                        | ({"files": files} if files else {}))
            path = record_path(cfg.results_dir, task.name, name, key)
            claim_path = path.with_name(f".{path.stem}.claim")
            # rank 0 decides (reuse the record / compute / another process holds the cell); all ranks follow
            decision = _decide(cfg, path, key, claim_path, name, task.name, log) if main else None
            decision = dist.broadcast_object(decision)
            if decision == "taken":
                state["claimed"] += 1
                continue
            if decision == "reuse":
                records.append(read_record(path, key))
                state["skipped"] += 1
                continue
            why = _not_applicable_reason(task, encoder, cfg)
            if why:  # not applicable: a record of n/a with the reason, so the encoder keeps its row in every table
                record = _not_applicable(cfg, task, tcfg, encoder, device, key, kwargs, weights_hash, why)
                record = dataclasses.replace(record, finished=time.time())
                if main:
                    write_record(path, record)
                    if decision == "claimed":
                        release(claim_path)
                records.append(record.as_dict())
                state["na"] += 1
                log(f"[{name}] {task.name}: n/a ({why})")
                continue
            try:
                state["cell"] = f"{name} / {task.name}"
                record = _compute(cfg, task, tcfg, encoder, dataset, device, key, kwargs, weights_hash, log)
                record = dataclasses.replace(record, finished=time.time())
            except Exception as e:
                failures.append(CellFailure(task.name, name, f"{type(e).__name__}: {e}"))
                log(f"[{name}] {task.name} FAILED: {type(e).__name__}: {e}")
                if not isinstance(e, UserError) or debug_enabled():  # an input error needs no traceback
                    log(traceback.format_exc(limit=3))
                continue
            finally:
                if main and decision == "claimed":
                    release(claim_path)
            if main:
                write_record(path, record)
            dist.barrier()
            records.append(record.as_dict())
            state["computed"] += 1
            state["times"].append((f"{name} / {task.name}", record.wall_s))
            log(f"[{name}] {task.name}: done in {record.wall_s:.1f}s")
    state["cell"] = None
    return RunSummary(records, failures, state["computed"], state["skipped"], state["claimed"], state["times"],
                      state["na"])


def _decide(cfg: RunConfig, path: Path, key: str, claim_path: Path, name: str, task: str, log) -> str:
    """"reuse" (a finished record), "claimed" (this process computes the cell) or "taken" (another live
    process holds its claim)."""
    def usable() -> bool:
        if not (cfg.skip_existing and path.exists()):
            return False
        try:
            old = read_record(path, key)
        except (ValueError, OSError) as e:
            log(f"[{name}] {task}: record {path} is unusable ({e}); recomputing the cell")
            return False
        pending = old["metrics"].get("pending") or {}
        if pending:  # n/a that depended on this machine (e.g. missing feature-network weights): try again
            log(f"[{name}] {task}: record {path.name} has pending metrics "
                f"({'; '.join(f'{k}: {v}' for k, v in sorted(pending.items()))}); recomputing the cell")
            return False
        return True

    if usable():
        log(f"[{name}] {task}: cached ({path.name})")
        return "reuse"
    if not cfg.claims:
        return "claimed"
    if not try_claim(claim_path):
        holder = read_claim(claim_path) or {}
        log(f"[{name}] {task}: computed by another process (host {holder.get('host')}, pid {holder.get('pid')}); "
            f"skipped here")
        return "taken"
    if usable():  # finished by another process between our first look and the claim
        release(claim_path)
        log(f"[{name}] {task}: cached ({path.name})")
        return "reuse"
    return "claimed"


MASKED_DATA = ("shapes", "segfolder")  # the datasets with per-pixel masks


def _not_applicable_reason(task, encoder, cfg: RunConfig) -> str | None:
    """Why `task` cannot run for `encoder` on the run's data (its spec's `needs`), or None when it can."""
    if "decoder" in task.needs and not encoder.spec.has_decoder:
        return f"no pixel decoder: `{task.name}` needs one"
    if "masks" in task.needs and cfg.data.name not in MASKED_DATA:
        return (f"data {cfg.data.name!r} has no per-pixel masks: `{task.name}` needs them "
                f"(--data segfolder with an ADE20K-layout folder)")
    return None


def _spec_dict(encoder, cfg: RunConfig) -> dict:
    """The encoder's spec as recorded: its latent shape at the run's resolution (not its native one)."""
    return encoder.spec.as_dict() | {"latent_shape": list(encoder.spec.latent_shape(cfg.data.resolution))}


def _not_applicable(cfg, task, tcfg, encoder, device, key, kwargs, weights_hash, why: str) -> Record:
    keys = [m.key for m in task.metrics if not m.timing and m.higher_is_better is not None]
    keys += [task.curve.value] if task.curve is not None else []
    return Record(
        key=key, task=task.name, encoder=encoder.spec.name, encoder_kwargs=kwargs, spec=_spec_dict(encoder, cfg),
        weights_hash=weights_hash, data=cfg.data.as_dict() | {"key": cfg.data.key()}, config=dataclasses.asdict(tcfg),
        seed=cfg.seed, metrics={"unavailable": {k: why for k in keys}}, device=device, device_name=device_name(device),
        wall_s=0.0, versions=versions())


def _compute(cfg, task, tcfg, encoder, dataset, device, key, kwargs, weights_hash, log) -> Record:
    from tqdm.auto import tqdm

    from .validate import finite_or_na

    torch.manual_seed(cfg.seed)
    n = len(dataset) if getattr(tcfg, "num_images", None) is None else min(tcfg.num_images, len(dataset))
    bar = tqdm(total=n, desc=f"{encoder.spec.name} / {task.name}", unit="img", leave=False, file=sys.stderr,
               disable=not dist.is_main())
    t0 = time.perf_counter()
    try:
        metrics = task.run()(encoder, dataset, tcfg, device=device, progress=bar.update)
    finally:
        bar.close()
    return Record(
        key=key, task=task.name, encoder=encoder.spec.name, encoder_kwargs=kwargs, spec=_spec_dict(encoder, cfg),
        weights_hash=weights_hash, data=cfg.data.as_dict() | {"key": cfg.data.key()}, config=dataclasses.asdict(tcfg),
        seed=cfg.seed, metrics=finite_or_na(metrics), device=device, device_name=device_name(device),
        wall_s=round(time.perf_counter() - t0, 3), versions=versions())


def _file_hash(path) -> str | None:
    """sha256 of the file at `path` (None when the field is unset)."""
    if not path:
        return None
    from .checkpoints import file_sha256

    return file_sha256(path)


def task_config(task, cfg: RunConfig):
    """The config of `task` in run `cfg`: its overrides, with the run's batch size where the task has one.
    An unknown field is a ValueError listing the valid ones."""
    overrides = dict(cfg.task_overrides.get(task.name, {}))
    if "batch_size" in task.config_fields():
        overrides.setdefault("batch_size", cfg.batch_size)
    return task.make_config(overrides, where="run config")


def _known_task_names() -> list[str]:
    from .tasks import list_tasks

    return list_tasks()
