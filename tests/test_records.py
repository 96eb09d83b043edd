"""svgbench.records: the typed, versioned result record and its readers."""

import dataclasses
import json
import math

import pytest

from svgbench.records import SCHEMA_VERSION, Record, load_records, read_record, record_path, write_record

# a record exactly as svgbench 0.1.0 wrote it (schema version 1: an untyped dict)
V1 = {"record_version": 1, "key": "abc123def456", "task": "probe", "encoder": "pixels", "encoder_kwargs": {},
      "spec": {"name": "pixels", "latent_shape": [3, 8, 8], "weights": "none", "has_decoder": True},
      "weights_hash": "0" * 12, "data": {"name": "shapes", "split": "val", "resolution": 64, "key": "d"},
      "config": {"epochs": 2}, "seed": 0, "metrics": {"probe_top1": 10.5}, "device": "cpu",
      "device_name": "cpu (x86_64, 2 threads)", "wall_s": 1.0, "versions": {"svgbench": "0.1.0"}}


def test_round_trip(tmp_path):
    rec = Record.from_dict(dict(V1))
    path = record_path(tmp_path, rec.task, rec.encoder, rec.key)
    write_record(path, rec)
    back = read_record(path, rec.key)
    assert back == rec.as_dict() and back["record_version"] == SCHEMA_VERSION
    assert load_records(tmp_path) == [back]


def test_a_record_of_the_previous_version_loads(tmp_path):
    path = record_path(tmp_path, "probe", "pixels", V1["key"])
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(V1))
    rec = read_record(path, V1["key"])
    assert rec["metrics"] == {"probe_top1": 10.5} and rec["record_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("text, why", [
    (json.dumps(V1 | {"record_version": 99}), "schema version 99"),
    (json.dumps(V1)[:40], "not valid JSON"),
    (json.dumps([1, 2]), "holds a JSON list"),
    (json.dumps({k: v for k, v in V1.items() if k != "metrics"}), "no metrics"),
    (json.dumps({k: v for k, v in V1.items() if k != "spec"}), "lacks spec"),
])
def test_unusable_records_say_why(tmp_path, text, why, capsys):
    path = record_path(tmp_path, "probe", "pixels", V1["key"])
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=why):
        read_record(path)
    assert load_records(tmp_path) == []
    assert why.split()[0] in capsys.readouterr().err  # skipped with a warning naming the reason


def test_key_mismatch_is_refused(tmp_path):
    path = record_path(tmp_path, "probe", "pixels", "other")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(V1))
    with pytest.raises(ValueError, match="not the cell's key"):
        read_record(path, "other")


def test_records_never_hold_nan_or_infinity():
    rec = Record.from_dict(V1 | {"metrics": {"psnr": math.inf}})
    with pytest.raises(ValueError, match="not JSON compliant"):
        rec.to_json()


def test_the_runner_recomputes_a_record_of_an_unknown_schema(tmp_path):
    from svgbench.data import DataConfig
    from svgbench.runner import RunConfig, run_matrix

    cfg = RunConfig(encoders=("pixels",), tasks=("reconstruction",), data=DataConfig(size=8),
                    results_dir=str(tmp_path), batch_size=8)
    first = run_matrix(cfg)
    path = next((tmp_path / "records").rglob("*.json"))
    path.write_text(path.read_text().replace(f'"record_version": {SCHEMA_VERSION}', '"record_version": 99'))
    said = []
    again = run_matrix(cfg, log=said.append)
    assert again.computed == 1 and any("schema version 99" in s and "recomputing" in s for s in said)
    assert again.records[0]["metrics"]["psnr"] == first.records[0]["metrics"]["psnr"]


def test_the_newest_record_of_a_cell_is_the_one_shown(tmp_path):
    """Two records of one (task, encoder, data), e.g. before and after new weights: readers take the one
    computed last, whichever file name sorts last; a record from before `finished` existed counts as oldest."""
    from svgbench.records import latest_records

    old = Record.from_dict(V1 | {"key": "ffff00000000", "finished": 1000.0, "metrics": {"probe_top1": 10.0}})
    new = Record.from_dict(V1 | {"key": "000000000000", "finished": 2000.0, "metrics": {"probe_top1": 90.0}})
    unstamped = Record.from_dict(V1 | {"key": "eeee00000000", "metrics": {"probe_top1": 50.0}})
    for rec in (old, new, unstamped):
        write_record(record_path(tmp_path, rec.task, rec.encoder, rec.key), rec)
    loaded = load_records(tmp_path)
    assert [r["key"] for r in loaded] == ["eeee00000000", "ffff00000000", "000000000000"]
    (shown,) = latest_records(loaded, "probe").values()
    assert shown["metrics"]["probe_top1"] == 90.0


def test_the_runner_stamps_computed_records(tmp_path):
    from svgbench.data import DataConfig
    from svgbench.runner import RunConfig, run_matrix

    import time

    before = time.time()
    cfg = RunConfig(encoders=("pixels",), tasks=("reconstruction",), data=DataConfig(size=8),
                    results_dir=str(tmp_path), batch_size=8)
    (rec,) = run_matrix(cfg).records
    assert before <= rec["finished"] <= time.time()
    assert load_records(tmp_path)[0]["finished"] == rec["finished"]


@dataclasses.dataclass(frozen=True)
class _MeanConfig:
    batch_size: int = 16


def _latent_mean(encoder, dataset, cfg, device="cpu", progress=None) -> dict:
    import torch

    x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    return {"latent_mean": float(encoder.encode(x).mean())}


@pytest.fixture
def mean_task():
    """A second task, registered as a user would (a real run of it costs milliseconds, unlike knn's)."""
    from svgbench.tasks import MetricSpec, register_task, unregister_task

    register_task("latent-mean", _latent_mean, _MeanConfig, metrics=[MetricSpec("latent_mean", "mean", "{:.4f}", True)])
    yield "latent-mean"
    unregister_task("latent-mean")


def _cheap_run(tmp_path, **kw):
    from svgbench.data import DataConfig
    from svgbench.runner import RunConfig

    return RunConfig(encoders=("pixels",), tasks=("probe", "latent-mean"), data=DataConfig(size=16),
                     results_dir=str(tmp_path / "results"), batch_size=16,
                     task_overrides={"probe": {"train_size": 32, "test_size": 16, "epochs": 2}}, **kw)


def test_a_new_task_version_recomputes_its_cells_and_only_those(tmp_path, monkeypatch, mean_task):
    """Bumping probe's version: the next run reports probe's records as stale and recomputes those cells (and
    only those); --keep-stale reuses them instead, labelled stale; the record says what code made it."""
    from svgbench.runner import code_version, run_matrix
    from svgbench.records import mark_stale
    from svgbench.tasks import get_task

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    first = run_matrix(_cheap_run(tmp_path), log=lambda m: None)
    assert first.computed == 2 and first.stale == 0
    rec = first.records[0]
    first_keys = {r["task"]: r["key"] for r in first.records}
    assert rec["task_version"] == get_task(rec["task"]).version and rec["cell"] and rec["cell"] != rec["key"]
    assert rec["svgbench_version"] == code_version()["svgbench_version"]
    assert {k: rec[k] for k in ("git_commit", "git_dirty")} == {k: code_version()[k] for k in ("git_commit", "git_dirty")}
    assert "stale" not in json.loads(next((tmp_path / "results" / "records").rglob("*.json")).read_text())
    assert run_matrix(_cheap_run(tmp_path), log=lambda m: None).computed == 0  # same versions: all reused

    monkeypatch.setattr(get_task("probe"), "version", get_task("probe").version + 1)
    kept = run_matrix(_cheap_run(tmp_path, keep_stale=True), log=lambda m: None)
    assert (kept.computed, kept.skipped, kept.stale, kept.kept_stale) == (0, 2, 1, 1)
    for r in kept.records:
        assert (r["task"] == "probe") == bool(r.get("stale")), r["task"]
    assert "is now version" in next(r for r in kept.records if r["task"] == "probe")["stale"]
    from svgbench.report import write_reports

    tables = write_reports(tmp_path / "results", plots=False)  # from the records on disk, as `svgbench report`
    assert "| pixels (stale) |" in tables["probe"].read_text()
    assert "| pixels |" in tables["latent-mean"].read_text() and "stale" not in tables["latent-mean"].read_text()

    said = []
    again = run_matrix(_cheap_run(tmp_path), log=said.append)
    assert (again.computed, again.skipped, again.stale) == (1, 1, 1)
    new = {r["task"]: r for r in again.records}
    assert new["probe"]["task_version"] == get_task("probe").version and new["probe"]["key"] != first_keys["probe"]
    assert new["latent-mean"]["key"] == first_keys["latent-mean"]  # reused, not recomputed
    assert sum("is stale" in s and "recomputing" in s for s in said) == 1
    # the old records stay on disk; read against the registered versions, they (and only they) are stale
    loaded = mark_stale(load_records(tmp_path / "results"), {"probe": get_task("probe").version,
                                                              "latent-mean": get_task("latent-mean").version})
    assert len(loaded) == 3 and sum(bool(r["stale"]) for r in loaded) == 1
    assert all(r["task"] == "probe" and r["task_version"] == get_task("probe").version - 1
               for r in loaded if r["stale"])
    assert run_matrix(_cheap_run(tmp_path), log=lambda m: None).computed == 0


def test_a_record_from_before_task_versions_is_stale(tmp_path, monkeypatch, mean_task):
    """A record written before tasks declared versions (its key is the cell's key without the version) is
    found, reported stale and recomputed."""
    from svgbench.runner import run_matrix

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    cfg = _cheap_run(tmp_path)
    cfg.encoders, cfg.tasks = ("pixels",), ("probe",)
    (rec,) = run_matrix(cfg, log=lambda m: None).records
    path = record_path(tmp_path / "results", "probe", "pixels", rec["key"])
    legacy = {k: v for k, v in json.loads(path.read_text()).items()
              if k not in ("task_version", "cell", "svgbench_version", "git_commit", "git_dirty")}
    legacy |= {"key": rec["cell"], "record_version": 2}
    path.unlink()
    record_path(tmp_path / "results", "probe", "pixels", rec["cell"]).write_text(json.dumps(legacy))
    said = []
    kept = run_matrix(dataclasses.replace(cfg, keep_stale=True), log=said.append)
    assert kept.kept_stale == 1 and "before tasks declared versions" in kept.records[0]["stale"]
    again = run_matrix(cfg, log=said.append)
    assert (again.computed, again.stale) == (1, 1) and again.records[0]["key"] == rec["key"]


def test_stale_reason_and_the_git_commit(tmp_path):
    from svgbench.records import stale_label, stale_reason
    from svgbench.runner import _git_head

    assert stale_reason({"task": "probe", "task_version": 2}, 2) is None
    assert "task version 1" in stale_reason({"task": "probe", "task_version": 1}, 2)
    assert stale_label({"stale": "x"}) == " (stale)" and stale_label({"stale": None}) == ""
    sha = "0123456789abcdef0123456789abcdef01234567"
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert _git_head(git) is None  # a branch without commits
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{sha} refs/heads/main\n")
    assert _git_head(git) == sha
    (git / "refs" / "heads" / "main").write_text(sha.replace("0", "f") + "\n")
    assert _git_head(git) == sha.replace("0", "f")
    (git / "HEAD").write_text(sha + "\n")  # detached
    assert _git_head(git) == sha
    assert _git_head(tmp_path / "nowhere" / ".git") is None  # not a checkout: no commit
