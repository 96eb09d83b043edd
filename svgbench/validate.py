"""Checks of everything a run is given, before any cell runs, and the guard that keeps non-finite
numbers out of records.

`preflight(...)` looks at options, the data folder (headers of every file), weights files (format,
finite values, and that they build the encoder) and the results and cache folders (a probe file is
created and removed), in seconds, and returns every problem it finds as a `Problem`; the caller
prints them all, one line each, and stops if any is an error. `finite_or_na(metrics)` replaces
NaN/inf in a task's metrics by None with the reason under metrics["unavailable"].

It sits beside the runner (cli -> runner/validate -> tasks -> encoders/data/checkpoints).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .checkpoints import nearest_existing
from .errors import UserError

# Scans that fully decode images (finding truncated files) when the data has at most this many.
DECODE_LIMIT = 1000
# Bad files named one by one before the rest are summarised as a count.
MAX_LISTED = 5
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inputs of a run.

    input: what the user gave, by its CLI spelling (e.g. "--weights tiny-svg=x.pt", a file path);
    message: what is wrong; fix: what to do ("" when the message already says it);
    level: "error" stops the run, "warning" is printed and the run goes on.
    """

    input: str
    message: str
    fix: str = ""
    level: str = "error"

    def __str__(self) -> str:
        head = "svgbench: warning: " if self.level == "warning" else "svgbench: "
        text = f"{head}{self.input}: {self.message}" + (f"; {self.fix}" if self.fix else "")
        return " ".join(text.split())  # one line, whatever the parts held

    @classmethod
    def from_error(cls, input: str, exc: BaseException, fix: str = "") -> "Problem":
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return cls(input, text[len(input):].lstrip(" :") if text.startswith(input + ":") else text, fix)


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]


# ----------------------------------------------------------------------------------------------
# The checks


def preflight(*, data=None, encoders: Sequence[str] = (), weights: Mapping[str, str] | None = None,
              results_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              resolution: int | None = None, tasks: Sequence[str] | None = None,
              task_settings: Mapping[str, Mapping[str, object]] | None = None,
              build_encoders: bool = True, decode_limit: int = DECODE_LIMIT) -> list[Problem]:
    """Every problem found with the inputs of a run, errors and warnings, in the order checked.

    data: a DataConfig; encoders: registered names; weights: encoder -> path (or hub id, or
    "random"); resolution: defaults to data.resolution; tasks / task_settings: names and
    {task: {field: value}} to check against the task registry. build_encoders=True also builds
    each encoder given weights (finds wrong shapes and architectures; costs one load). Folder
    images are decoded fully when there are at most `decode_limit`, else only their headers are read.
    Touches nothing but a probe file created and removed in the results and cache folders.
    """
    problems: list[Problem] = []
    if resolution is None and data is not None:
        resolution = data.resolution
    problems += check_options(encoders, resolution, tasks, task_settings)
    if weights:
        problems += check_weights(weights, encoders, build=build_encoders)
    if data is not None:
        problems += check_data(data, decode_limit=decode_limit)
    if results_dir is not None:
        problems += check_writable(results_dir, "--results")
    if cache_dir is not None:
        problems += check_writable(cache_dir, "feature cache (SVGBENCH_CACHE)")
    return problems


def check_options(encoders: Sequence[str], resolution, tasks: Sequence[str] | None = None,
                  task_settings: Mapping[str, Mapping[str, object]] | None = None) -> list[Problem]:
    """Unknown encoders, tasks and task fields; a resolution that is not a positive integer or that
    an encoder cannot take."""
    from .encoders import EncoderInputError, encoder_spec, list_encoders
    from .encoders.registry import is_known_encoder

    out: list[Problem] = []
    res_ok = isinstance(resolution, int) and not isinstance(resolution, bool) and resolution > 0
    if resolution is not None and not res_ok:
        out.append(Problem(f"--resolution {resolution}", "must be a positive integer number of pixels",
                           "e.g. --resolution 64 (tiny) or 256 (imagenet256)"))
    for name in encoders:
        if not is_known_encoder(name):  # a registered name, or diffusers:... / timm:...
            out.append(Problem(f"--encoders {name}", "unknown encoder",
                               f"choose from {', '.join(list_encoders())} (svgbench list)"))
            continue
        if res_ok:
            try:
                encoder_spec(name).check_resolution(resolution, resolution)
            except EncoderInputError as e:
                out.append(Problem(f"--resolution {resolution}", str(e), "pick a resolution this encoder takes"))
            except UserError as e:  # a spec that needs weights to be described
                out.append(Problem.from_error(f"--encoders {name}", e))
    if tasks is not None or task_settings:
        from .tasks import get_task, list_tasks

        known = list_tasks()
        for t in list(tasks or ()) + [t for t in (task_settings or {}) if t not in (tasks or ())]:
            if t not in known:
                out.append(Problem(f"--tasks {t}", "unknown task", f"choose from {', '.join(known)}"))
        for t, fields in (task_settings or {}).items():
            if t not in known:
                continue
            import dataclasses

            names = [f.name for f in dataclasses.fields(get_task(t).config_class())]
            for f in fields:
                if f not in names:
                    out.append(Problem(f"--set {t}.{f}", f"{t} has no config field {f!r}",
                                       f"fields: {', '.join(names)}"))
    return out


def _looks_like_path(text: str) -> bool:
    return (text.lower().endswith(_WEIGHT_SUFFIXES) or text.startswith(("/", ".", "~"))
            or os.sep in text and not _HUB_ID.match(text))


def check_weights(weights: Mapping[str, str], encoders: Sequence[str] = (), build: bool = True) -> list[Problem]:
    """Each encoder's weights: the path exists, every weights file in it loads through the one
    loader (format, pickles refused, finite values), and (build=True) the encoder builds from it."""
    from .checkpoints import CheckpointError, load_state_dict

    out: list[Problem] = []
    for enc, spec in weights.items():
        flag = f"--weights {enc}={spec}"
        if encoders and enc not in encoders:
            out.append(Problem(flag, f"{enc!r} is not an encoder of this run ({', '.join(encoders)})",
                               "fix the name before '=' or add the encoder to --encoders"))
            continue
        if spec == "random":
            continue
        path = Path(spec).expanduser()
        if not path.exists():
            if _looks_like_path(spec):
                out.append(Problem(flag, f"{path} does not exist", "check the path"))
                continue
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
            if not files:
                out.append(Problem(flag, f"folder {path} holds no weights file ({', '.join(_WEIGHT_SUFFIXES)})",
                                   "point --weights at the weights file or its model folder"))
                continue
        else:
            files = [path]
        failed = False
        for f in files if path.exists() else ():
            try:
                load_state_dict(f)  # format, pickles, every tensor finite
            except CheckpointError as e:
                out.append(Problem.from_error(flag, e))
                failed = True
        if build and not failed and enc in _known_encoders():
            out += _try_build(enc, spec, flag)
    return out


def _known_encoders() -> list[str]:
    from .encoders import list_encoders

    return list_encoders()


def _try_build(enc: str, spec: str, flag: str) -> list[Problem]:
    import torch

    from .encoders import create_encoder

    try:
        with torch.random.fork_rng(devices=[]):  # building must not move the run's random stream
            create_encoder(enc, weights=spec)
    except (UserError, ValueError, KeyError, OSError) as e:  # the factory's refusals; bugs propagate
        return [Problem.from_error(flag, e, "give weights saved for this encoder's architecture")]
    return []


def check_data(data, decode_limit: int = DECODE_LIMIT) -> list[Problem]:
    """The dataset of `data` (a DataConfig) can be built, and its image files read: unreadable
    files and refused modes are errors (the first few named, the rest counted); images that will be
    upscaled are a warning naming how many and the smallest."""
    from .data import DataError, build_dataset

    flag = f"--data-root {data.root}" if data.root else f"--data {data.name}"
    try:
        ds = build_dataset(data)
    except DataError as e:
        return [Problem.from_error(e.input or flag, e)]
    except ValueError as e:  # the procedural set's own parameter checks
        return [Problem.from_error(f"--data {data.name}", e)]
    if not hasattr(ds, "scan"):
        return []
    scan = ds.scan(decode=len(ds) <= decode_limit)
    out: list[Problem] = []
    for path, reason in scan.unreadable[:MAX_LISTED]:
        if reason.startswith(path + ":"):  # the loader's own line, which names the file and the fix
            out.append(Problem(path, reason[len(path) + 1:].strip()))
        else:
            out.append(Problem(path, f"cannot read image ({reason})", "replace the file or delete it from the folder"))
    if len(scan.unreadable) > MAX_LISTED:
        out.append(Problem(flag, f"{len(scan.unreadable) - MAX_LISTED} more unreadable image files",
                           "replace or delete them"))
    convertible = [(p, m) for p, m in scan.not_rgb if m not in ("I", "F")]
    for path, mode in scan.not_rgb[:MAX_LISTED]:
        if mode in ("I", "F"):
            out.append(Problem(path, f"image mode {mode!r} (32-bit pixels) has no known white level",
                               "save it as 8- or 16-bit RGB or grayscale"))
        else:
            out.append(Problem(path, f"image mode is {mode!r}, not 'RGB'",
                               "pass --convert-mode to convert non-RGB images to RGB"))
    if len(scan.not_rgb) > MAX_LISTED:
        modes = sorted({m for _, m in scan.not_rgb})
        out.append(Problem(flag, f"{len(scan.not_rgb) - MAX_LISTED} more non-RGB images (modes {', '.join(modes)})",
                           "pass --convert-mode" if convertible else "convert them to RGB"))
    note = scan.upscale_warning()
    if note:
        out.append(Problem(flag, note, "check that these are the full-size images, or lower --resolution",
                           level="warning"))
    return out


def check_writable(path: str | os.PathLike, flag: str) -> list[Problem]:
    """`path` is, or can become, a folder svgbench can write: a probe file is created and removed in
    it, or in its nearest existing parent when it does not exist yet (nothing else is created)."""
    path = Path(path).expanduser()
    label = f"{flag} {path}"
    probe_in = nearest_existing(path)
    if probe_in.exists() and not probe_in.is_dir():
        where = "is a regular file" if probe_in == path else f"is under {probe_in}, which is a regular file"
        return [Problem(label, f"{where}, not a folder", "choose a folder path")]
    for d in (probe_in, path / "records") if probe_in == path and (path / "records").is_dir() else (probe_in,):
        try:
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".svgbench-write-probe-")
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            return [Problem(label, f"cannot write in {d} ({e.strerror})", "choose a folder you can write to")]
    return []


# ----------------------------------------------------------------------------------------------
# Non-finite metrics


def finite_or_na(metrics: dict) -> dict:
    """A copy of `metrics` in which every NaN/inf float (in nested dicts and lists too) is None, its
    reason under metrics["unavailable"][key] (key: the dotted path, e.g. "psnr" or "curve[2]").

    Tasks get finite inputs (weights and images are checked before the run), so a non-finite metric
    is a degenerate computation (e.g. PSNR of identical images); a number that is not one must not
    reach a record, where JSON would hold Infinity/NaN. Reasons already given are kept.
    """
    unavailable = dict(metrics.get("unavailable") or {})

    def walk(value, key: str):
        if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
            return value
        if isinstance(value, dict):
            return {k: walk(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if hasattr(value, "tolist") and not isinstance(value, float):  # numpy/torch scalars and arrays
            return walk(value.tolist(), key)
        if isinstance(value, float) and not math.isfinite(value):
            kind = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            unavailable.setdefault(key, f"non-finite value ({kind}) from finite inputs")
            return None
        return value

    out = {k: (v if k == "unavailable" else walk(v, str(k))) for k, v in metrics.items()}
    if unavailable:
        out["unavailable"] = unavailable
    return out
