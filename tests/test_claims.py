"""Per-cell claims: concurrent processes compute each cell once; a killed holder does not block."""

import dataclasses
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


# --- the real runner, three processes on one results folder -----------------------------------------------

@dataclasses.dataclass(frozen=True)
class _SlowMeanConfig:
    batch_size: int = 16
    seconds: float = 0.3  # long enough that the three processes overlap


def _slow_mean(encoder, dataset, cfg, device="cpu", progress=None) -> dict:
    import torch

    time.sleep(cfg.seconds)
    x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    return {"latent_mean": float(encoder.encode(x).mean())}


def _note(events: Path, line: str) -> None:
    with open(events, "a") as f:  # O_APPEND: whole lines from every process
        f.write(line + "\n")


def _run_real_runner(results: str, events: str, tasks: tuple) -> None:
    """`run_matrix` as it is, with its disk writes, claim releases and computations noted in `events`, and each
    record write slowed down (a slow disk: the window in which a claim released too early lets another in)."""
    import torch

    from svgbench import runner
    from svgbench.data import DataConfig

    torch.set_num_threads(1)
    events, me = Path(events), os.getpid()
    write, free, compute = runner.write_record, runner.release, runner._compute

    def write_record(path, record):
        holder = read_claim(path.with_name(f".{path.stem}.claim")) or {}
        _note(events, f"write {path.stem} {me} held={holder.get('pid') == me}")
        time.sleep(0.3)
        write(path, record)

    def release(claim_path):
        record = claim_path.with_name(f"{claim_path.name[1:-len('.claim')]}.json")
        _note(events, f"release {record.stem} {me} on_disk={record.exists()}")
        free(claim_path)

    def _compute(cfg, task, tcfg, encoder, *args, **kwargs):
        _note(events, f"compute {encoder.spec.name}/{task.name} {me} {time.time():.1f}")
        return compute(cfg, task, tcfg, encoder, *args, **kwargs)

    runner.write_record, runner.release, runner._compute = write_record, release, _compute
    cfg = runner.RunConfig(encoders=("pixels",), tasks=tasks, data=DataConfig(size=16), results_dir=results,
                           batch_size=16, task_overrides={"probe": {"train_size": 32, "test_size": 16, "epochs": 2}})
    summary = runner.run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    _note(events, f"summary {me} {time.time():.1f} computed={summary.computed} elsewhere={summary.claimed_elsewhere}")


def _import_before_forking(tmp_path: Path, tasks: tuple, monkeypatch) -> None:
    """The same cells run once in this process, in another results folder and feature cache: what they import
    (timm, torchvision, scikit-learn: tens of seconds on a loaded machine) is then imported once, not by each of
    the three processes."""
    from svgbench import runner
    from svgbench.data import DataConfig

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "warm-up-cache"))
    cfg = runner.RunConfig(encoders=("pixels",), tasks=tasks, data=DataConfig(size=16),
                           results_dir=str(tmp_path / "warm-up"), batch_size=16,
                           task_overrides={"probe": {"train_size": 32, "test_size": 16, "epochs": 2}} |
                           {t: {"seconds": 0.0} for t in tasks if t != "probe"})
    assert runner.run_matrix(cfg, log=lambda m: None).computed == len(tasks)
    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))


def test_three_processes_running_the_runner_compute_each_cell_once(tmp_path, monkeypatch):
    """Three processes run `run_matrix` on one results folder: each cell is computed by exactly one of them,
    every record is written while its claim is held, and every claim is released only once its record is on
    disk (released before, as the runner once did, another process could compute the cell again)."""
    from svgbench.tasks import register_task, unregister_task

    toys = [f"slow-mean-{i}" for i in range(3)]
    for t in toys:
        register_task(t, _slow_mean, _SlowMeanConfig)
    tasks = ("probe", *toys)
    events = tmp_path / "events"
    _import_before_forking(tmp_path, tasks, monkeypatch)
    try:
        ctx = mp.get_context("fork")  # the registered tasks and the imported svgbench come along
        procs = [ctx.Process(target=_run_real_runner, args=(str(tmp_path / "results"), str(events), tasks))
                 for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(180)
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.kill()
        assert not alive and all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    finally:
        for t in toys:
            unregister_task(t)
    lines = events.read_text().splitlines()
    computed = [ln.split()[1] for ln in lines if ln.startswith("compute")]
    assert sorted(computed) == sorted(f"pixels/{t}" for t in tasks)  # every cell, each exactly once
    writes = [ln for ln in lines if ln.startswith("write")]
    releases = [ln for ln in lines if ln.startswith("release")]
    assert len(writes) == len(tasks)
    # each writer releases its claim; a process that claims a cell just after another finished it finds the
    # record and releases the claim without writing (the runner's second look): one more release, record on disk
    assert {tuple(ln.split()[1:3]) for ln in writes} <= {tuple(ln.split()[1:3]) for ln in releases}, (writes, releases)
    assert all(ln.endswith("held=True") for ln in writes), writes  # written under its claim
    assert all(ln.endswith("on_disk=True") for ln in releases), releases  # released after the record exists
    records = list((tmp_path / "results" / "records").glob("*/*.json"))
    assert len(records) == len(tasks)
    assert not list((tmp_path / "results" / "records").glob("*/.*.claim"))  # every claim released
    summaries = [ln for ln in lines if ln.startswith("summary")]
    assert len(summaries) == 3 and sum(int(ln.split("computed=")[1].split()[0]) for ln in summaries) == len(tasks)
