"""The dataset registry: specs instead of name tests, n/a with the reason where data lacks what a task needs,
unchanged keys for the built-in datasets, entry points, the shared registry machinery, and a third-party
dataset (examples/my_dataset.py) through `--plugin` to every applicable table and the scorecard."""

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import svgbench
from svgbench.data import (BUILTIN_DATASETS, DataConfig, DataError, DatasetSpec, UnknownDatasetError, build_dataset,
                           dataset_spec, list_datasets, register_dataset, unregister_dataset)
from svgbench.data import registry as data_registry
from svgbench.registry import Registry, resolve

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(svgbench.__file__).resolve().parent
EXAMPLE = ROOT / "examples" / "my_dataset.py"


def test_no_dataset_name_tests_outside_the_data_package():
    """What differs between datasets is a DatasetSpec property; only svgbench.data and the presets (which pick the
    embedded default) name a dataset; the training recipes read a whole split in memory or redraw its objects
    through the spec (DatasetSpec.arrays / .views)."""
    allowed = ("data/", "presets.py")
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith(allowed):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["']shapes["']""", line):
                hits.append(f"svgbench/{rel}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_builtin_data_keys_unchanged():
    """Record and cache names of the built-in datasets are what they were before the registry (the committed
    results stay reusable): fixed values, and every committed record's data key recomputed."""
    assert list_datasets()[:6] == list(BUILTIN_DATASETS)
    assert DataConfig().key() == "shapes-val-64px-228e75b85e"
    assert DataConfig(split="train", size=50000).key() == "shapes-train-64px-2f04a12d30"
    assert DataConfig(name="imagefolder", root="/x").key() == "imagefolder-val-64px-32e1169e6d"
    checked = 0
    for path in sorted((ROOT / "results").rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("data"), dict) and "key" in rec["data"]:
            data = dict(rec["data"])
            key = data.pop("key")
            assert DataConfig(**data).key() == key, path
            checked += 1
    if (ROOT / "results" / "records").is_dir():
        assert checked > 0


def test_specs_say_what_each_builtin_has():
    shapes, folder, seg = dataset_spec("shapes"), dataset_spec("imagefolder"), dataset_spec("segfolder")
    assert (shapes.feature_network, folder.feature_network) == ("judge", "inception")
    assert shapes.masks and seg.masks and not folder.masks and not seg.labels
    assert (shapes.train_split, seg.train_split) == ("train", "training")
    assert shapes.shipped_models and not folder.shipped_models and not shapes.needs_root
    assert len(shapes.classes) == len(build_dataset(DataConfig(size=4)).classes)
    assert folder.resolution_policy == "adm-center-crop"


def test_unknown_name_and_bad_resolution_are_one_line_before_any_work():
    with pytest.raises(DataError, match=r"--data 'nope' is not a registered dataset; use shapes, imagefolder, "
                                        r".* or zipfolder \(or register one: svgbench --plugin FILE") as e:
        DataConfig(name="nope")
    assert e.value.input == "--data"
    with pytest.raises(DataError, match=r"--resolution 20: data 'shapes' takes resolutions >= 16 and a multiple "
                                        r"of 8") as e:
        DataConfig(resolution=20)
    assert e.value.input == "--resolution"
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'nope'; known datasets: shapes, imagefolder"):
        dataset_spec("nope")


class _Tiny:
    def __init__(self, cfg):
        import torch

        self.cfg, self.classes = cfg, ["a", "b"]
        self.images = torch.linspace(-1, 1, 8 * 3 * cfg.resolution ** 2).reshape(8, 3, cfg.resolution, -1)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import torch

        return {"image": self.images[i], "label": torch.tensor(i % 2)}


def test_register_refuses_duplicates_bad_names_and_bad_specs():
    spec = register_dataset("test-tiny", _Tiny, needs_root=False, splits=(), source="test file A")
    try:
        assert isinstance(spec, DatasetSpec) and "test-tiny" in list_datasets()
        with pytest.raises(ValueError, match=r"dataset 'test-tiny' is already registered \(by test file A\)"):
            register_dataset("test-tiny", _Tiny)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("shapes", _Tiny)
        ds = build_dataset(DataConfig(name="test-tiny", resolution=4))
        assert len(ds) == 8 and ds.data_config.name == "test-tiny"
        assert DataConfig(name="test-tiny").key().startswith("test-tiny-val-64px-")
    finally:
        unregister_dataset("test-tiny")
    assert "test-tiny" not in list_datasets()
    with pytest.raises(ValueError, match="invalid dataset name"):
        register_dataset("Bad Name", _Tiny)
    with pytest.raises(TypeError, match="factory must be callable"):
        register_dataset("test-bad", 42)
    with pytest.raises(ValueError, match="feature_network 'clip' is not one of inception, judge"):
        register_dataset("test-bad", _Tiny, feature_network="clip")
    with pytest.raises(ValueError, match="train_split 'fit' is not one of its splits train, val"):
        register_dataset("test-bad", _Tiny, train_split="fit")
    assert "test-bad" not in list_datasets()


def test_a_task_gets_na_with_the_reason_where_the_data_lacks_what_it_needs():
    from svgbench.encoders import create_encoder
    from svgbench.runner import RunConfig, _not_applicable_reason
    from svgbench.tasks import get_task

    enc = create_encoder("pixels")
    register_dataset("test-unlabelled", _Tiny, needs_root=False, labels=False, masks=False, train_split=None)
    try:
        cfg = RunConfig(data=DataConfig(name="test-unlabelled"))
        why = {t: _not_applicable_reason(get_task(t), enc, cfg) for t in ("probe", "knn", "seg", "reconstruction")}
        assert why["probe"] == "data 'test-unlabelled' has no class labels: `probe` needs them"
        assert why["seg"].startswith("data 'test-unlabelled' has no per-pixel masks (datasets with masks: shapes, "
                                     "segfolder")
        assert why["reconstruction"] is None
    finally:
        unregister_dataset("test-unlabelled")
    register_dataset("test-evalonly", _Tiny, needs_root=False, splits=("val",), train_split=None, masks=True)
    try:
        cfg = RunConfig(data=DataConfig(name="test-evalonly"))
        assert _not_applicable_reason(get_task("seg"), enc, cfg) == ("data 'test-evalonly' has no training split: "
                                                                      "`seg` needs one")
    finally:
        unregister_dataset("test-evalonly")
    # built-ins: as before the registry
    assert _not_applicable_reason(get_task("seg"), enc, RunConfig()) is None


def test_entry_point_group(fake_distribution, monkeypatch):
    """A third-party package registers a dataset through the `svgbench.datasets` entry-point group."""
    fake_distribution("thirdparty_data", "from svgbench.data import DatasetSpec\n"
                      "SPEC = DatasetSpec('thirdparty-data', lambda cfg: [0, 1, 2], needs_root=False, labels=False)\n",
                      "svgbench.datasets", "thirdparty-data", "thirdparty_data:SPEC")
    monkeypatch.setattr(data_registry.DATASETS, "entry_points_loaded", False)
    try:
        spec = dataset_spec("thirdparty-data")
        assert spec.source == "entry point thirdparty_data:SPEC" and not spec.labels
        assert "thirdparty-data" in list_datasets()
    finally:
        unregister_dataset("thirdparty-data")
        sys.modules.pop("thirdparty_data", None)


def test_one_registry_machinery():
    """Encoders, tasks and datasets share one Registry class and one lazy 'module:attribute' resolver."""
    from svgbench.encoders.registry import ENCODERS
    from svgbench.tasks.registry import TASKS

    assert all(isinstance(r, Registry) for r in (ENCODERS, TASKS, data_registry.DATASETS))
    assert resolve("svgbench.data.registry:DatasetSpec") is DatasetSpec
    assert resolve("os.path:join.__name__") == "join"
    with pytest.raises(ValueError, match="not a 'module:attribute' reference"):
        resolve("os.path")

    @dataclass
    class _E:
        source: str

    reg = Registry("widget", "svgbench.test-widgets", name_re=r"^[a-z]+$", name_rule="lower-case letters",
                   builtins=lambda: {"b": _E("builtin"), "a": _E("builtin")}, from_entry_point=lambda ep, s: _E(s))
    reg.add("c", _E("me"))
    assert reg.names() == ["b", "a", "c"] and reg["c"].source == "me" and reg.find("z") is None
    with pytest.raises(KeyError, match="unknown widget 'z'; known widgets: b, a, c"):
        reg.get("z")
    with pytest.raises(ValueError, match=r"widget 'a' is already registered \(by builtin\); pick another name or "
                                         r"call unregister_widget\('a'\) first"):
        reg.add("a", _E("me"))
    reg.remove("a")
    assert reg.names() == ["b", "c"]


def _csv_dataset(root: Path) -> Path:
    """examples/my_dataset.py's layout: 4 stripe classes, 12 train and 6 val images each, listed in CSV files."""
    from svgbench.data.synthetic import write_stripes_imagefolder

    write_stripes_imagefolder(root, {"train": 12, "val": 6}, num_classes=4, resolution=72)
    for split in ("train", "val"):
        lines = ["file,label"] + [f"{p.relative_to(root).as_posix()},{p.parent.name}"
                                  for p in sorted((root / split).rglob("*.JPEG"))]
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def cli(svgbench_cli):
    """`svgbench ARGS` in this process -> (exit status, stdout, stderr), through the suite's svgbench_cli (which
    unregisters the datasets a --plugin registered, as a new process would not have them)."""

    def run(*args, cwd):
        done = svgbench_cli(*args, cwd=cwd)
        return done.returncode, done.stdout, done.stderr

    return run


def test_example_dataset_plugin_reaches_every_applicable_table_and_the_scorecard(tmp_path, cli, monkeypatch):
    """Every task's table gets the dataset's row. Generation reads Inception on this data (its spec), so with the
    Inception weights made absent its cells are n/a with that reason before any diffusion model is trained (the
    CPU-hours part; the generation task's own tests cover it)."""
    monkeypatch.setenv("SVGBENCH_INCEPTION_WEIGHTS", str(tmp_path / "absent-inception.pth"))
    data, res = _csv_dataset(tmp_path / "data"), tmp_path / "results"
    rc, _, err = cli("--plugin", EXAMPLE, "run", "--data", "csv-images", "--data-root", data, "--encoders", "pixels",
                     "--num-images", "16", "--set", "probe.epochs=5", "--results", res, cwd=tmp_path)
    assert rc == 0, err[-3000:]
    assert "csv-images" not in list_datasets()
    label = f"csv-images:{data}/val 64px"
    records = {json.loads(p.read_text())["task"]: json.loads(p.read_text()) for p in (res / "records").rglob("*.json")}
    assert set(records) == {"reconstruction", "probe", "knn", "seg", "generation", "sampling"}
    for task in ("generation", "sampling"):
        assert f"| pixels | {label} |" in (res / f"{task}.md").read_text()
        assert "Inception weights are not on this machine" in records[task]["metrics"]["unavailable"]["fid"]
    seg = records["seg"]
    assert seg["not_applicable"].startswith("data 'csv-images' has no per-pixel masks")
    for task in ("reconstruction", "probe", "knn"):  # measured here, with numbers
        assert not records[task].get("not_applicable"), task
        assert f"| pixels | {label} |" in (res / f"{task}.md").read_text()
    assert records["probe"]["metrics"]["probe_top1"] > 50  # 4 separable classes: the labels reached the probe
    assert records["reconstruction"]["metrics"]["psnr"] > 10
    assert "judge_rfid" in records["reconstruction"]["metrics"]["unavailable"]  # the judge knows shapes only
    score = (res / "scorecard.md").read_text()
    assert f"| pixels | {label} |" in score
    # the records still report without the plugin (svgbench report in a new process)
    rc, _, err = cli("report", "--results", res, cwd=tmp_path)
    assert rc == 0, err[-2000:]
    assert "| pixels | csv-images:" in (res / "knn.md").read_text()


def test_example_dataset_refuses_a_missing_split_in_one_line(tmp_path, cli):
    data = _csv_dataset(tmp_path / "data")
    rc, _, err = cli("--plugin", EXAMPLE, "run", "--data", "csv-images", "--data-root", data, "--split", "test",
                     "--encoders", "pixels", "--tasks", "knn", "--results", tmp_path / "results", cwd=tmp_path)
    assert rc == 2 and "Traceback" not in err
    assert "test.csv: no such file (splits found: train, val); pass --split with one of them" in err
    assert not (tmp_path / "results" / "records").exists()


def test_plugin_by_module_path(tmp_path, cli, monkeypatch):
    """--plugin also takes an importable module (a package's dataset module), not only a file."""
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    monkeypatch.delitem(sys.modules, "my_dataset", raising=False)
    data = _csv_dataset(tmp_path / "data")
    rc, _, err = cli("--plugin", "my_dataset", "run", "--data", "csv-images", "--data-root", data, "--split", "test",
                     "--encoders", "pixels", "--tasks", "knn", "--results", tmp_path / "results", cwd=tmp_path)
    assert rc == 2 and "test.csv: no such file (splits found: train, val)" in err
    rc, _, err = cli("run", "--data", "csv-images", "--data-root", data, "--encoders", "pixels", "--tasks", "knn",
                     "--results", tmp_path / "results", cwd=tmp_path)  # without the plugin: not a dataset
    assert rc == 2 and "--data 'csv-images' is not a registered dataset" in err
    sys.modules.pop("my_dataset", None)


def test_a_config_file_names_a_plugin_dataset(tmp_path, cli):
    """`data:` in a --config file takes a dataset registered by a --plugin on the command line or by the file's own
    `plugin:` (the run reaches the dataset: its own missing-split line, exit 2)."""
    data = _csv_dataset(tmp_path / "data")
    cfg = tmp_path / "run.yaml"
    for in_file in (False, True):
        cfg.write_text(f"data: csv-images\ndata-root: {data}\nsplit: test\nencoders: [pixels]\ntasks: [knn]\n"
                       + (f"plugin: [{EXAMPLE}]\n" if in_file else ""))
        flags = () if in_file else ("--plugin", EXAMPLE)
        rc, _, err = cli(*flags, "run", "--config", cfg, "--results", tmp_path / "results", cwd=tmp_path)
        assert rc == 2 and "test.csv: no such file (splits found: train, val)" in err, err
    cfg.write_text("data: csv-images\n")  # no plugin anywhere: the file's value is refused, naming the file
    rc, _, err = cli("run", "--config", cfg, cwd=tmp_path)
    assert rc == 2 and f"{cfg}: data: 'csv-images' is not one of shapes, imagefolder" in err


def test_training_recipes_read_the_data_through_its_spec(tmp_path):
    """The recipes' in-memory reader and data-side views are spec properties: the shapes spec gives exactly what its
    generator gives; a dataset without them is refused in one line naming the property (no dataset name tested)."""
    import numpy as np

    from svgbench.data.shapes import ShapesConfig, render_views, shapes_arrays
    from svgbench.errors import DataError
    from svgbench.train.ssl import DinoConfig, ViewSource

    shapes = dataset_spec("shapes")
    got = shapes.read_arrays(32, "val", 8, cache_dir=str(tmp_path))
    want = shapes_arrays(ShapesConfig(resolution=32, split="val", size=8))
    assert np.array_equal(got["images"], want["images"]) and np.array_equal(got["labels"], want["labels"])
    views = shapes.view_renderer(32, seed=3).views(5, 2, view_seed=7, repose=True)
    ref, _ = render_views(ShapesConfig(resolution=32, split="train", size=10_000_000, seed=3), 5, 2, view_seed=7,
                          repose=True)
    assert all(np.array_equal(a, b) for a, b in zip(views, ref))
    folder = dataset_spec("imagefolder")
    with pytest.raises(DataError, match="DatasetSpec.arrays"):
        folder.read_arrays(32, "train", 8)
    with pytest.raises(ValueError, match="DatasetSpec.views.*'imagefolder'.*crops"):
        ViewSource(DinoConfig(data="imagefolder", views="swap", data_root=str(tmp_path)))
