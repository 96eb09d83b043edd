"""Per-cell claims, so that independent processes filling one results folder compute each cell once.

A claim is a lock file holding host, pid and start time as JSON, written under a unique name and then
hard-linked to the claim's name: link fails when the name exists and is atomic on local and NFSv3+
filesystems (like O_CREAT | O_EXCL, the primitive of filelock's SoftFileLock, which has no notion of a
claim's owner), and a claim never exists half-written, so a process killed while claiming leaves no claim
that would block the cell. A claim is stale, and taken over, when its process is gone (same host, pid
not alive) or it is older than `stale_after` seconds (another host: its liveness cannot be checked).
Takeover renames the stale file to a unique name first, so of several processes that find it stale
exactly one wins. `shard_of` splits a list of cells for `--shard I/N`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")
STALE_AFTER_S = 24 * 3600.0  # a claim from another host older than this is assumed dead


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM  # exists, owned by someone else
    return True


def read_claim(path: Path) -> dict | None:
    """The claim's {host, pid, start} or None when absent; {} when unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def is_stale(info: dict, mtime: float, stale_after: float = STALE_AFTER_S) -> bool:
    """True when the claim's owner is gone (same host, dead pid) or it is older than `stale_after`."""
    if time.time() - mtime > stale_after:
        return True
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return not _pid_alive(info["pid"])
    return False


def try_claim(path: str | os.PathLike, stale_after: float = STALE_AFTER_S) -> bool:
    """Create the claim at `path` for this process; False when another live process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": time.time()}).encode()
    mine = path.with_name(f".{path.name}.new-{uuid.uuid4().hex}")
    mine.write_bytes(me)
    try:
        for _ in range(3):
            try:
                os.link(mine, path)
                return True
            except FileExistsError:
                pass
            info = read_claim(path)
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if info == {} and time.time() - mtime < 10.0:
                return False  # unreadable (e.g. a filesystem without atomic links): give its owner time
            if info and not is_stale(info, mtime, stale_after):
                return False
            # Take over: only one process can rename the stale file away; the others see it vanish.
            grave = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(path, grave)
            except FileNotFoundError:
                continue
            if read_claim(grave) != info:
                # Between our read and the rename another process took the stale claim over and made
                # a fresh one: put it back (link fails rather than overwrite) and leave the cell to it.
                with contextlib.suppress(FileExistsError):
                    os.link(grave, path)
                os.unlink(grave)
                return False
            os.unlink(grave)
        return False
    finally:
        mine.unlink(missing_ok=True)


def release(path: str | os.PathLike) -> None:
    """Remove this process's claim (a claim taken over by another process is left alone)."""
    path = Path(path)
    info = read_claim(path)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def claim(path: str | os.PathLike, stale_after: float = STALE_AFTER_S) -> Iterator[bool]:
    """`with claim(p) as got: if got: compute()`; the claim is released on exit, also on errors."""
    got = try_claim(path, stale_after)
    try:
        yield got
    finally:
        if got:
            release(path)


def parse_shard(spec: str) -> tuple[int, int]:
    """"I/N" (0 <= I < N) -> (I, N)."""
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be I/N with integers, got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {spec!r}")
    return i, n


def shard_of(cells: Sequence[T], i: int, n: int) -> list[T]:
    """Cells i, i + n, i + 2n, ... of `cells` in their given (deterministic) order: the N shards are
    disjoint, cover every cell, and differ in size by at most one."""
    if not 0 <= i < n:
        raise ValueError(f"shard {i} of {n} does not exist")
    return list(cells[i::n])
