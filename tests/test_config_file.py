"""`svgbench run --config FILE.yaml`: every run option from a file, flags and --set over it, the resolved options
beside the results and in each record, the real-scale example configs valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from svgbench.cli import build_parser, config_keys, load_run_config, main, resolved_run_options
from svgbench.runner import parse_setting

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml"))
# a tiny matrix: one encoder, one task, 48 procedural images
FLAGS = ["--encoders", "pixels", "--data", "shapes", "--tasks", "knn", "--num-images", "48", "--seed", "3", "--device", "cpu",
         "--set", "knn.train_size=48", "--set", "knn.ks=[3]", "--set", "knn.ci_resamples=20",
         "--set", "knn.silhouette_points=32"]
CONFIG = {"encoders": ["pixels"], "data": "shapes", "tasks": "knn", "num-images": 48, "seed": 3, "device": "cpu",
          "set": {"knn": {"train_size": 48, "ks": [3], "ci_resamples": 20, "silhouette_points": 32}}}


def _args(argv):
    args = build_parser().parse_args(argv)
    if args.config:
        args = build_parser(load_run_config(args.config)).parse_args(argv)
    return args


def _keys(results: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["key"] for p in (results / "records").rglob("*.json"))


def test_config_file_and_flags_give_the_same_cells(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", *FLAGS, "--results", "by_flags"]) == 0
    assert main(["run", "--config", str(cfg), "--results", "by_file"]) == 0
    keys = _keys(tmp_path / "by_flags")
    assert len(keys) == 1 and keys == _keys(tmp_path / "by_file")
    # the resolved options beside the results and in each record, and they rerun the same cells
    written = yaml.safe_load((tmp_path / "by_file" / "run-config.yaml").read_text())
    assert written["encoders"] == ["pixels"] and written["num-images"] == 48
    assert "knn.train_size=48" in written["set"]
    rec = json.loads(next((tmp_path / "by_file" / "records").rglob("*.json")).read_text())
    assert rec["run_options"] == written
    assert main(["run", "--config", "by_file/run-config.yaml", "--results", "again"]) == 0
    assert _keys(tmp_path / "again") == keys


def test_flags_and_set_override_the_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG | {"convert-mode": True}))
    args = _args(["run", "--config", str(cfg), "--num-images", "16", "--set", "knn.ks=[5,7]", "--tasks", "probe"])
    assert args.num_images == 16 and args.tasks == ("probe",) and args.seed == 3 and args.convert_mode is True
    settings = [parse_setting(s) for s in args.set]
    assert dict(((t, f), v) for t, f, v in settings)[("knn", "ks")] == (5, 7)  # the flag comes last, so it wins
    assert resolved_run_options(args)["encoders"] == ["pixels"]
    # underscores are the same keys; a plugin list is the global --plugin
    cfg.write_text("num_images: 8\nplugin: [examples/my_task.py]\n")
    args = _args(["run", "--config", str(cfg)])
    assert args.num_images == 8 and args.plugin == ["examples/my_task.py"]


@pytest.mark.parametrize("text, needle", [
    ("encoders: [pixels]\nepochs: 3\n", "unknown key 'epochs'; valid keys: batch-size, convert-mode, data"),
    ("num-images: many\n", "num-images: 'many' is not an integer"),
    ("convert-mode: 1\n", "convert-mode: 1 is not true or false"),
    ("data: lmdb\n", "data: 'lmdb' is not one of shapes, imagefolder"),
    ("set: {knn: 3}\n", "is not a mapping TASK: {FIELD: VALUE}"),
    ("- pixels\n", "not a mapping of run options"),
    ("encoders: [pixels\n", "not valid YAML"),
])
def test_bad_config_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, text, needle):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg), "--results", "res"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and str(cfg) in err, err
    assert "Traceback" not in err and not (tmp_path / "res").exists()
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err


def test_every_run_option_is_a_config_key():
    flags = {a.option_strings[0][2:] for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
             if a.option_strings and a.dest not in ("help", "config")}
    assert flags and set(config_keys()) == flags | {"plugin"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_configs_load_and_validate(path):
    """Parse only: every key and value checked, the data config built, every --set a real task field, every
    encoder and task registered (the checkpoints and data are not on this machine)."""
    from svgbench.data import DataConfig
    from svgbench.encoders import encoder_spec
    from svgbench.presets import get_preset
    from svgbench.tasks import list_tasks

    args = _args(["run", "--config", str(path)])
    assert args.preset == "imagenet256" and args.data_root
    data = get_preset(args.preset)["data"] | {"root": args.data_root}
    data |= {"name": args.data} if args.data else {}
    data |= {"split": args.split} if args.split else {}
    assert DataConfig(**data).resolution == 256
    settings = {(t, f): v for t, f, v in map(parse_setting, args.set)}  # unknown task or field: UserError
    if ("generation", "protocol") in settings:  # a published protocol, with the process its checkpoint declares
        from svgbench.diffusion.protocols import PROTOCOLS

        protocol = PROTOCOLS[settings["generation", "protocol"]]
        (spec,) = args.diffusion
        assert f"kind={protocol.kind}" in spec or (protocol.kind != "dit" and "kind=dit" not in spec), spec
    for name in args.encoders:
        encoder_spec(name)
    assert set(args.tasks or ()) <= set(list_tasks())
    for item in list(args.weights or []) + list(args.diffusion or []):
        assert item.split("=", 1)[0] in args.encoders
    assert EXAMPLES and len(EXAMPLES) >= 4

