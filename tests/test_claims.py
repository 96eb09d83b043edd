"""Per-cell claims: concurrent processes compute each cell once; a killed holder does not block."""

import json
import multiprocessing as mp
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from svgbench.claims import claim, parse_shard, read_claim, release, shard_of, try_claim

CELLS = [f"cell{i:02d}" for i in range(12)]


def _worker(root: str, cells: list[str], deadline: float) -> None:
    """Compute every unfinished cell this process can claim; wait for the others' to finish."""
    root = Path(root)
    while time.time() < deadline:
        left = [c for c in cells if not (root / f"{c}.result").exists()]
        if not left:
            return
        for c in left:
            with claim(root / f"{c}.claim") as got:
                if got and not (root / f"{c}.result").exists():
                    with open(root / f"{c}.count", "a") as f:  # O_APPEND: one line per computation
                        f.write(f"{os.getpid()}\n")
                    time.sleep(0.05)
                    (root / f"{c}.result").write_text(c)
        time.sleep(0.02)


def _hold(path: str) -> None:
    assert try_claim(path)
    time.sleep(600)


def test_three_processes_compute_each_cell_once_despite_a_killed_holder(tmp_path):
    ctx = mp.get_context("fork")
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "cell05.claim"),))
    holder.start()
    while read_claim(tmp_path / "cell05.claim") is None:
        time.sleep(0.01)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert read_claim(tmp_path / "cell05.claim")["pid"] == holder.pid  # the dead process's claim stays on disk

    deadline = time.time() + 30
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), CELLS, deadline)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(40)
        assert p.exitcode == 0
    for c in CELLS:
        assert (tmp_path / f"{c}.result").read_text() == c
        assert len((tmp_path / f"{c}.count").read_text().split()) == 1, c  # computed exactly once
    assert not list(tmp_path.glob("*.claim")) and not list(tmp_path.glob(".*stale*"))  # all released


def test_live_claim_blocks_and_release_frees(tmp_path):
    p = tmp_path / "c.claim"
    with claim(p) as got:
        assert got
        info = json.loads(p.read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["start"] <= time.time()
        assert not try_claim(p)  # held by a live process (this one)
    assert not p.exists()
    with pytest.raises(RuntimeError), claim(p) as got:  # released on errors too
        assert got
        raise RuntimeError
    assert not p.exists()


def test_claims_from_other_hosts_expire_by_age(tmp_path):
    p = tmp_path / "c.claim"
    p.write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": 0}))
    assert not try_claim(p)  # cannot check the pid of another host: young claims hold
    old = time.time() - 7200
    os.utime(p, (old, old))
    assert not try_claim(p, stale_after=3 * 3600)
    assert try_claim(p, stale_after=3600)
    assert read_claim(p)["pid"] == os.getpid()
    release(p)
    assert not p.exists()


def test_a_claim_is_never_seen_half_written_and_an_unreadable_old_one_is_taken_over(tmp_path):
    p = tmp_path / "cell.claim"
    p.write_text("")  # unreadable: e.g. a filesystem without atomic links, its writer killed
    assert read_claim(p) == {} and not try_claim(p)  # young: its owner may still be writing it
    os.utime(p, (time.time() - 11, time.time() - 11))
    assert try_claim(p)
    assert read_claim(p)["pid"] == os.getpid()  # linked whole: never empty, never partial
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cell.claim"]  # the unique-name copy is gone
    release(p)
    assert not p.exists()


def test_shard_of_partitions_deterministically():
    cells = list(range(17))
    parts = [shard_of(cells, i, 4) for i in range(4)]
    assert sorted(sum(parts, [])) == cells
    assert {len(p) for p in parts} == {4, 5}
    assert parts == [shard_of(cells, i, 4) for i in range(4)]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/3", "a/b", "3"):
        with pytest.raises(ValueError):
            parse_shard(bad)
