"""The bad-input corpus: broken images, folders, weights, options and output folders, as a careless
user would give them. Each case must give one line that names the input and says what to do, before
any work; never a traceback, never a wrong number.

Part 1 checks each case where it is detected (svgbench.validate.preflight, the dataset loaders,
the checkpoint loader); part 2 runs the same cases through `python -m svgbench.cli run`.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import subprocess
import time
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svgbench.checkpoints import CheckpointError, load_state_dict, save_safetensors
from svgbench.data import DataConfig, DataError
from svgbench.data.folders import ImageFolderDataset
from svgbench.errors import UserError, format_user_error
from svgbench.validate import Problem, errors, finite_or_na, preflight

EMBEDDED = Path(__file__).resolve().parents[1] / "svgbench" / "weights"
RES = 64


def _rgb(w=RES, h=RES, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_folder(root: Path, n_per_class: int = 4) -> Path:
    """root/val/{a,b}/NN.png, 64x64 RGB: a valid imagefolder for the default split."""
    for c, name in enumerate("ab"):
        d = root / "val" / name
        d.mkdir(parents=True)
        for i in range(n_per_class):
            _rgb(seed=10 * c + i).save(d / f"{i:02d}.png")
    return root


def _truncated(p: Path):
    data = _png_bytes(_rgb())
    p.write_bytes(data[: len(data) // 2])


def _cmyk(p: Path):
    _rgb().convert("CMYK").save(p.with_suffix(".jpg"))


def _gray16(p: Path):
    Image.fromarray((np.arange(RES * RES).reshape(RES, RES) * 16).astype(np.uint16)).save(p)


# name -> (writer of the bad file at root/val/a/bad.png, words the message must hold, fix it must name)
IMAGE_CASES = {
    "truncated-png": (_truncated, "bad.png", "replace the file"),
    "text-as-png": (lambda p: p.write_text("this is not an image\n"), "bad.png", "replace the file"),
    "cmyk-jpeg": (_cmyk, "bad.jpg", "--convert-mode"),
    "16-bit-png": (_gray16, "bad.png", "--convert-mode"),
    "grayscale-png": (lambda p: _rgb().convert("L").save(p), "bad.png", "--convert-mode"),
    "rgba-png": (lambda p: _rgb().convert("RGBA").save(p), "bad.png", "--convert-mode"),
}


def _one_line_naming(text: str, *needles: str) -> None:
    assert "\n" not in text.strip(), text
    assert "Traceback" not in text
    for n in needles:
        assert n in text, (n, text)


def _only_error(problems: list[Problem]) -> str:
    errs = errors(problems)
    assert len(errs) == 1, [str(p) for p in problems]
    return str(errs[0])


# ============================================================================================
# Part 1: where each case is detected


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image_found_by_preflight_and_loader(tmp_path, case):
    write, named, fix = IMAGE_CASES[case]
    root = make_folder(tmp_path / "d")
    write(root / "val" / "a" / "bad.png")
    cfg = DataConfig(name="imagefolder", root=str(root), resolution=RES)
    line = _only_error(preflight(data=cfg))
    _one_line_naming(line, named, fix)
    assert line.startswith("svgbench: ")
    # the loader says the same when the file is read, without PIL's chained traceback
    ds = ImageFolderDataset(root / "val", RES)
    bad = next(i for i, (p, _) in enumerate(ds.samples) if Path(p).stem == "bad")
    with pytest.raises(DataError) as e:
        ds[bad]
    _one_line_naming(format_user_error(e.value), named, fix)
    assert isinstance(e.value, UserError) and e.value.__cause__ is None
    assert e.value.__context__ is None or e.value.__suppress_context__  # no PIL traceback chained on


@pytest.mark.parametrize("case", ["cmyk-jpeg", "16-bit-png", "grayscale-png", "rgba-png"])
def test_convertible_modes_pass_with_convert_mode(tmp_path, case):
    root = make_folder(tmp_path / "d")
    IMAGE_CASES[case][0](root / "val" / "a" / "bad.png")
    cfg = DataConfig(name="imagefolder", root=str(root), resolution=RES, convert_mode=True)
    problems = preflight(data=cfg)
    if case == "rgba-png":  # converted, but said: PIL's conversion drops the alpha channel
        assert errors(problems) == [] and len(problems) == 1
        _one_line_naming(str(problems[0]), "warning", "1 image has an alpha channel", "bad.png", "drops it",
                         "--convert-mode composite-white")
        assert preflight(data=cfg.replace(convert_mode="composite-white")) == []
    else:
        assert problems == []


def test_16_bit_is_scaled_not_clipped(tmp_path):
    # PIL's own convert("RGB") clips every value above 255 to white; the loader scales by 1/257.
    root = tmp_path / "d"
    (root / "k").mkdir(parents=True)
    a = (np.arange(RES * RES).reshape(RES, RES) * 16).astype(np.uint16)
    Image.fromarray(a).save(root / "k" / "g.png")
    img = ImageFolderDataset(root, RES, convert_mode=True)[0]["image"]
    got = ((img[0] + 1) * 127.5).round().numpy()
    np.testing.assert_array_equal(got, np.rint(a / 257.0))
    assert got.max() == 255 and got.min() == 0 and len(np.unique(got)) > 200


def test_tiny_image_is_a_warning_with_count_and_smallest(tmp_path):
    root = make_folder(tmp_path / "d")
    _rgb(1, 1).save(root / "val" / "a" / "tiny.png")
    _rgb(40, 50).save(root / "val" / "b" / "small.png")
    problems = preflight(data=DataConfig(name="imagefolder", root=str(root), resolution=RES))
    assert errors(problems) == [] and len(problems) == 1
    _one_line_naming(str(problems[0]), "warning", "2 of 10 images", "smallest: 1x1", "tiny.png", "upscaled")


@pytest.mark.parametrize("layout,named,fix", [
    ("empty", "d/val", "move each class"),
    ("flat", "d/val", "holds 3 image file(s) directly"),
    ("empty-class", "d/val", "class folder(s) contain no images"),
    ("missing-root", "nowhere", "check --data-root"),
    ("missing-split", "d/val", "--split"),
    ("segfolder-no-annotations", "annotations", "--data-root"),
])
def test_bad_folder_layout(tmp_path, layout, named, fix):
    root = tmp_path / "d"
    name = "imagefolder"
    if layout == "empty":
        (root / "val").mkdir(parents=True)
    elif layout == "flat":
        (root / "val").mkdir(parents=True)
        for i in range(3):
            _rgb(seed=i).save(root / "val" / f"{i}.png")
    elif layout == "empty-class":
        make_folder(root)
        (root / "val" / "c").mkdir()
    elif layout == "missing-root":
        root = tmp_path / "nowhere"
    elif layout == "missing-split":
        (root / "train" / "a").mkdir(parents=True)
        (root / "train" / "a" / "notes.txt").write_text("x")
    else:
        name = "segfolder"
        (root / "images" / "val").mkdir(parents=True)
        _rgb().save(root / "images" / "val" / "x.png")
    line = _only_error(preflight(data=DataConfig(name=name, root=str(root), resolution=RES)))
    _one_line_naming(line, named, fix)


def test_data_option_errors_are_user_errors():
    with pytest.raises(DataError, match="--data-root"):
        DataConfig(name="imagefolder")
    with pytest.raises(DataError, match="shapes, imagefolder, segfolder, parquet, webdataset or zipfolder"):
        DataConfig(name="imagenet")
    try:  # shapes: multiple of 8, refused by the data config itself or by the pre-run check
        line = _only_error(preflight(data=DataConfig(resolution=60)))
    except DataError as e:
        line = format_user_error(e)
    _one_line_naming(line, "60", "multiple of 8")


# ---------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def svg_state():
    return load_state_dict(EMBEDDED / "tiny-svg.safetensors")


class Payload:
    """Unpickling this would create the file named in its argument."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _write_weights(case: str, d: Path, state) -> tuple[Path, str]:
    """The bad weights file of `case` and the words its message must hold."""
    if case == "missing":
        return d / "nope.safetensors", "does not exist"
    if case == "zero-byte":
        (d / "z.safetensors").write_bytes(b"")
        return d / "z.safetensors", "empty (0 bytes)"
    if case == "garbage":
        (d / "g.safetensors").write_bytes(np.random.default_rng(0).bytes(3000))
        return d / "g.safetensors", "not a weights file"
    if case == "pickle-payload":
        with open(d / "p.ckpt", "wb") as f:
            pickle.dump({"state_dict": {"w": [0.0]}, "x": Payload(str(d / "pwned"))}, f, protocol=2)
        return d / "p.ckpt", "will not unpickle"
    if case == "torch-named-safetensors":
        torch.save(dict(state), d / "t.safetensors")
        return d / "t.safetensors", "rename it to .pt"
    if case in ("nan", "inf-pt"):
        bad = dict(state)
        key = sorted(k for k in bad if bad[k].is_floating_point())[3]
        bad[key] = bad[key].clone()
        bad[key].view(-1)[0] = float("nan") if case == "nan" else float("inf")
        if case == "nan":
            save_safetensors(bad, d / "nan.safetensors")
            return d / "nan.safetensors", repr(key)
        torch.save(bad, d / "inf.pt")
        return d / "inf.pt", repr(key)
    if case == "wrong-shape":
        bad = dict(state)
        key = "extra_vit.heads.head.weight" if "extra_vit.heads.head.weight" in bad else sorted(bad)[-1]
        bad[key] = torch.zeros(bad[key].shape[0] + 1, *bad[key].shape[1:])
        save_safetensors(bad, d / "shape.safetensors")
        return d / "shape.safetensors", "wrong shapes"
    if case == "wrong-architecture":
        return EMBEDDED / "tiny-ssl.safetensors", "does not fit"
    raise AssertionError(case)


WEIGHT_CASES = ["missing", "zero-byte", "garbage", "pickle-payload", "torch-named-safetensors", "nan", "inf-pt",
                "wrong-shape", "wrong-architecture"]


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_bad_weights_found_by_preflight(tmp_path, svg_state, case):
    path, words = _write_weights(case, tmp_path, svg_state)
    line = _only_error(preflight(encoders=["tiny-svg"], weights={"tiny-svg": str(path)}))
    _one_line_naming(line, f"--weights tiny-svg={path}", words)
    assert not (tmp_path / "pwned").exists()  # the payload never ran


@pytest.mark.parametrize("case", [c for c in WEIGHT_CASES if c not in ("wrong-shape", "wrong-architecture")])
def test_bad_weights_refused_by_the_loader(tmp_path, svg_state, case):
    path, words = _write_weights(case, tmp_path, svg_state)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(path)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)  # old `except` clauses still work
    _one_line_naming(format_user_error(e.value), str(path), words)


def test_non_finite_checkpoint_refused_when_the_encoder_is_built(tmp_path, svg_state):
    from svgbench.encoders import create_encoder

    path, words = _write_weights("nan", tmp_path, svg_state)
    with pytest.raises(CheckpointError, match=f"{words}.*non-finite value"):
        create_encoder("tiny-svg", weights=str(path))


def test_valid_weights_and_random_pass(svg_state):
    assert preflight(encoders=["tiny-svg"], weights={"tiny-svg": str(EMBEDDED / "tiny-svg.safetensors")}) == []
    assert preflight(encoders=["tiny-svg"], weights={"tiny-svg": "random"}) == []


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs,named,fix", [
    (dict(encoders=["tiny-sgv"]), "--encoders tiny-sgv", "tiny-svg"),
    (dict(tasks=["reconstuction"]), "--tasks reconstuction", "reconstruction"),
    (dict(task_settings={"probe": {"epoch": 3}}), "--set probe.epoch", "epochs"),
    (dict(encoders=["pixels"], resolution=0), "--resolution 0", "positive integer"),
    (dict(encoders=["tiny-svg"], resolution=128), "--resolution 128", "64x64"),
    (dict(encoders=["pixels"], resolution=60), "--resolution 60", "multiples of 8"),
    (dict(encoders=["pixels"], weights={"tiny-svg": "x.safetensors"}), "--weights tiny-svg=x.safetensors",
     "add the encoder to --encoders"),
])
def test_bad_options(kwargs, named, fix):
    _one_line_naming(_only_error(preflight(**kwargs)), named, fix)


# ---------------------------------------------------------------------------- output folders


def test_results_under_a_regular_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    for given in (f, f / "x", f / "x" / "y"):
        _one_line_naming(_only_error(preflight(results_dir=given)), f"--results {given}", f"{f}", "choose a folder")
    _one_line_naming(_only_error(preflight(cache_dir=f / "c")), "SVGBENCH_CACHE", "regular file")
    assert f.read_text() == "x"


def _immutable(path: Path) -> bool:
    """chattr +i `path` (stops root too); False where the filesystem or the user cannot."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def test_unwritable_results_folder(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    if not _immutable(d):
        pytest.skip("chattr +i is not available here")
    try:
        for given in (d, d / "new"):
            _one_line_naming(_only_error(preflight(results_dir=given)), f"--results {given}", "cannot write")
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    assert list(d.iterdir()) == []


def test_writable_folders_pass_and_are_left_as_they_were(tmp_path):
    (tmp_path / "r" / "records").mkdir(parents=True)
    assert preflight(results_dir=tmp_path / "r", cache_dir=tmp_path / "new" / "cache") == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r", "records"]


# ---------------------------------------------------------------------------- never a wrong number


def test_finite_or_na_replaces_non_finite_and_says_why():
    m = {"psnr": float("inf"), "ssim": float("nan"), "fid": 3.5, "n": 8, "ok": True, "name": "x",
         "curve": {"steps": [1, 2], "fid": [np.float32(2.0), -math.inf]}, "t": torch.tensor(float("nan")),
         "unavailable": {"lpips": "needs weights"}}
    out = finite_or_na(m)
    assert out["psnr"] is None and out["ssim"] is None and out["t"] is None and out["curve"]["fid"] == [2.0, None]
    assert out["fid"] == 3.5 and out["n"] == 8 and out["ok"] is True and out["name"] == "x"
    assert out["unavailable"] == {"lpips": "needs weights", "psnr": "non-finite value (inf) from finite inputs",
                                  "ssim": "non-finite value (nan) from finite inputs",
                                  "t": "non-finite value (nan) from finite inputs",
                                  "curve.fid[1]": "non-finite value (-inf) from finite inputs"}
    json.dumps(out, allow_nan=False)  # a record can no longer hold Infinity or NaN
    assert m["psnr"] == math.inf  # the input is not modified
    assert finite_or_na({"a": 1.0}) == {"a": 1.0}


def test_problem_renders_one_line():
    p = Problem("--results x", "cannot write\nhere", "choose another")
    assert str(p) == "svgbench: --results x: cannot write here; choose another"
    assert str(Problem("a", "b", level="warning")) == "svgbench: warning: a: b"


# ============================================================================================
# Part 2: the same corpus through `svgbench run`, as a user meets it

CLI_BASE = ["--encoders", "pixels", "--tasks", "reconstruction", "--num-images", "8"]


def _cli_case(case: str, tmp: Path, svg_state) -> tuple[list[str], str, dict]:
    """(extra CLI arguments, text the output must name, extra environment) of `case`."""
    if case in IMAGE_CASES:
        root = make_folder(tmp / "data")
        IMAGE_CASES[case][0](root / "val" / "a" / "bad.png")
        return ["--data-root", str(root)], IMAGE_CASES[case][1], {}
    if case == "empty-folder":
        (tmp / "data" / "val").mkdir(parents=True)
        return ["--data-root", str(tmp / "data")], str(tmp / "data" / "val"), {}
    if case == "wrong-layout":
        (tmp / "data" / "val").mkdir(parents=True)
        _rgb().save(tmp / "data" / "val" / "x.png")
        return ["--data-root", str(tmp / "data")], str(tmp / "data" / "val"), {}
    if case.startswith("weights-"):
        path, _ = _write_weights(case[len("weights-"):], tmp, svg_state)
        return ["--encoders", "tiny-svg", "--weights", f"tiny-svg={path}"], str(path), {}
    if case == "unknown-encoder":
        return ["--encoders", "tiny-sgv"], "tiny-sgv", {}
    if case == "unknown-task":
        return ["--tasks", "reconstuction"], "reconstuction", {}
    if case == "unknown-field":
        return ["--set", "reconstruction.bogus=1"], "bogus", {}
    if case in ("resolution-0", "resolution-60"):
        return ["--resolution", case.split("-")[1]], "resolution", {}
    if case in ("results-under-file", "results-is-file"):
        (tmp / "f.txt").write_text("x")
        return ["--results", str(tmp / "f.txt" / "x" if case == "results-under-file" else tmp / "f.txt")], \
            str(tmp / "f.txt"), {}
    if case == "results-immutable":
        (tmp / "ro").mkdir()
        if not _immutable(tmp / "ro"):
            pytest.skip("chattr +i is not available here")
        return ["--results", str(tmp / "ro")], str(tmp / "ro"), {}
    if case == "cache-under-file":
        (tmp / "f.txt").write_text("x")
        return [], str(tmp / "f.txt"), {"SVGBENCH_CACHE": str(tmp / "f.txt" / "cache")}
    raise AssertionError(case)


def _tree(path: Path) -> dict:
    if path.is_file():
        return {str(path): path.read_bytes()}
    return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))} if path.exists() else {}


CLI_CASES = (sorted(IMAGE_CASES) + ["empty-folder", "wrong-layout"] + [f"weights-{c}" for c in WEIGHT_CASES]
             + ["unknown-encoder", "unknown-task", "unknown-field", "resolution-0", "resolution-60",
                "results-under-file", "results-is-file", "results-immutable", "cache-under-file"])


def _svgbench_run(argv: list[str], env: dict, monkeypatch, capsys) -> tuple[int, str, str]:
    """`svgbench run ARGV` in this process (as the console command runs it): exit status, stdout, stderr."""
    from svgbench.cli import main

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        rc = main(["run", *argv])
    except SystemExit as e:  # argparse and option errors
        rc = e.code if isinstance(e.code, int) else 2
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_bad_input_before_work(tmp_path, svg_state, case, monkeypatch, capsys):
    args, named, env_extra = _cli_case(case, tmp_path, svg_state)
    results = tmp_path / "results"
    if "--results" not in args:
        args += ["--results", str(results)]
        results.mkdir()
        (results / "keep.md").write_text("a table from an earlier run\n")
    watched = Path(args[args.index("--results") + 1])
    before = _tree(watched)
    env = {"SVGBENCH_CACHE": str(tmp_path / "cache")} | env_extra
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    try:
        rc, stdout, stderr = _svgbench_run([*CLI_BASE, *args], env, monkeypatch, capsys)
    finally:
        if case == "results-immutable":
            subprocess.run(["chattr", "-i", str(tmp_path / "ro")], check=True)
    out = stdout + stderr
    print(f"{case}: exit {rc} in {time.perf_counter() - t0:.2f} s: {stderr.strip()}")
    assert rc == 2, out
    assert "Traceback" not in out, out
    assert named in stderr, out
    assert all(line.startswith("svgbench") for line in stderr.strip().splitlines()), out  # one line a problem
    assert "done in" not in out and "cells computed" not in out, out  # no cell ran
    assert _tree(watched) == before


def test_cli_warns_of_upscaled_images_and_runs(tmp_path):
    root = make_folder(tmp_path / "data")
    _rgb(1, 1).save(root / "val" / "a" / "tiny.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", SVGBENCH_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "svgbench.cli", "run", *CLI_BASE, "--num-images", "9",
                           "--data-root", str(root), "--results", str(tmp_path / "results")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "upscaled" in line]
    assert len(warning) == 1 and "1 of 9 images" in warning[0] and "1x1" in warning[0], proc.stderr
