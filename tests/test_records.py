"""svgbench.records: the typed, versioned result record and its readers."""

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
