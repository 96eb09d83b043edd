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
from types import UnionType as _UnionType
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
    {task: {field: value}} to check against the task registry (names, and each value against its
    field's type). build_encoders=True also builds each encoder given weights (finds wrong shapes and
    architectures; costs one load), and a diffusion checkpoint named in the generation/sampling
    settings. Folder images are decoded fully when there are at most `decode_limit`, else only their
    headers are read; the training splits the run's tasks read are checked as the evaluation split is.
    Touches nothing but a probe file created and removed in the results and cache folders.
    """
    problems: list[Problem] = []
    if resolution is None and data is not None:
        resolution = data.resolution
    options = check_options(encoders, resolution, tasks, task_settings)
    problems += options
    if weights:
        problems += check_weights(weights, encoders, build=build_encoders)
    if build_encoders and task_settings:
        problems += check_diffusion(task_settings, encoders, resolution)
    if data is not None:
        built, evaluation = _check_data(data, decode_limit)
        problems += evaluation
        # the tasks' configs are built from the settings check_options checked; the training splits are read
        # when the evaluation split could be built (their bad files are listed with its own, all at once)
        if tasks and not errors(options) and built is not None:
            problems += check_training_splits(data, tasks, task_settings or {}, encoders, decode_limit=decode_limit)
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
                spec = encoder_spec(name)
                spec.check_resolution(resolution, resolution)
            except EncoderInputError as e:
                out.append(Problem(f"--resolution {resolution}", str(e), "pick a resolution this encoder takes"))
            except UserError as e:  # a spec that needs weights to be described
                out.append(Problem.from_error(f"--encoders {name}", e))
            else:
                out += _off_training_resolution(spec, resolution)
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

            config_class = get_task(t).config_class()
            names = [f.name for f in dataclasses.fields(config_class)]
            for f, value in fields.items():
                if f not in names:
                    out.append(Problem(f"--set {t}.{f}", f"{t} has no config field {f!r}",
                                       f"fields: {', '.join(names)}"))
                else:
                    out += check_setting(t, config_class, f, value)
    return out


_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _type_name(hint) -> str:
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, _UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURALS.get(args[0], _type_name(args[0]))}"
        return f"a list [{', '.join(_type_name(a) for a in args)}]"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _fits(value, hint) -> bool:
    """Whether `value` (as --set reads it: JSON, lists as tuples, else text) is of type `hint`."""
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, _UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a number too (JSON writes 1.0 as 1)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return isinstance(value, hint) if isinstance(hint, type) else True  # a type svgbench cannot check: the task's


def check_setting(task: str, config_class: type, field: str, value) -> list[Problem]:
    """A value given to a task's config field (--set TASK.FIELD=VALUE, or a config file's `set:`) that is not of
    the field's declared type: one error naming the flag, the type and an example, before any work."""
    import dataclasses
    import json
    import typing

    hint = typing.get_type_hints(config_class).get(field)
    if hint is None or _fits(value, hint):
        return []
    default = next((f.default for f in dataclasses.fields(config_class) if f.name == field), None)
    example = ""
    if default is not dataclasses.MISSING and _fits(default, hint) and default is not None:
        example = f", e.g. --set {task}.{field}={_json(default)}"
    shown = _json(value)
    return [Problem(f"--set {task}.{field}={shown}", f"{task}.{field} takes {_type_name(hint)}, got {shown}",
                    f"give a value of that type (JSON){example}")]


def _json(value) -> str:
    import json

    text = json.dumps(list(value) if isinstance(value, tuple) else value, default=str, separators=(",", ":"))
    return text if not isinstance(value, str) or " " in value else value  # plain text reads as --set takes it


def _off_training_resolution(spec, resolution: int) -> list[Problem]:
    """A warning when `spec`'s weights were trained at another resolution than the run's: its numbers then
    measure the encoder off the images it learned from (an encoder whose position embeddings fix its size is
    refused by check_resolution instead)."""
    trained = trained_resolution(spec)
    if trained is None or trained == resolution or spec.fixed_resolution:
        return []
    return [Problem(f"--encoders {spec.name}", f"its weights were trained at {trained}px, this run feeds it "
                    f"{resolution}px images", f"--resolution {trained} measures it as trained",
                    level="warning")]


# Families whose spec.resolution, as `encoder_spec(name)` describes it, is the resolution their weights were
# trained at (their presets name it: the embedded tiny models, DINO, SVG, SD-VAE). The generic hub families
# (timm, diffusers) give a placeholder there; a spec may also say it under extra["trained_resolution"].
_TRAINED_AT_SPEC_RESOLUTION = ("dino", "svg", "sd-vae")


def trained_resolution(spec) -> int | None:
    """The resolution `spec`'s weights were trained at, where the spec knows it; None otherwise (random or no
    weights, a generic hub family)."""
    known = (spec.extra or {}).get("trained_resolution")
    if known:
        return int(known)
    if str(spec.weights).startswith(("none", "random")):
        return None
    return spec.resolution if spec.family in _TRAINED_AT_SPEC_RESOLUTION else None


# Command-line numbers: flag -> (least value, what it counts). The least value of a count is 1: a run of no
# images, or batches of none, has nothing to measure (and a batch size of 0 never finishes a shard).
NUMBERS = {"--batch-size": (1, "images per encoder batch"), "--num-images": (1, "evaluation images"),
           "--resolution": (1, "pixels"), "--workers": (0, "DataLoader workers"), "--seed": (0, "")}


def check_numbers(values: Mapping[str, object]) -> list[Problem]:
    """Numbers given on the command line (or in a config file), by their flag: {"--batch-size": 0, ...}; None is
    "not given". Checked before anything is built from them, so an error names the flag the user typed."""
    out = []
    for flag, value in values.items():
        if value is None:
            continue
        least, what = NUMBERS.get(flag, (1, ""))
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            rule = "a positive integer" if least == 1 else f"an integer >= {least}"
            out.append(Problem(f"{flag} {value}", f"must be {rule}" + (f" ({what})" if what else ""),
                               f"e.g. {flag} {_NUMBER_EXAMPLES.get(flag, least)}"))
    return out


_NUMBER_EXAMPLES = {"--batch-size": 32, "--num-images": 512, "--resolution": 64, "--workers": 4, "--seed": 0}


def check_diffusion(task_settings: Mapping[str, Mapping[str, object]], encoders: Sequence[str] = (),
                    resolution: int | None = None) -> list[Problem]:
    """The diffusion checkpoint the generation/sampling settings name (--diffusion ENCODER=PATH[,stats=..][,kind=..]):
    its files exist and it loads as `run_generation` will load it (format, pickles refused, finite values, a known
    architecture, its statistics, its declared kind, the latent shape of its encoder at the run's resolution)."""
    import torch

    from .checkpoints import CheckpointError

    seen, out = set(), []
    for task in ("generation", "sampling"):
        st = task_settings.get(task) or {}
        path = st.get("diffusion")
        if not path:
            continue
        enc, stats, kind = st.get("diffusion_encoder"), st.get("diffusion_stats"), st.get("diffusion_kind")
        key = (path, stats, kind, enc)
        if key in seen:
            continue
        seen.add(key)
        flag = f"--diffusion {enc or '*'}={path}" + (f",stats={stats}" if stats else "") + (f",kind={kind}" if kind else "")
        missing = [p for p in (path, stats) if p and not Path(str(p)).expanduser().is_file()]
        if missing:
            out.append(Problem(flag, f"no such file {missing[0]}", "check the path"))
            continue
        shape = None
        if enc and resolution and enc in encoders:
            try:
                from .encoders import encoder_spec

                shape = tuple(encoder_spec(enc).latent_shape(resolution))
            except Exception:  # an encoder that cannot be described: check_options names it
                shape = None
        try:
            from .diffusion.official import load_diffusion_checkpoint

            with torch.random.fork_rng(devices=[]):  # building must not move the run's random stream
                load_diffusion_checkpoint(path, stats, latent_shape=shape, kind=kind)
        except (CheckpointError, UserError, ValueError, KeyError, OSError) as e:
            fix = "" if ";" in str(e) else ("give a DiT/SiT/SVG-XL or svgbench diffusion checkpoint (with stats= "
                                            "where it has no statistics of its own)")
            out.append(Problem.from_error(flag, e, fix))
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
    return _check_data(data, decode_limit)[1]


def _check_data(data, decode_limit: int):
    """(the dataset of `data`, or None when it cannot be built; the problems of building it and reading its files)."""
    ds, problems = _build_checked(data)
    return ds, problems if ds is None else scan_problems(ds, _data_flag(data), decode_limit)


def _data_flag(data) -> str:
    """The flag that names `data` on the command line, for problems about it."""
    return f"--data-root {data.root}" if data.root else f"--data {data.name}"


def _build_checked(data):
    """(the dataset of `data`, []) or (None, [the one problem that kept it from being built])."""
    from .data import DataError, build_dataset

    flag = _data_flag(data)
    try:
        return build_dataset(data), []
    except DataError as e:
        return None, [Problem.from_error(e.input or flag, e)]
    except ValueError as e:  # the procedural set's own parameter checks
        return None, [Problem.from_error(f"--data {data.name}", e)]


def scan_problems(ds, flag: str, decode_limit: int = DECODE_LIMIT, split_note: str = "") -> list[Problem]:
    """The problems `ds.scan()` finds in a dataset's image files (none for datasets without files).
    split_note: said after counts ("in the training split 'train'"), so a line tells which split it is from."""
    if not hasattr(ds, "scan"):
        return []
    scan = ds.scan(decode=len(ds) <= decode_limit)
    note = f" {split_note}" if split_note else ""
    out: list[Problem] = []
    for path, reason in scan.unreadable[:MAX_LISTED]:
        if reason.startswith(path + ":"):  # the loader's own line, which names the file and the fix
            out.append(Problem(path, reason[len(path) + 1:].strip()))
        else:
            out.append(Problem(path, f"cannot read image ({reason})", "replace the file or delete it from the folder"))
    if len(scan.unreadable) > MAX_LISTED:
        out.append(Problem(flag, f"{len(scan.unreadable) - MAX_LISTED} more unreadable image files{note}",
                           "replace or delete them"))
    convertible = [(p, m) for p, m in scan.not_rgb if m not in ("I", "F")]
    for path, mode in scan.not_rgb[:MAX_LISTED]:
        if mode in ("I", "F"):
            out.append(Problem(path, f"image mode {mode!r} (32-bit pixels) has no known white level",
                               "save it as 8- or 16-bit RGB or grayscale"))
        elif mode in ("RGBA", "LA", "PA"):
            out.append(Problem(path, f"image mode is {mode!r}, not 'RGB', with an alpha channel",
                               "pass --convert-mode composite-white (transparent areas on white; or composite-black), "
                               "or --convert-mode alone, which drops the alpha channel"))
        else:
            out.append(Problem(path, f"image mode is {mode!r}, not 'RGB'",
                               "pass --convert-mode to convert non-RGB images to RGB"))
    if len(scan.not_rgb) > MAX_LISTED:
        modes = sorted({m for _, m in scan.not_rgb})
        out.append(Problem(flag, f"{len(scan.not_rgb) - MAX_LISTED} more non-RGB images{note} "
                           f"(modes {', '.join(modes)})",
                           "pass --convert-mode" if convertible else "convert them to RGB"))
    alpha = getattr(scan, "alpha", [])
    if alpha and getattr(ds, "convert_mode", False) is True:  # plain conversion: the alpha channel is dropped
        out.append(Problem(flag, f"{_count(len(alpha), 'image has', 'images have')}{note} an alpha channel "
                           f"(first: {alpha[0]}); "
                           f"--convert-mode drops it, so transparent areas show whatever colour is stored under "
                           f"them (often black)", "--convert-mode composite-white (or composite-black) composites "
                           "them on that background instead", level="warning"))
    upscale = scan.upscale_warning()
    if upscale:
        out.append(Problem(flag, upscale + note, "check that these are the full-size images, or lower --resolution",
                           level="warning"))
    return out


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def check_training_splits(data, tasks: Sequence[str], task_settings: Mapping[str, Mapping[str, object]],
                          encoders: Sequence[str] = (), decode_limit: int = DECODE_LIMIT) -> list[Problem]:
    """The training split each of `tasks` reads besides the evaluation split (the probes', the segmentation
    head's, the diffusion model's when one is trained here) exists in the data and its images can be read:
    one line per missing split, naming the tasks, the folder to create and the setting that picks another
    split; its unreadable and non-RGB images as check_data reports the evaluation split's."""
    from .data import DataError, build_dataset

    flag = _data_flag(data)
    needed: dict[str, list[tuple[str, object]]] = {}  # split -> [(task, its config)]
    for t in tasks:
        got = _training_split(t, task_settings.get(t, {}), data, encoders)
        if got is not None:
            needed.setdefault(got[0], []).append((t, got[1]))
    out: list[Problem] = []
    for split, users in needed.items():
        names = ", ".join(t for t, _ in users)
        same = [t for t, _ in users if split == data.split]
        if same:
            out.append(Problem(f"--split {data.split}", f"{', '.join(same)} would train and be evaluated on the "
                               f"same split {split!r}", f"evaluate on another split, or {_pick_other(users)}"))
            continue
        size = max((getattr(c, "train_size", 0) or 0 for _, c in users), default=0) or None
        try:
            ds = build_dataset(data.replace(split=split, size=size))
        except DataError as e:
            out.append(Problem(flag, f"{names} {'trains' if len(users) == 1 else 'train'} on split {split!r}, "
                               f"which this data lacks ({_first_clause(e)})",
                               f"create it ({_split_layout(data, split)}), or {_pick_other(users)}"))
            continue
        except ValueError:  # a procedural set's parameters: its evaluation split reports them
            continue
        out += scan_problems(ds, flag, decode_limit, f"in the training split {split!r} ({names})")
    return out


def _training_split(task: str, settings: Mapping[str, object], data, encoders: Sequence[str]):
    """(split, config) of the training split `task` reads from `data`, or None when it reads none (or the data
    draws any split it is asked for)."""
    from .data import DataError

    try:
        spec = data.spec() if hasattr(data, "spec") else None
    except DataError:
        spec = None
    if spec is not None and not getattr(spec, "splits", ("x",)):  # procedural: every split name exists
        return None
    from .tasks import get_task

    try:
        cfg = get_task(task).make_config(dict(settings))
    except (TypeError, ValueError):  # reported by check_options
        return None
    if hasattr(cfg, "train_split"):
        split = cfg.train_split or getattr(spec, "train_split", None)
        if split is None:  # the dataset has no training split: the task's cell is n/a with that reason
            return None
        if "masks" in get_task(task).needs and spec is not None and not getattr(spec, "masks", True):
            return None  # n/a on this data: its split is never read
        return split, cfg
    trains = getattr(cfg, "train", False) or getattr(cfg, "retrain", False)
    if not trains or getattr(spec, "shipped_models", False):
        return None
    covered = getattr(cfg, "diffusion_encoder", None)
    if getattr(cfg, "diffusion", None) and (covered is None or all(e == covered for e in encoders)):
        return None  # every encoder's model is the given checkpoint: nothing is trained here
    split = getattr(spec, "train_split", "train") if spec is not None else "train"
    return (split, cfg) if split else None  # no training split: the task's cell is n/a with that reason


def _pick_other(users) -> str:
    with_field = [t for t, c in users if hasattr(c, "train_split")]
    training = [t for t, c in users if not hasattr(c, "train_split")]
    ways = ["pick another with " + " and ".join(f"--set {t}.train_split=NAME" for t in with_field)] if with_field else []
    if training:
        ways.append(f"for {' and '.join(training)}, give a trained model with --diffusion ENCODER=CHECKPOINT "
                    f"instead of training one (--train-diffusion)")
    return "; ".join(ways)


def _split_layout(data, split: str) -> str:
    if data.name == "imagefolder":
        return f"{Path(data.root) / split}/<class>/<images>"
    if data.name == "segfolder":
        return f"{Path(data.root) / 'images' / split} and {Path(data.root) / 'annotations' / split}"
    return f"a {split!r} split beside {data.split!r} in {data.root}"


def _first_clause(e: BaseException) -> str:
    """The what-is-wrong part of a loader's message, without its advice (which is about the evaluation split)."""
    return str(e).split(";")[0].strip()


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
