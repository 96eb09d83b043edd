"""torch.distributed for torchrun jobs, and a no-op for plain processes.

`init()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and starts
the default process group: nccl when CUDA is available, else gloo. Without that environment every
helper behaves as a world of one process (rank 0), so library code calls them unconditionally.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


def under_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) set RANK and WORLD_SIZE."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init(backend: str | None = None) -> bool:
    """Start the default process group from torchrun's environment; True when running distributed.

    Idempotent; a no-op (False) outside torchrun or with WORLD_SIZE=1. Under CUDA each process binds
    to cuda:LOCAL_RANK before nccl starts, so collectives use one GPU per process.
    """
    if is_initialized():
        return True
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    if is_initialized():
        torch.distributed.destroy_process_group()


def rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available, else the cpu."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()


def _collective_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo only cpu ones.
    if is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows, in rank order: per rank N_r x ... -> (sum N_r) x ... on x's device.

    Ranks may hold different row counts (uneven shards); trailing dimensions and dtype must agree.
    all_gather needs equal sizes, so each rank pads to the largest count and the padding is cut.
    """
    if not is_initialized():
        return x
    dev = _collective_device()
    n = torch.tensor([x.shape[0]], device=dev, dtype=torch.int64)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    torch.distributed.all_gather(counts, n)
    counts = [int(c) for c in counts]
    top = max(counts)
    padded = torch.zeros((top,) + tuple(x.shape[1:]), dtype=x.dtype, device=dev)
    padded[: x.shape[0]] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in counts]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(x.device)


def all_gather_objects(obj) -> list:
    """Every rank's picklable `obj`, in rank order (small things: receipts, per-rank counts)."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the body first (downloads, dataset rendering, cache writes), then the others.

    The others wait at a barrier until rank 0 is done, then run the body and find its results.
    """
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()
