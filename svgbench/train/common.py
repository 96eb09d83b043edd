"""What every training recipe shares: distributed set-up, resumable atomic checkpoints, curves, schedules.

A run directory holds `last.pt` (model + optimiser + step + RNG, written atomically, loadable with
weights_only=True), `curve.jsonl` (one JSON line per logged step; lines past the checkpoint's step
are dropped on resume so a resumed run's curve equals an uninterrupted one), and `config.json`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoints import atomic_write_bytes


# ---------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------

def init_distributed() -> tuple[int, int, torch.device]:
    """-> (rank, world_size, device). Under torchrun: NCCL on GPUs, gloo on CPU; else a single process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            return rank, world, torch.device("cuda", local)
        return rank, world, torch.device("cpu")
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """Randomness of one step on one rank: a function of (seed, step, rank) only, so resuming replays it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4099 + rank)


class StepBatches(torch.utils.data.IterableDataset):
    """Yields make_batch(step) for step in [start, stop): batches depend on the step alone, so a
    background worker can prepare them while the model trains, and a resumed run sees the same ones."""

    def __init__(self, make_batch, start: int, stop: int):
        self.make_batch, self.start, self.stop = make_batch, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.make_batch(step)


def prefetch(make_batch, start: int, stop: int, workers: int = 1):
    """Iterate over batches of steps start..stop-1, prepared by `workers` background processes (0: inline)."""
    if workers <= 0:
        return (make_batch(s) for s in range(start, stop))
    return iter(torch.utils.data.DataLoader(StepBatches(make_batch, start, stop), batch_size=None,
                                            num_workers=1, prefetch_factor=4, persistent_workers=False,
                                            worker_init_fn=lambda _: torch.set_num_threads(1)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------

def cosine(step: int, total: int, start: float, end: float, warmup: int = 0, warmup_from: float = 0.0) -> float:
    if step < warmup:
        return warmup_from + (start - warmup_from) * step / max(1, warmup)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


# ---------------------------------------------------------------------------------------------
# run directory: checkpoints and curves
# ---------------------------------------------------------------------------------------------

class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def ckpt(self) -> Path:
        return self.path / "last.pt"

    @property
    def curve_file(self) -> Path:
        return self.path / "curve.jsonl"

    def write_config(self, cfg) -> None:
        d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
        new = json.dumps(d, indent=2, sort_keys=True, default=str)
        f = self.path / "config.json"
        if f.exists() and self.ckpt.exists():
            old = json.loads(f.read_text())
            # the length of a run may grow on resume; anything else changing means another run
            changed = sorted(k for k in set(old) | set(d)
                             if k not in ("steps", "out") and old.get(k) != json.loads(new).get(k))
            if changed:
                raise ValueError(f"run directory {self.path} holds a run with another config "
                                 f"(differs in: {', '.join(changed)}); use another --out or the same config")
        atomic_write_bytes(f, (new + "\n").encode())

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.ckpt, buf.getvalue())

    def load(self) -> dict | None:
        if not self.ckpt.exists():
            return None
        from ..checkpoints import CheckpointError

        try:
            return torch.load(self.ckpt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"resume checkpoint {self.ckpt} is unreadable: {e}") from e

    def log(self, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.curve_file, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def truncate_curve(self, step: int) -> None:
        """Drop curve rows logged after `step` (work lost since the last checkpoint)."""
        if not self.curve_file.exists():
            return
        rows = [r for r in self.curve() if r.get("step", 0) <= step]
        atomic_write_bytes(self.curve_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())

    def curve(self) -> list[dict]:
        if not self.curve_file.exists():
            return []
        return [json.loads(line) for line in self.curve_file.read_text().splitlines() if line.strip()]


def start_run(cfg) -> tuple[RunDir, int, int, torch.device]:
    """Threads, process group, run directory (config checked against a run being resumed) and seed.

    -> (run dir, rank, world size, device)."""
    if getattr(cfg, "threads", None):
        torch.set_num_threads(cfg.threads)
    rank, world, device = init_distributed()
    run = RunDir(cfg.out)
    if is_main():
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)
    torch.manual_seed(cfg.seed)
    return run, rank, world, device


def resume(run: RunDir, parts: dict, log=print) -> tuple[int, dict | None]:
    """Load `run`'s last checkpoint into `parts` (checkpoint key -> object with load_state_dict; None entries
    and keys absent from the checkpoint are skipped), restore the RNG and drop curve rows past it.

    -> (step to start from, the checkpoint or None)."""
    state = run.load()
    if state is None:
        return 0, None
    for key, part in parts.items():
        if part is not None and key in state:
            part.load_state_dict(state[key])
    set_rng_state(state["rng"])
    start = int(state["step"])
    if is_main():
        run.truncate_curve(start)
        log(f"resumed {run.path} at step {start}")
    return start, state


def rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])


def _flag_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _float_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not two comma-separated numbers")
    return float(parts[0]), float(parts[1])


def add_config_args(parser, cls) -> None:
    """One --flag per scalar field (int, float, str, bool, optionally None) or float pair (`--betas 0.9,0.99`)
    of config dataclass `cls`; unset flags stay None so that the preset's value is kept."""
    kinds = {"int": int, "float": float, "str": str, "bool": _flag_bool, "tuple[float, float]": _float_pair}
    for f in dataclasses.fields(cls):
        kind = kinds.get(str(f.type).replace(" | None", ""))
        if kind is not None:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)


def config_flags(cfg, base, skip=("out", "threads")) -> str:
    """The command-line flags (add_config_args' format) that turn config `base` into `cfg`, e.g.
    " --steps 10000 --betas 0.9,0.99"; fields in `skip` are left out."""
    def text(v):
        return ",".join(str(x) for x in v) if isinstance(v, tuple) else str(v)

    return "".join(f" --{f.name.replace('_', '-')} {text(getattr(cfg, f.name))}" for f in dataclasses.fields(cfg)
                   if f.name not in skip and getattr(cfg, f.name) != getattr(base, f.name))


def config_from_args(base, args):
    """`base` with every config flag given on the command line applied."""
    over = {f.name: getattr(args, f.name) for f in dataclasses.fields(base)
            if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **over)


@dataclasses.dataclass
class TrainResult:
    """What a recipe returns: the last logged row and the trained module (on every rank)."""

    last: dict
    model: torch.nn.Module
    extra: dict = dataclasses.field(default_factory=dict)  # e.g. the latent statistics of a diffusion run


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
