"""svgbench.runner: the matrix shared by processes (claims, --shard) and run under torchrun."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["--encoders", "pixels,tiny-ssl", "--tasks", "probe,knn,reconstruction", "--num-images", "24",
        "--set", "probe.train_size=48", "--set", "knn.train_size=48", "--set", "probe.epochs=2",
        "--batch-size", "8"]
CELLS = 5  # pixels: probe, knn, reconstruction; tiny-ssl (no decoder): probe, knn


def _env(tmp: Path) -> dict:
    return dict(os.environ, SVGBENCH_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def _cmd(results: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "svgbench", "run", *ARGS, "--results", str(results), *extra]


def _tables(results: Path) -> dict[str, str]:
    return {t: (results / f"{t}.csv").read_text() for t in ("probe", "knn", "reconstruction")}


def _computed(out: str) -> int:
    return int(re.search(r"(\d+) cells computed", out).group(1))


@pytest.fixture(scope="module")
def serial(tmp_path_factory, svgbench_cli):
    """The tables of one uninterrupted run, in this process (on one thread, as the subprocesses below)."""
    tmp = tmp_path_factory.mktemp("serial")
    out = svgbench_cli(*_cmd(tmp / "results")[3:], cwd=tmp, env={"SVGBENCH_CACHE": str(tmp / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert _computed(out.stdout) == CELLS
    return _tables(tmp / "results")


@pytest.mark.slow  # the CLI form of tests/test_claims.py's three processes running the real runner
def test_three_processes_sharing_a_results_folder_compute_each_cell_once(tmp_path, serial):
    env = _env(tmp_path)
    procs = [subprocess.Popen(_cmd(tmp_path / "results"), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    computed = [_computed(o) for o, _ in outs]
    print("cells computed per process:", computed)
    assert sum(computed) == CELLS  # counted: no cell twice, none missing
    records = list((tmp_path / "results" / "records").glob("*/*.json"))
    assert len(records) == CELLS + 1  # and the n/a record of tiny-ssl / reconstruction (no decoder)
    assert not list((tmp_path / "results" / "records").glob("*/.*.claim"))  # every claim released
    # the tables of the process that finished last hold every cell; `svgbench report` rebuilds them anyway
    rep = subprocess.run([sys.executable, "-m", "svgbench", "report", "--results", str(tmp_path / "results")],
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert _tables(tmp_path / "results") == serial


@pytest.mark.slow  # the CLI form of tests/test_claims.py::test_shard_of_partitions_deterministically
def test_shards_partition_the_matrix(tmp_path, serial):
    env = _env(tmp_path)
    computed = []
    for i in range(3):
        out = subprocess.run(_cmd(tmp_path / "results", "--shard", f"{i}/3"), env=env, cwd=tmp_path,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        computed.append(_computed(out.stdout))
    # 6 (encoder, task) pairs; tiny-ssl / reconstruction is n/a (no decoder) in whichever shard holds it
    assert sum(computed) == CELLS and max(computed) <= 2
    assert _tables(tmp_path / "results") == serial


@pytest.mark.slow  # the CLI form of tests/test_claims.py's killed-holder case
def test_a_stale_claim_of_a_dead_process_does_not_block(tmp_path, serial):
    import json
    import socket

    env = _env(tmp_path)
    first = subprocess.run(_cmd(tmp_path / "results", "--tasks", "knn"), env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert first.returncode == 0
    for rec in (tmp_path / "results" / "records").glob("knn/*.json"):  # leave a dead process's claims behind
        claim = rec.with_name(f".{rec.stem}.claim")
        claim.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "start": 0}))
        rec.unlink()
    again = subprocess.run(_cmd(tmp_path / "results", "--tasks", "knn"), env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _computed(again.stdout) == 2


def test_torchrun_two_processes_give_the_tables_of_one(tmp_path, serial):
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "svgbench", "run", *ARGS, "--results", str(tmp_path / "results"), "--device", "cpu"]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    assert _computed(out.stdout) == CELLS and out.stdout.count("cells computed") == 1  # rank 0 reports
    assert _tables(tmp_path / "results") == serial
