"""The task registry: names, duplicates, strict configs, presets, and a third-party task end to end."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from svgbench.presets import RUN_PRESETS
from svgbench.tasks import MetricSpec, get_task, list_tasks, register_task, unregister_task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_task.py"


@dataclass(frozen=True)
class _Cfg:
    batch_size: int = 8
    scale: float = 1.0


def _fn(encoder, dataset, cfg, device="cpu", progress=None):
    return {"x": cfg.scale}


def test_builtins_in_table_order_and_lazy():
    assert list_tasks()[:6] == ["reconstruction", "probe", "knn", "seg", "generation", "sampling"]
    code = ("import sys; from svgbench.tasks import list_tasks; list_tasks(); "
            "print(any(m.startswith(('svgbench.tasks.generation', 'svgbench.tasks.understanding', 'torch')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False", "listing tasks imported a task module (or torch)"


def test_duplicate_and_unknown_names_are_clear_errors():
    register_task("dup-task", _fn, _Cfg, metrics=[MetricSpec("x", "x")], source="test file A")
    try:
        with pytest.raises(ValueError, match=r"task 'dup-task' is already registered \(by test file A\)"):
            register_task("dup-task", _fn, _Cfg)
        with pytest.raises(ValueError, match="already registered"):
            register_task("probe", _fn, _Cfg)
    finally:
        unregister_task("dup-task")
    with pytest.raises(KeyError, match=r"unknown task 'nope'; known tasks: reconstruction, probe"):
        get_task("nope")
    with pytest.raises(ValueError, match="invalid task name"):
        register_task("Bad Name", _fn, _Cfg)
    with pytest.raises(ValueError, match="unknown needs"):
        register_task("needs-task", _fn, _Cfg, needs={"gpu"})
    with pytest.raises(ValueError, match="duplicate metric keys"):
        register_task("twice-task", _fn, _Cfg, metrics=[MetricSpec("x", "a"), MetricSpec("x", "b")])


def test_configs_are_strict():
    spec = register_task("strict-task", _fn, _Cfg)
    try:
        assert spec.make_config({"scale": 2.0}).scale == 2.0
        with pytest.raises(ValueError, match=r"has no config field 'scael'; fields: batch_size, scale"):
            spec.make_config({"scael": 2.0})
    finally:
        unregister_task("strict-task")


@pytest.mark.parametrize("preset", sorted(RUN_PRESETS))
def test_every_preset_builds_every_task_config(preset):
    tasks = RUN_PRESETS[preset]["tasks"]
    assert set(tasks) <= set(list_tasks()), f"preset {preset} sets unknown tasks"
    for name in list_tasks()[:6]:
        cfg = get_task(name).make_config(dict(tasks.get(name, {})), where=f"preset {preset}")
        for field, value in tasks.get(name, {}).items():
            assert getattr(cfg, field) == value


def test_runner_refuses_an_unknown_preset_field(tmp_path):
    from svgbench.data import DataConfig
    from svgbench.runner import RunConfig, run_matrix

    cfg = RunConfig(encoders=("pixels",), tasks=("probe",), data=DataConfig(size=8), results_dir=str(tmp_path),
                    task_overrides={"probe": {"epochz": 3}})
    with pytest.raises(ValueError, match=r"task 'probe' has no config field 'epochz'; fields: batch_size"):
        run_matrix(cfg)
    assert not (tmp_path / "records").exists()


def test_replacing_a_key_file_recomputes_the_cell_and_nothing_else_does(tmp_path):
    """A task's key_files (e.g. the shipped diffusion model it scores) are part of the cell's key: the same
    file reuses the record, a replaced one (or a first one where there was none) recomputes it."""
    from svgbench.data import DataConfig
    from svgbench.runner import RunConfig, run_matrix

    model = tmp_path / "model.bin"
    calls = []

    def fn(encoder, dataset, cfg, device="cpu", progress=None):
        calls.append(model.read_bytes() if model.exists() else None)
        return {"x": float(len(calls))}

    register_task("keyfile-task", fn, _Cfg, metrics=[MetricSpec("x", "x")],
                  key_files=lambda encoder: {"model": str(model)})
    try:
        cfg = RunConfig(encoders=("pixels",), tasks=("keyfile-task",), data=DataConfig(size=8),
                        results_dir=str(tmp_path / "results"))
        run_matrix(cfg)
        model.write_bytes(b"one")
        run_matrix(cfg)
        run_matrix(cfg)
        model.write_bytes(b"two")
        run_matrix(cfg)
        assert calls == [None, b"one", b"two"]
    finally:
        unregister_task("keyfile-task")


def test_generation_and_sampling_cells_are_keyed_by_the_shipped_diffusion_model():
    from svgbench.diffusion.store import SHIPPED
    from svgbench.encoders import create_encoder

    enc = create_encoder("tiny-vae", weights="random")
    for task in ("generation", "sampling"):
        assert get_task(task).key_files_of(enc) == {"shipped_diffusion": str(SHIPPED / "tiny-vae.safetensors")}


def test_third_party_task_reaches_its_table_the_scorecard_and_the_report(tmp_path, svgbench_cli):
    def _svgbench(*args, cwd):  # each call loads the plugin afresh, as `svgbench --plugin` would
        return svgbench_cli("--plugin", EXAMPLE, *args, cwd=cwd)

    res = tmp_path / "results"
    out = _svgbench("run", "--encoders", "pixels,tiny-vae", "--tasks", "latent-stats,probe", "--num-images", "32",
                    "--set", "probe.train_size=64", "--set", "probe.epochs=2", "--results", str(res), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    table = (res / "latent-stats.md").read_text()
    assert "| encoder | data | latent | weights | effective rank |" in table
    assert "| pixels |" in table and "| tiny-vae |" in table
    score = (res / "scorecard.md").read_text()
    assert "latent eff. rank" in score and "probe top-1 (%)" in score
    rows = json.loads((res / "latent-stats.json").read_text())
    assert {r["encoder"] for r in rows} == {"pixels", "tiny-vae"}
    # the metric, recomputed independently from the latents the encoder produces
    import torch

    from svgbench.data import DataConfig, build_dataset
    from svgbench.encoders import create_encoder

    ds = build_dataset(DataConfig(size=32))
    enc = create_encoder("pixels")
    with torch.no_grad():
        z = torch.cat([enc.encode(torch.stack([ds[i]["image"] for i in range(j, j + 16)])) for j in (0, 16)])
    x = z.double().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).numpy()
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True)), 0, None)
    p = eig / eig.sum()
    expected = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    got = next(r for r in rows if r["encoder"] == "pixels")["effective rank"]
    assert got == pytest.approx(expected, rel=1e-4)  # the cache may hold latents in fp16 (checked lossless to 1e-3)
    # `svgbench report` rebuilds the same table with the plugin; without it the records still report
    before = table
    rep = _svgbench("report", "--results", str(res), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert (res / "latent-stats.md").read_text() == before
    assert "latent-stats" not in list_tasks()  # as in a new process without --plugin
    bare = svgbench_cli("report", "--results", res, cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert "pixels" in (res / "latent-stats.md").read_text()


def test_list_shows_a_plugin_task(tmp_path, svgbench_cli):
    out = svgbench_cli("--plugin", EXAMPLE, "list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("latent-stats ") for line in out.stdout.splitlines())


def test_every_task_declares_a_version():
    """A task's version enters its cells' keys and records: built-ins declare theirs in one place; a registered
    task defaults to 1 and refuses anything but a positive integer."""
    from svgbench.tasks.builtin import BUILTIN_TASKS, VERSIONS

    assert {t.name: t.version for t in BUILTIN_TASKS} == VERSIONS
    spec = register_task("versioned-task", _fn, _Cfg, version=3)
    try:
        assert spec.version == 3 and get_task("versioned-task").version == 3
    finally:
        unregister_task("versioned-task")
    assert register_task("plain-task", _fn, _Cfg).version == 1
    unregister_task("plain-task")
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="version must be a positive integer"):
            register_task("bad-version-task", _fn, _Cfg, version=bad)
