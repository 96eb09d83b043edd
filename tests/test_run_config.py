"""One run configuration from a preset (RunConfig.from_preset): `svgbench run` (flags, --config file, --set),
`pytest tasks/` and `svgbench.evaluate` build the same run, and so the same cell keys, from the same preset and
options; the default `svgbench run` computes the keys of the published run's records."""

from __future__ import annotations

import pytest
import yaml

from svgbench.cli import build_parser, load_run_config, run_config_of
from svgbench.errors import UserError
from svgbench.runner import RunConfig, RunSummary, cell_keys
from tasks.conftest import FULL_IMAGES, QUICK_IMAGES, harness_config

ENCODERS = ("pixels", "tiny-ssl")
TASKS = ("probe", "knn", "generation")


def cli_config(*argv: str) -> RunConfig:
    """The RunConfig `svgbench run ARGV` runs, its --config file read as `main` reads it."""
    argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    if args.config:
        args = build_parser(load_run_config(args.config)).parse_args(argv)
    return run_config_of(args)


def api_configs(monkeypatch, encoders=ENCODERS, **kw) -> list[RunConfig]:
    """The RunConfig of each `svgbench.evaluate(encoder, ...)` call (its run_matrix stubbed: nothing computed)."""
    import svgbench
    from svgbench import runner

    seen = []
    monkeypatch.setattr(runner, "run_matrix", lambda cfg, log=None: seen.append(cfg) or RunSummary([], [], 0, 0))
    for name in encoders:
        svgbench.evaluate(name, **kw)
    return seen


def keys_of(*configs: RunConfig) -> dict:
    out = {}
    for cfg in configs:
        out |= cell_keys(cfg)
    return out


def test_cli_harness_and_api_build_the_same_cells(monkeypatch):
    cli = cli_config("--encoders", ",".join(ENCODERS), "--tasks", ",".join(TASKS), "--device", "cpu")
    harness = harness_config("tiny", full=True, device="cpu", encoders=ENCODERS, tasks=TASKS)
    api = api_configs(monkeypatch, tasks=TASKS, preset="tiny", device="cpu")
    assert cli.data == harness.data == api[0].data and cli.data.size == FULL_IMAGES
    assert cli.task_overrides == harness.task_overrides == api[0].task_overrides
    keys = keys_of(cli)
    assert len(keys) == len(ENCODERS) * len(TASKS) and len(set(keys.values())) == len(keys)
    assert keys_of(harness) == keys
    assert keys_of(*api) == keys
    # a setting over the preset: --set, the same in a --config file, and the API's settings
    with_set = keys_of(cli_config("--encoders", ",".join(ENCODERS), "--tasks", ",".join(TASKS), "--device", "cpu",
                                  "--set", "probe.epochs=3"))
    assert with_set[ENCODERS[0], "probe"] != keys[ENCODERS[0], "probe"]
    assert with_set[ENCODERS[0], "knn"] == keys[ENCODERS[0], "knn"]
    api = api_configs(monkeypatch, tasks=TASKS, preset="tiny", device="cpu", settings={"probe": {"epochs": 3}})
    assert keys_of(*api) == with_set
    # the quick harness reads the images `svgbench run --num-images 32` reads
    quick = harness_config("tiny", full=False, device="cpu", encoders=ENCODERS, tasks=TASKS)
    assert quick.data == cli_config("--num-images", str(QUICK_IMAGES)).data


def test_evaluate_without_a_preset_keeps_each_tasks_defaults(monkeypatch):
    from svgbench.data import DataConfig

    (cfg,) = api_configs(monkeypatch, encoders=("pixels",), tasks="knn", settings={"knn": {"ks": (3,)}})
    assert cfg.data == DataConfig() and cfg.task_overrides == {"knn": {"ks": (3,)}} and cfg.tasks == ("knn",)


def test_precedence_preset_file_flags_set(tmp_path):
    assert cli_config().task_overrides["probe"]["epochs"] == 100  # the preset's
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({"num-images": 48, "set": {"probe": {"epochs": 5}}}))
    by_file = cli_config("--config", str(cfg_file))
    assert by_file.task_overrides["probe"] == {"train_size": 10_000, "epochs": 5} and by_file.data.size == 48
    by_flags = cli_config("--config", str(cfg_file), "--num-images", "16", "--set", "probe.epochs=7")
    assert by_flags.task_overrides["probe"]["epochs"] == 7 and by_flags.data.size == 16
    # a flag's task setting gives way to an explicit --set of the same field
    ref = tmp_path / "ref.npz"
    ref.write_bytes(b"")
    cfg = cli_config("--reference", str(ref), "--set", "sampling.reference_npz=other.npz")
    assert cfg.task_overrides["generation"]["reference_npz"] == str(ref)
    assert cfg.task_overrides["sampling"]["reference_npz"] == "other.npz"
    assert cli_config("--train-diffusion", "--set", "generation.train=false").task_overrides["generation"]["train"] \
        is False


def test_data_defaults_resolved_in_one_place(tmp_path):
    (tmp_path / "val" / "a").mkdir(parents=True)
    root = str(tmp_path)
    # a root alone, over the embedded data: its format; the preset's resolution and size stay
    data = cli_config("--data-root", root).data
    assert (data.name, data.root, data.resolution, data.size, data.convert_mode) == ("imagefolder", root, 64, 512, False)
    assert cli_config("--data-root", str(tmp_path / "x.zip")).data.name == "zipfolder"
    # over a preset that reads files: its dataset, with its conversion unless --convert-mode says how
    data = cli_config("--preset", "imagenet256", "--data-root", root).data
    assert (data.name, data.resolution, data.size, data.convert_mode) == ("imagefolder", 256, 50_000, True)
    assert cli_config("--preset", "imagenet256", "--data-root", root, "--convert-mode", "composite-white"
                      ).data.convert_mode == "composite-white"
    assert cli_config("--seed", "4").data.seed == 4 and cli_config("--seed", "4").seed == 4
    # the API's forms of the same data
    assert RunConfig.from_preset("tiny", data={"root": root}).data == cli_config("--data-root", root).data
    assert RunConfig.from_preset("tiny", data="shapes").data == cli_config("--data", "shapes").data


@pytest.mark.parametrize("kw, needle", [
    ({"preset": "huge"}, "--preset huge: unknown preset 'huge'"),
    ({"set_items": ["probe.epochs=x"]}, "--set probe.epochs=x"),
    ({"set_items": ["probe.bogus=1"]}, "probe has no config field 'bogus'"),
    ({"data": {"name": "imagefolder"}}, "needs its files: pass --data-root"),
    ({"data": {"convert_mode": "grey"}}, "--convert-mode grey"),
])
def test_bad_inputs_are_user_errors(kw, needle):
    with pytest.raises(UserError) as e:
        RunConfig.from_preset(**({"preset": "tiny"} | kw))
    assert needle in str(e.value) and "\n" not in str(e.value)


# the record keys of the default `svgbench run` (the embedded preset, run on a CPU that multiplies bf16 natively) as
# the README's published run at 3f4bfae wrote them under results/records (generated, not in git): one per encoder,
# in EMBEDDED_ENCODERS order. A change of key is a recomputation for every user holding those records: a task
# version, shipped weights or a preset setting changed on purpose, and this table with it.
DEFAULT_RUN_KEYS = {
    "generation": ("629a56750f12", "003fa0a8178b", "588758bb7895", "e63ce6967583", "3c17c4bda177", "85ea0a61dc29"),
    "knn": ("37bf8c30f166", "ae2afe5c032b", "a6bad7aeb5d2", "fcee4706a9d6", "d5f589308238", "632449e994f0"),
    "probe": ("ab61da91c7d4", "72338e0ad1ef", "06e387195188", "643e8c219906", "ec05fa0510fb", "e0bb3aafa353"),
    "reconstruction": ("706061b86721", "9cff4e140250", "1e9f30ee82f2", "55d2faa88cb4", "ce67448819b9", "d2098512a0f0"),
    "sampling": ("1161812994b1", "e3b7f0285675", "21eb821a9161", "543da858244f", "11349988e65e", "2dfe041ad1c4"),
    "seg": ("2f02082b1501", "3915ce500059", "1930776a5cc7", "c593f2cf9049", "389460c09346", "2085348a92d5"),
}


def test_default_run_keys_are_the_published_records():
    """`svgbench run` (the embedded default) computes the keys of the published run's records: a change that moves
    no number moves no key, so the records a user holds stay current instead of being recomputed or called stale.
    --device cpu: those records are of a CPU run."""
    from svgbench.presets import EMBEDDED_ENCODERS, preset_bf16

    argv = ["--device", "cpu"]
    if not preset_bf16():  # the embedded preset samples in bf16 only where the CPU does so natively
        argv += ["--set", "generation.bf16=true", "--set", "sampling.bf16=true"]
    expected = {(enc, task): key for task, keys in DEFAULT_RUN_KEYS.items()
                for enc, key in zip(EMBEDDED_ENCODERS, keys)}
    assert cell_keys(cli_config(*argv)) == expected, ("a cell key moved: if on purpose (a task version, shipped "
                                                       "weights, a preset setting), update DEFAULT_RUN_KEYS with it")
