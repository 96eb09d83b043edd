"""`svgbench run` stopped mid-matrix: Ctrl-C (SIGINT) and SIGKILL.

Each case runs the CLI in a subprocess on a small matrix with a throwaway results folder and feature
cache, stops it as soon as its first record is on disk, then checks that

(a) everything left on disk is whole: each record parses and names its own key, each finished cache
    entry (one with a sidecar) loads with the shape and dtype its sidecar states, and temporary
    files (SIGKILL can leave some) are never taken for records or entries;
(b) a rerun of the same command completes, reuses the cells finished before the stop without
    touching their files, and computes the rest;
(c) the final tables are those of an uninterrupted run.

A corrupt record or cache entry (written by hand) is recomputed with a message naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ENCODERS = "pixels,tiny-ssl"
TASKS = ("reconstruction", "probe", "knn")
NUM_IMAGES = 64
# pixels: reconstruction, probe, knn; tiny-ssl: probe, knn, and reconstruction as an n/a record (no decoder)
NUM_CELLS = 6
RUN_TIMEOUT = 300
# cells small enough that seven runs fit the default suite, large enough to be in flight when the signal comes
SIZES = ("--set", "probe.train_size=512", "--set", "knn.train_size=512", "--set", "probe.spread_seeds=1")


def _env(root: Path) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               SVGBENCH_CACHE=str(root / "cache"), PYTHONWARNINGS="default")
    return env


def _cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "svgbench.cli", "run", "--encoders", ENCODERS, "--tasks", ",".join(TASKS),
            "--num-images", str(NUM_IMAGES), "--results", str(root / "results"), *SIZES]


def _run(root: Path, svgbench_cli) -> subprocess.CompletedProcess:
    """An uninterrupted run (the reference, and each rerun) in this process: the subprocess and its signal
    are what the interrupted runs test; these only need the same command's records and tables."""
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in _env(root).items() if k == "SVGBENCH_CACHE"}  # threads and warnings: svgbench_cli
    return svgbench_cli(*_cmd(root)[3:], cwd=root, env=env)


def _records(root: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted((root / "results" / "records").glob("*/*.json"))}


def _tables(root: Path) -> dict[str, str]:
    return {t: (root / "results" / f"{t}.csv").read_text() for t in TASKS}


def _interrupt(root: Path, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Start the run, wait for its first record, send `sig`, wait for the process to end."""
    root.mkdir(parents=True, exist_ok=True)
    records = root / "results" / "records"
    # The child must take SIGINT as Python does in a terminal, even when this test runs in the background
    # (a shell starts background jobs with SIGINT ignored, and children inherit that).
    proc = subprocess.Popen(_cmd(root), cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not any(records.glob("*/*.json")):
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"run ended (rc {proc.returncode}) before writing a record:\n{err[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no record written in time")
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _check_on_disk(root: Path, *, temp_files_allowed: bool) -> None:
    """(a): records and cache entries on disk are whole; temporary files are only ever temporary files."""
    from svgbench.records import SCHEMA_VERSION as RECORD_VERSION

    results, cache = root / "results", root / "cache"
    for p in (results / "records").glob("*/*.json"):
        rec = json.loads(p.read_text())  # raises on a half-written record
        assert rec["record_version"] == RECORD_VERSION and isinstance(rec["metrics"], dict)
        assert p.name == f"{rec['encoder']}__{rec['key']}.json" and p.parent.name == rec["task"]
    from svgbench.store import ShardedStore

    for side in cache.glob("*/*/*.json"):  # a finished entry's index (written after all its shards)
        meta = json.loads(side.read_text())
        st = ShardedStore.open(side.with_suffix(".npy"), verify=True)  # sizes and checksums of every shard
        assert list(st.shape) == meta["shape"], side
        assert all(bool(np.isfinite(x.numpy()).all()) for x, _ in st.iter_batches(1024)), side
    stray = [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    if not temp_files_allowed:
        assert not stray, f"temporary files left behind: {stray}"
    for p in stray:
        assert p.name.startswith("."), p  # hidden, never matching a record or cache entry name


def _check_resume(root: Path, before: dict[Path, tuple[bytes, int]], reference: dict[str, str], cli) -> None:
    """(b) and (c)."""
    rerun = _run(root, cli)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    assert "unusable" not in rerun.stderr, rerun.stderr  # nothing left on disk was broken
    m = re.search(r"(\d+) cells computed, (\d+) reused(?:, (\d+) n/a)?", rerun.stdout)
    assert m, rerun.stdout[-2000:]
    done_here = int(m.group(1)) + int(m.group(3) or 0)  # computed, and recorded as n/a (not applicable)
    assert int(m.group(2)) == len(before) and done_here == NUM_CELLS - len(before)
    for p in before:
        assert f": cached ({p.name})" in rerun.stderr
    after = _records(root)
    assert len(after) == NUM_CELLS
    for p, (data, mtime) in before.items():
        assert after[p] == (data, mtime), f"{p.name} was rewritten by the rerun"
    assert _tables(root) == reference


@pytest.fixture(scope="module")
def reference(tmp_path_factory, svgbench_cli) -> tuple[Path, dict[str, str]]:
    """An uninterrupted run: its folder and its tables."""
    root = tmp_path_factory.mktemp("uninterrupted")
    done = _run(root, svgbench_cli)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(_records(root)) == NUM_CELLS
    return root, _tables(root)


def test_sigint_stops_cleanly_and_rerun_resumes(tmp_path, reference, svgbench_cli):
    # Fast case: the features come from a copy of the reference's cache, so only the cells' own work
    # (probe / kNN fits, reconstruction) is in flight; the SIGKILL case below starts from an empty cache.
    shutil.copytree(reference[0] / "cache", tmp_path / "cache")
    stopped = _interrupt(tmp_path, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    m = re.search(r"svgbench run: interrupted (while computing cell (\S+) / (\S+)|\(no cell was in flight\))",
                  stopped.stderr)
    assert m, stopped.stderr[-3000:]
    assert "Rerun the same command to resume" in stopped.stderr
    before = _records(tmp_path)
    assert 1 <= len(before) < NUM_CELLS
    if m.group(2):  # the cell in flight left no record
        encoder, task = m.group(2), m.group(3)
        assert not list((tmp_path / "results" / "records" / task).glob(f"{encoder}__*.json"))
    _check_on_disk(tmp_path, temp_files_allowed=False)  # KeyboardInterrupt removes temporary files
    _check_resume(tmp_path, before, reference[1], svgbench_cli)


def test_sigkill_leaves_only_whole_files_and_rerun_resumes(tmp_path, reference, svgbench_cli):
    stopped = _interrupt(tmp_path, signal.SIGKILL)
    assert stopped.returncode == -signal.SIGKILL
    before = _records(tmp_path)
    assert 1 <= len(before) < NUM_CELLS
    _check_on_disk(tmp_path, temp_files_allowed=True)
    _check_resume(tmp_path, before, reference[1], svgbench_cli)


def test_corrupt_record_and_cache_entry_are_recomputed(tmp_path, reference, svgbench_cli):
    ref_root, ref_tables = reference
    root = tmp_path / "run"
    shutil.copytree(ref_root, root)
    records = _records(root)
    probe = next(p for p in records if p.parent.name == "probe" and p.name.startswith("pixels__"))
    knn = next(p for p in records if p.parent.name == "knn" and p.name.startswith("tiny-ssl__"))
    probe.write_bytes(probe.read_bytes()[:200])  # truncated mid-file
    knn.write_text('{"record_version": 1}\n')  # valid JSON, not a finished record
    # the evaluation split's entries (64 images): cheap to recompute
    val = next((root / "cache" / "pixels").glob("shapes-val-*/pooled-*.json")).with_suffix(".npy")
    val.write_bytes(val.read_bytes()[:-100])  # truncated features, sidecar intact
    side = next((root / "cache" / "tiny-ssl").glob("shapes-val-*/pooled-*.json"))
    side.write_text("{not json")

    rerun = _run(root, svgbench_cli)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    err = " ".join(rerun.stderr.split())
    assert f"record {probe} is unusable (not valid JSON" in err
    assert f"record {knn} is unusable (" in err
    assert re.search(rf"feature cache entry \S*{re.escape(val.name)} is unusable \(.*truncated.*\); recomputing", err)
    assert re.search(rf"feature cache entry \S*{re.escape(side.with_suffix('.npy').name)} is unusable \(.*\); "
                     r"recomputing", err)
    assert re.search(r"2 cells computed, 4 reused", rerun.stdout)  # 4: the 3 whole results and the n/a record
    _check_on_disk(root, temp_files_allowed=False)
    assert _tables(root) == ref_tables


def test_a_cell_whose_record_was_written_is_not_named_as_in_flight(tmp_path):
    """An interrupt between a cell's record write and the next cell names no cell as cut short; a record that was
    there before the cell started (a --force rerun) does not count as its finish. Written right after the start:
    the filesystem's clock may run a tick behind the wall clock, which must not matter."""
    from svgbench.checkpoints import atomic_write_bytes
    from svgbench.runner import _file_mark, _in_flight

    path = tmp_path / "pixels__abc.json"
    state = {"cell": "pixels / knn", "path": path, "before": _file_mark(path)}
    assert _in_flight(state) == "pixels / knn"  # no record yet
    atomic_write_bytes(path, b"{}")
    assert _in_flight(state) is None  # written since the cell started
    state = {"cell": "pixels / knn", "path": path, "before": _file_mark(path)}
    assert _in_flight(state) == "pixels / knn"  # an old record of the same cell
    atomic_write_bytes(path, b"{}")
    assert _in_flight(state) is None  # the rerun's record replaced it
    assert _in_flight({"cell": None}) is None
