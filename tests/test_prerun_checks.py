"""What a run needs from its data and its command line, checked before any work (issue 27, item 6).

Each case is tried as a new user meets it: small real image folders (a digits-like set with train/ and val/,
a val-only folder of mixed sizes and modes), `svgbench run` called in-process. Every input error exits 2 with
one line naming the input and the fix, no traceback, and nothing written: no results folder, no claim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svgbench.checkpoints import load_state_dict, save_safetensors
from svgbench.data import DataConfig
from svgbench.validate import Problem, check_numbers, errors, preflight

EMBEDDED = Path(__file__).resolve().parents[1] / "svgbench" / "weights"
RES = 64


def _digit(seed: int, mode: str = "L") -> Image.Image:
    """A 64 px grayscale stroke image, as the digits of a handwriting set are stored."""
    rng = np.random.default_rng(seed)
    a = np.zeros((RES, RES), np.uint8)
    r = rng.integers(8, 24)
    yy, xx = np.mgrid[:RES, :RES]
    a[np.abs(np.hypot(yy - 32, xx - 32) - r) < 3] = 255
    im = Image.fromarray(a, "L")
    return im if mode == "L" else im.convert(mode)


def digits(root: Path, splits=("train", "val"), mode: str = "L", per_class: int = 3) -> Path:
    for split in splits:
        for c in range(3):
            d = root / split / str(c)
            d.mkdir(parents=True)
            for i in range(per_class):
                _digit(100 * c + i, mode if split == "train" else "RGB").save(d / f"{i}.png")
    return root


def photos(root: Path) -> Path:
    """val only: photographs of mixed sizes and modes (RGB, RGBA with a transparent half, L, P)."""
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        d = root / "val" / c
        d.mkdir(parents=True)
        for j, mode in enumerate(("RGB", "RGBA", "L", "P")):
            w, h = int(rng.integers(70, 200)), int(rng.integers(70, 200))
            im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
            if mode == "RGBA":
                im = im.convert("RGBA")
                alpha = np.zeros((h, w), np.uint8)
                alpha[: h // 2] = 255
                im.putalpha(Image.fromarray(alpha))
            elif mode != "RGB":
                im = im.convert(mode)
            im.save(d / f"{j}.png")
    return root


@pytest.fixture
def run_cli(svgbench_cli, tmp_path):
    """`svgbench run ARGV` in this process (tests/conftest.py's svgbench_cli) -> (exit status, stdout + stderr), run
    in tmp_path with its results in tmp_path/results and its feature cache in tmp_path/cache."""

    def run(argv):
        done = svgbench_cli("run", "--results", tmp_path / "results", *argv, cwd=tmp_path,
                            env={"SVGBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"})
        return done.returncode, done.stdout + done.stderr

    return run


def refused(rc: int, out: str, tmp_path: Path, *needles: str) -> str:
    """The one error line of a refused run, after checking it exited 2 and wrote nothing."""
    assert rc == 2, out
    assert "Traceback" not in out, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip() and "warning:" not in ln]
    assert len(lines) == 1, out
    for n in needles:
        assert n in lines[0], (n, out)
    assert not (tmp_path / "results").exists(), sorted(p.name for p in (tmp_path / "results").rglob("*"))
    assert not list((tmp_path / "cache").rglob("*.claim")) if (tmp_path / "cache").exists() else True
    return lines[0]


# ---------------------------------------------------------------------------------------------- training split


def test_missing_training_split_is_named_with_the_real_fixes(tmp_path, run_cli):
    root = digits(tmp_path / "digits", splits=("val",))
    rc, out = run_cli(["--data-root", str(root), "--encoders", "pixels", "--tasks", "reconstruction,probe,knn"])
    line = refused(rc, out, tmp_path, "probe, knn", "split 'train'", f"create it ({root / 'train'}/<class>/",
                   "--set probe.train_split=NAME", "--set knn.train_split=NAME")
    assert "--split" not in line  # the evaluation split's advice does not fit a missing training split
    # the setting the line offers is the fix: a split that exists is accepted
    assert errors(preflight(data=DataConfig(name="imagefolder", root=str(root), resolution=RES), tasks=["probe"],
                            task_settings={"probe": {"train_split": "val"}})) != []  # same as evaluation: refused
    (root / "extra").mkdir()
    for c in range(3):
        (root / "extra" / str(c)).mkdir()
        _digit(c, "RGB").save(root / "extra" / str(c) / "x.png")
    assert errors(preflight(data=DataConfig(name="imagefolder", root=str(root), resolution=RES), tasks=["probe"],
                            task_settings={"probe": {"train_split": "extra"}})) == []


def test_training_split_same_as_evaluation_is_refused(tmp_path):
    root = digits(tmp_path / "digits")
    line = str(errors(preflight(data=DataConfig(name="imagefolder", root=str(root), split="train", resolution=RES,
                                                convert_mode=True), tasks=["knn"]))[0])
    assert "--split train" in line and "same split 'train'" in line and "--set knn.train_split=NAME" in line


def test_generation_trained_here_needs_the_training_split(tmp_path):
    root = digits(tmp_path / "digits", splits=("val",))
    data = DataConfig(name="imagefolder", root=str(root), resolution=RES)
    assert errors(preflight(data=data, encoders=["pixels"], tasks=["generation"])) == []  # nothing trained here
    line = str(errors(preflight(data=data, encoders=["pixels"], tasks=["generation"],
                                task_settings={"generation": {"train": True}}))[0])
    assert "generation trains on split 'train'" in line and "--diffusion" in line
    # tasks that read the same missing split: one line, each task's own way out
    line = str(errors(preflight(data=data, encoders=["pixels"], tasks=["probe", "generation"],
                                task_settings={"generation": {"train": True}}))[0])
    assert "probe, generation train on split 'train'" in line
    assert "--set probe.train_split=NAME" in line and "for generation, give a trained model with --diffusion" in line


def test_training_split_images_are_checked_like_the_evaluation_split(tmp_path, run_cli):
    root = digits(tmp_path / "digits", mode="L")  # val is RGB, train grayscale
    rc, out = run_cli(["--data-root", str(root), "--encoders", "pixels", "--tasks", "probe"])
    assert rc == 2 and "Traceback" not in out, out
    lines = out.strip().splitlines()
    assert all(ln.startswith("svgbench: ") for ln in lines), out
    assert all("/train/" in ln or "training split 'train'" in ln for ln in lines), out
    assert "--convert-mode" in out and "image mode is 'L'" in out
    assert "4 more non-RGB images in the training split 'train' (probe)" in out  # 9 files: 5 named, 4 counted
    assert not (tmp_path / "results").exists()
    # with --convert-mode both splits pass
    data = DataConfig(name="imagefolder", root=str(root), resolution=RES, convert_mode=True)
    assert errors(preflight(data=data, tasks=["probe"])) == []
    # bad files in both splits are listed at once, each split's own
    _digit(7, "L").save(root / "val" / "0" / "gray.png")
    lines = [str(p) for p in errors(preflight(data=data.replace(convert_mode=False), tasks=["probe"]))]
    assert any("val/0/gray.png" in ln for ln in lines) and any("/train/" in ln for ln in lines), lines


# ---------------------------------------------------------------------------------------------- encoder resolution


def test_every_encoder_off_its_training_resolution_is_said_once():
    problems = preflight(encoders=["tiny-vae", "tiny-ssl", "pixels"], resolution=128)
    warnings = [str(p) for p in problems if p.level == "warning"]
    assert errors(problems) == []
    assert len(warnings) == 2, warnings  # pixels has no weights, so no training resolution
    for name in ("tiny-vae", "tiny-ssl"):
        line = next(w for w in warnings if f"--encoders {name}" in w)
        assert "trained at 64px" in line and "128px" in line and "--resolution 64" in line and "\n" not in line
    assert [p for p in preflight(encoders=["tiny-vae"], resolution=64) if p.level == "warning"] == []
    # an encoder whose position embeddings fix its size is refused, not warned about
    assert "takes only 64x64" in str(errors(preflight(encoders=["tiny-svg"], resolution=128))[0])


# ---------------------------------------------------------------------------------------------- --set and config


@pytest.mark.parametrize("setting,named,fix", [
    ("probe.epochs=x", "--set probe.epochs=x", "takes an integer"),
    ("probe.lrs=x", "--set probe.lrs=x", "takes a list of numbers"),
    ("probe.lrs=[0.1,\"a\"]", "--set probe.lrs=", "--set probe.lrs=[0.0001,"),
    ("knn.ks=[10,2.5]", "--set knn.ks=[10,2.5]", "list of integers"),
    ("reconstruction.rfid=3", "--set reconstruction.rfid=3", "true or false"),
    ("probe.bogus=1", "probe.bogus=1", "fields: batch_size"),
])
def test_set_values_are_type_checked_before_work(tmp_path, run_cli, setting, named, fix):
    rc, out = run_cli(["--encoders", "pixels", "--tasks", "probe", "--num-images", "8", "--set", setting])
    refused(rc, out, tmp_path, named, fix)


def test_set_values_of_the_right_type_pass():
    from svgbench.runner import parse_setting

    assert parse_setting("probe.epochs=3") == ("probe", "epochs", 3)
    assert parse_setting("probe.lrs=[1,0.5]") == ("probe", "lrs", (1, 0.5))  # an integer is a number
    assert parse_setting("probe.train_split=2012") == ("probe", "train_split", "2012")  # text as typed
    assert parse_setting("seg.num_classes=null") == ("seg", "num_classes", None)
    assert errors(preflight(tasks=["probe"], task_settings={"probe": {"epochs": "x"}}))  # the API's check too


def test_config_file_values_are_type_checked(tmp_path, run_cli):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("encoders: pixels\ntasks: probe\nset:\n  probe:\n    epochs: many\n")
    rc, out = run_cli(["--config", str(cfg)])
    refused(rc, out, tmp_path, "--set probe.epochs=many", "takes an integer")
    cfg.write_text("encoders: pixels\nbatch-size: 0\n")
    rc, out = run_cli(["--config", str(cfg)])
    refused(rc, out, tmp_path, "--batch-size 0", "positive integer")


# ---------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--batch-size", "-4"), ("--num-images", "0"),
                                        ("--num-images", "-3"), ("--workers", "-1"), ("--seed", "-2")])
def test_numbers_are_checked_under_the_flag_typed(tmp_path, run_cli, flag, value):
    root = digits(tmp_path / "digits", mode="RGB")
    rc, out = run_cli(["--data-root", str(root), "--encoders", "pixels", "--tasks", "reconstruction", flag, value])
    line = refused(rc, out, tmp_path, f"{flag} {value}", f"e.g. {flag} ")
    assert "size" not in line.replace("--batch-size", "") and "limit" not in line  # not the internal names


def test_check_numbers():
    assert check_numbers({"--batch-size": 1, "--num-images": None, "--workers": 0, "--seed": 0}) == []
    assert [p.input for p in check_numbers({"--batch-size": True, "--resolution": 0})] == \
        ["--batch-size True", "--resolution 0"]


# ---------------------------------------------------------------------------------------------- symbolic links


@pytest.mark.parametrize("where", ["class-folder", "image-file", "link-to-its-folder"])
def test_symbolic_link_loop_is_one_line_naming_the_link(tmp_path, run_cli, where):
    root = digits(tmp_path / "digits", splits=("val",), mode="RGB")
    if where == "class-folder":
        link = root / "val" / "x1"
        link.symlink_to("x2")
        (root / "val" / "x2").symlink_to("x1")
    elif where == "link-to-its-folder":
        link = root / "val" / "x"
        link.symlink_to(".")
    else:
        link = root / "val" / "0" / "loop.png"
        link.symlink_to("loop.png")
    rc, out = run_cli(["--data-root", str(root), "--encoders", "pixels", "--tasks", "reconstruction"])
    name = str(link) if where == "image-file" else str(root / "val" / "x")  # x1 or x2: whichever is listed first
    refused(rc, out, tmp_path, name, "symbolic-link loop", "remove the link")


# ---------------------------------------------------------------------------------------------- --diffusion


def _diffusion_case(case: str, d: Path) -> tuple[str, str]:
    shipped = sorted((EMBEDDED / "diffusion").glob("*.safetensors"))[0]
    if case == "missing":
        return str(d / "nope.pt"), "no such file"
    if case == "garbage":
        (d / "g.pt").write_bytes(np.random.default_rng(0).bytes(3000))
        return str(d / "g.pt"), "not a weights file"
    if case == "not-a-diffusion-model":
        return str(EMBEDDED / "tiny-ssl.safetensors"), "not a DiT/SiT/SVG diffusion state dict"
    if case == "nan":
        state = dict(load_state_dict(shipped))
        key = sorted(k for k in state if state[k].is_floating_point() and k.startswith("blocks"))[0]
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan")
        save_safetensors(state, d / "nan.safetensors")
        return str(d / "nan.safetensors"), "non-finite"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "garbage", "not-a-diffusion-model", "nan"])
def test_diffusion_file_is_validated_before_the_first_cell(tmp_path, run_cli, case):
    path, words = _diffusion_case(case, tmp_path)
    rc, out = run_cli(["--encoders", "pixels", "--tasks", "reconstruction,generation", "--num-images", "8",
                       "--diffusion", f"pixels={path}"])
    refused(rc, out, tmp_path, f"--diffusion pixels={path}", words)


def test_diffusion_options_are_input_errors(tmp_path, run_cli):
    rc, out = run_cli(["--encoders", "pixels", "--diffusion", "pixels"])
    refused(rc, out, tmp_path, "--diffusion takes ENCODER=PATH")


# ---------------------------------------------------------------------------------------------- all-n/a cells


def test_a_cell_whose_every_metric_is_na_is_counted_and_printed_as_na(tmp_path):
    from svgbench.runner import RunConfig, all_na_reason, run_matrix
    from svgbench.tasks import get_task

    root = digits(tmp_path / "digits", mode="RGB")
    logs = []
    cfg = RunConfig(encoders=("pixels",), tasks=("generation",), results_dir=str(tmp_path / "results"),
                    data=DataConfig(name="imagefolder", root=str(root), resolution=RES))
    summary = run_matrix(cfg, log=logs.append)
    assert (summary.computed, summary.not_applicable) == (0, 1), logs
    line = next(m for m in logs if "generation" in m and "n/a" in m)
    reasons = summary.records[0].metrics["unavailable"]
    assert f"n/a ({reasons['fid']})" in line and "done in" not in " ".join(logs)
    # the judge's metric on data it was not trained for says so, whatever keeps the others from being measured
    assert "judge knows shapes only" in reasons["class_accuracy"] and reasons["class_accuracy"] != reasons["fid"]
    assert "class_accuracy" not in summary.records[0].metrics.get("pending", {})
    gen = get_task("generation")
    assert all_na_reason(gen, {"fid": 3.0, "unavailable": {"kid": "x"}}) is None
    assert all_na_reason(get_task("sampling"), {"curve": [{"fid": None}], "unavailable": {"fid": "why"}}) == "why"
    assert all_na_reason(get_task("sampling"), {"curve": [{"fid": 2.0}]}) is None


def test_problem_lines_stay_one_line():
    assert "\n" not in str(Problem("--set a.b=x", "takes\nan integer", "e.g. 1"))


# ---------------------------------------------------------------------------------------------- alpha channels


def _half_transparent(root: Path) -> Path:
    """val/a: one RGBA image, opaque red on top, fully transparent (black stored under it) below; one RGB image."""
    d = root / "val" / "a"
    d.mkdir(parents=True)
    a = np.zeros((RES, RES, 4), np.uint8)
    a[: RES // 2, :, 0] = 255
    a[: RES // 2, :, 3] = 255
    Image.fromarray(a, "RGBA").save(d / "logo.png")
    Image.fromarray(np.full((RES, RES, 3), 90, np.uint8), "RGB").save(d / "photo.png")
    return root


def test_alpha_without_convert_mode_offers_compositing(tmp_path, run_cli):
    root = _half_transparent(tmp_path / "d")
    rc, out = run_cli(["--data-root", str(root), "--encoders", "pixels", "--tasks", "reconstruction"])
    refused(rc, out, tmp_path, "logo.png", "'RGBA'", "alpha channel", "--convert-mode composite-white",
            "drops the alpha channel")


@pytest.mark.parametrize("mode,bottom", [(True, -1.0), ("composite-white", 1.0), ("composite-black", -1.0)])
def test_convert_mode_says_what_it_does_with_alpha(tmp_path, mode, bottom):
    from svgbench.data.folders import ImageFolderDataset

    root = _half_transparent(tmp_path / "d")
    data = DataConfig(name="imagefolder", root=str(root), resolution=RES, convert_mode=mode)
    problems = preflight(data=data)
    assert errors(problems) == []
    said = [str(p) for p in problems if "alpha" in str(p)]
    # plain conversion is said (one warning naming the file and the composite option); a composite is as asked
    assert len(said) == (1 if mode is True else 0), said
    if mode is True:
        assert "logo.png" in said[0] and "drops it" in said[0] and "composite-white" in said[0]
    img = ImageFolderDataset(root / "val", RES, convert_mode=mode)[0]["image"]  # logo.png sorts first
    assert torch.allclose(img[:, -4:, :], torch.full_like(img[:, -4:, :], bottom))  # the transparent half
    assert torch.allclose(img[0, :4, :], torch.ones_like(img[0, :4, :]))  # the opaque red half is unchanged


def test_convert_mode_on_the_command_line_and_in_a_config_file(tmp_path):
    from svgbench.cli import build_parser, load_run_config

    parse = build_parser().parse_args
    assert parse(["run", "--convert-mode"]).convert_mode is True
    assert parse(["run", "--convert-mode", "composite-white"]).convert_mode == "composite-white"
    assert parse(["run"]).convert_mode is False
    cfg = tmp_path / "run.yaml"
    cfg.write_text("convert-mode: composite-black\n")
    assert load_run_config(cfg) == {"convert_mode": "composite-black"}
    cfg.write_text("convert-mode: true\n")
    assert load_run_config(cfg) == {"convert_mode": True}
    cfg.write_text("convert-mode: 1\n")
    with pytest.raises(Exception, match="convert-mode: 1 is not true or false"):
        load_run_config(cfg)


@pytest.mark.parametrize("source", ["flag", "config"])
def test_an_unknown_way_to_convert_is_one_line(tmp_path, run_cli, source):
    root = _half_transparent(tmp_path / "d")
    if source == "flag":
        argv = ["--data-root", str(root), "--convert-mode", "grey"]
    else:
        (tmp_path / "run.yaml").write_text(f"data-root: {root}\nconvert-mode: grey\n")
        argv = ["--config", str(tmp_path / "run.yaml")]
    rc, out = run_cli([*argv, "--encoders", "pixels", "--tasks", "reconstruction"])
    refused(rc, out, tmp_path, "--convert-mode grey", "composite-white, composite-black")


@pytest.mark.parametrize("plugin,words", [("nope/my_dataset.py", "no such file"),
                                          ("no_such_plugin_module", "no module 'no_such_plugin_module'")])
def test_a_missing_plugin_is_an_input_error(tmp_path, svgbench_cli, plugin, words):
    done = svgbench_cli("--plugin", plugin, "run", "--results", tmp_path / "results", cwd=tmp_path)
    refused(done.returncode, done.stdout + done.stderr, tmp_path, f"--plugin {plugin}", words)


def test_api_configs_refuse_what_the_cli_refuses():
    """RunConfig and DataConfig built in Python refuse a batch size, seed or image count the CLI refuses, naming the
    flag (a batch size of 0 never finishes a feature-store shard; 0 images is not "all")."""
    from svgbench.data import DataConfig, DataError
    from svgbench.errors import UserError
    from svgbench.runner import RunConfig

    for kw, flag in (({"batch_size": 0}, "--batch-size"), ({"batch_size": -3}, "--batch-size"),
                     ({"seed": -1}, "--seed"), ({"batch_size": 2.5}, "--batch-size")):
        with pytest.raises(UserError, match=flag) as e:
            RunConfig(**kw)
        assert e.value.input == flag
    for size in (0, -5):
        with pytest.raises(DataError, match="--num-images"):
            DataConfig(size=size)
    assert DataConfig(size=None).size is None and RunConfig(batch_size=1).batch_size == 1
