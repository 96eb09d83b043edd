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
    assert back == rec and back.record_version == SCHEMA_VERSION
    assert load_records(tmp_path) == [back]


def test_a_record_of_the_previous_version_loads(tmp_path):
    path = record_path(tmp_path, "probe", "pixels", V1["key"])
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(V1))
    rec = read_record(path, V1["key"])
    assert rec.metrics == {"probe_top1": 10.5} and rec.record_version == SCHEMA_VERSION


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
    assert again.records[0].metrics["psnr"] == first.records[0].metrics["psnr"]


def test_the_newest_record_of_a_cell_is_the_one_shown(tmp_path):
    """Two records of one (task, encoder, data), e.g. before and after new weights: readers take the one
    computed last, whichever file name sorts last; a record from before `finished` existed counts as oldest."""
    from svgbench.records import Results

    old = Record.from_dict(V1 | {"key": "ffff00000000", "finished": 1000.0, "metrics": {"probe_top1": 10.0}})
    new = Record.from_dict(V1 | {"key": "000000000000", "finished": 2000.0, "metrics": {"probe_top1": 90.0}})
    unstamped = Record.from_dict(V1 | {"key": "eeee00000000", "metrics": {"probe_top1": 50.0}})
    for rec in (old, new, unstamped):
        write_record(record_path(tmp_path, rec.task, rec.encoder, rec.key), rec)
    loaded = load_records(tmp_path)
    assert [r.key for r in loaded] == ["eeee00000000", "ffff00000000", "000000000000"]
    (shown,) = Results(loaded).latest("probe").values()
    assert shown.metrics["probe_top1"] == 90.0


def test_the_runner_stamps_computed_records(tmp_path):
    from svgbench.data import DataConfig
    from svgbench.runner import RunConfig, run_matrix

    import time

    before = time.time()
    cfg = RunConfig(encoders=("pixels",), tasks=("reconstruction",), data=DataConfig(size=8),
                    results_dir=str(tmp_path), batch_size=8)
    (rec,) = run_matrix(cfg).records
    assert before <= rec.finished <= time.time()
    assert load_records(tmp_path)[0].finished == rec.finished


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
    first_keys = {r.task: r.key for r in first.records}
    assert rec.task_version == get_task(rec.task).version and rec.cell and rec.cell != rec.key
    assert rec.svgbench_version == code_version()["svgbench_version"]
    assert (rec.git_commit, rec.git_dirty) == (code_version()["git_commit"], code_version()["git_dirty"])
    assert "stale" not in json.loads(next((tmp_path / "results" / "records").rglob("*.json")).read_text())
    assert run_matrix(_cheap_run(tmp_path), log=lambda m: None).computed == 0  # same versions: all reused

    monkeypatch.setattr(get_task("probe"), "version", get_task("probe").version + 1)
    kept = run_matrix(_cheap_run(tmp_path, keep_stale=True), log=lambda m: None)
    assert (kept.computed, kept.skipped, kept.stale, kept.kept_stale) == (0, 2, 1, 1)
    for r in kept.records:
        assert (r.task == "probe") == bool(r.stale), r.task
    assert "is now version" in next(r for r in kept.records if r.task == "probe").stale
    from svgbench.report import write_reports

    tables = write_reports(tmp_path / "results", plots=False)  # from the records on disk, as `svgbench report`
    assert "| pixels (stale) |" in tables["probe"].read_text()
    assert "| pixels |" in tables["latent-mean"].read_text() and "stale" not in tables["latent-mean"].read_text()

    said = []
    again = run_matrix(_cheap_run(tmp_path), log=said.append)
    assert (again.computed, again.skipped, again.stale) == (1, 1, 1)
    new = {r.task: r for r in again.records}
    assert new["probe"].task_version == get_task("probe").version and new["probe"].key != first_keys["probe"]
    assert new["latent-mean"].key == first_keys["latent-mean"]  # reused, not recomputed
    assert sum("is stale" in s and "recomputing" in s for s in said) == 1
    # the old records stay on disk; read against the registered versions, they (and only they) are stale
    loaded = mark_stale(load_records(tmp_path / "results"), {"probe": get_task("probe").version,
                                                              "latent-mean": get_task("latent-mean").version})
    assert len(loaded) == 3 and sum(bool(r.stale) for r in loaded) == 1
    assert all(r.task == "probe" and r.task_version == get_task("probe").version - 1
               for r in loaded if r.stale)
    assert run_matrix(_cheap_run(tmp_path), log=lambda m: None).computed == 0


def test_a_record_from_before_task_versions_is_stale(tmp_path, monkeypatch, mean_task):
    """A record written before tasks declared versions (its key is the cell's key without the version) is
    found, reported stale and recomputed."""
    from svgbench.runner import run_matrix

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    cfg = _cheap_run(tmp_path)
    cfg.encoders, cfg.tasks = ("pixels",), ("probe",)
    (rec,) = run_matrix(cfg, log=lambda m: None).records
    path = record_path(tmp_path / "results", "probe", "pixels", rec.key)
    legacy = {k: v for k, v in json.loads(path.read_text()).items()
              if k not in ("task_version", "cell", "svgbench_version", "git_commit", "git_dirty")}
    legacy |= {"key": rec.cell, "record_version": 2}
    path.unlink()
    record_path(tmp_path / "results", "probe", "pixels", rec.cell).write_text(json.dumps(legacy))
    said = []
    kept = run_matrix(dataclasses.replace(cfg, keep_stale=True), log=said.append)
    assert kept.kept_stale == 1 and "before tasks declared versions" in kept.records[0].stale
    again = run_matrix(cfg, log=said.append)
    assert (again.computed, again.stale) == (1, 1) and again.records[0].key == rec.key


def test_stale_reason_and_the_git_commit(tmp_path):
    from svgbench.records import stale_label, stale_reason
    from svgbench.runner import _git_head

    rec = Record.from_dict(V1)
    assert stale_reason(dataclasses.replace(rec, task_version=2), 2) is None
    assert "task version 1" in stale_reason(dataclasses.replace(rec, task_version=1), 2)
    assert "before tasks declared versions" in stale_reason(rec, 2)
    assert stale_label(dataclasses.replace(rec, stale="x")) == " (stale)" and stale_label(rec) == ""
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


# ---------------------------------------------------------------------------------------------
# Results: each cell's newest record, found once
# ---------------------------------------------------------------------------------------------

def _rec(key, finished, encoder="pixels", task="probe", data_key="d", size=None, version=None, top1=0.0):
    data = V1["data"] | {"key": data_key} | ({"size": size} if size is not None else {})
    return Record.from_dict(V1 | {"key": key, "task": task, "encoder": encoder, "finished": finished, "data": data,
                                  "task_version": version, "metrics": {"probe_top1": top1}})


def test_results_take_the_newest_record_of_a_cell_whatever_the_file_names(tmp_path):
    from svgbench.records import Results, data_key, data_label

    # file names sort opposite to the order the records were made in
    recs = [_rec("cccc", 3000.0, top1=3.0), _rec("bbbb", 2000.0, top1=2.0), _rec("aaaa", 1000.0, top1=1.0),
            _rec("zzzz", 1500.0, encoder="tiny-ssl", top1=9.0)]
    for r in recs:
        write_record(record_path(tmp_path, r.task, r.encoder, r.key), r)
    label = data_label(recs[0].data)
    for results in (Results.load(tmp_path), Results(recs), Results(reversed(recs)), Results.of(load_records(tmp_path))):
        assert [r.key for r in results] == ["aaaa", "zzzz", "bbbb", "cccc"] and len(results) == 4  # oldest first
        assert results.tasks() == ["probe"] and results.data_keys() == ["d"]
        rows = results.latest("probe")
        assert list(rows) == [("pixels", label), ("tiny-ssl", label)]  # by data, then encoder
        assert rows[("pixels", label)].metrics["probe_top1"] == 3.0
        assert results.cell("probe", "pixels", "d").key == "cccc" and results.cell("probe", "pixels", "x") is None
        assert [r.key for r in results.newest()] == ["cccc", "zzzz"] and results.latest("knn") == {}
        assert data_key(results.cell("probe", "tiny-ssl", "d")) == "d"
    same = Results.load(tmp_path)
    assert Results.of(same) is same
    with pytest.raises(TypeError, match=r"not dict: Record.from_dict\(d\) makes one"):
        Results.of([recs[0].as_dict()])


def test_results_name_and_flag_stale_rows():
    from svgbench.records import Results

    recs = [_rec("old1", 1000.0, version=1, top1=1.0), _rec("new2", 1000.0, encoder="tiny-ssl", version=2),
            _rec("legacy", 1000.0, encoder="tiny-vae")]  # no task version: made before tasks declared them
    results = Results(recs, versions={"probe": 2}, legacy=False)
    rows = {enc: r for (enc, _), r in results.latest("probe").items()}
    assert set(rows) == {"pixels (stale)", "tiny-ssl", "tiny-vae"}
    stale = rows["pixels (stale)"]
    assert stale.encoder == "pixels (stale)" and "is now version 2" in stale.stale and stale.metrics["probe_top1"] == 1.0
    assert rows["tiny-ssl"].stale is None and rows["tiny-vae"].stale is None  # legacy=False: left as it is
    # the cell keeps the encoder's own name: a finding looking the encoder up finds the record, flagged stale
    assert results.cell("probe", "pixels", "d").encoder == "pixels" and results.cell("probe", "pixels", "d").stale
    assert "before tasks declared versions" in Results(recs, versions={"probe": 2}).cell("probe", "tiny-vae", "d").stale
    # a stale record that a newer current one replaced is no row at all
    newer = _rec("new1", 2000.0, version=2, top1=5.0)
    rows = Results(recs + [newer], versions={"probe": 2}).latest("probe")
    assert [enc for enc, _ in rows] == ["pixels", "tiny-ssl", "tiny-vae (stale)"]
    assert next(iter(rows.values())).metrics["probe_top1"] == 5.0


def test_results_cells_keep_two_data_keys_with_one_label_apart():
    """Two sizes of one dataset share a table label (the table shows the newest) but are two cells to compare."""
    from svgbench.records import Results, data_label

    small, large = _rec("s", 1000.0, data_key="shapes-512", size=512, top1=1.0), _rec("l", 2000.0, data_key="shapes-4k",
                                                                                    size=4096, top1=2.0)
    assert data_label(small.data) == data_label(large.data)
    results = Results([large, small])
    assert len(results.latest("probe")) == 1 and next(iter(results.latest("probe").values())).key == "l"
    assert results.cell("probe", "pixels", "shapes-512").key == "s"
    assert results.cell("probe", "pixels", "shapes-4k").key == "l"
    assert results.data_keys() == ["shapes-4k", "shapes-512"]


def test_a_report_finds_each_cells_newest_record_once(tmp_path, monkeypatch):
    """write_reports builds one Results and every table, the scorecard, efficiency.md, the findings and the plots'
    frames read it: each record is labelled (its row found) exactly once per report, not once per table."""
    from test_report import synthetic_records, write_synthetic_results  # tests/ is on sys.path under pytest

    import svgbench.findings  # noqa: F401  (imported before the counters: its own names stay the real ones)
    import svgbench.plots
    from svgbench import records
    from svgbench.report import write_reports

    recs = synthetic_records()
    results_dir = write_synthetic_results(tmp_path / "results", recs)
    built, labelled, drawn = [], [], []
    real_init, real_label = records.Results.__init__, records.data_label

    def init(self, *a, **kw):
        built.append(self)
        real_init(self, *a, **kw)

    def label(data):
        labelled.append(data)
        return real_label(data)

    monkeypatch.setattr(records.Results, "__init__", init)
    monkeypatch.setattr(records, "data_label", label)
    monkeypatch.setattr(svgbench.plots, "write_plots", lambda results_dir, frames: drawn.append(frames))
    out = write_reports(results_dir)
    assert {"scorecard", "findings", "summary", "generation", "sampling"} <= set(out) and drawn
    assert len(built) == 1 and len(labelled) == len(recs)
    assert len(drawn[0]["pca_points"]) == 3 * 60  # the frames came from the same Results
