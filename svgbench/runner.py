"""The encoder x task matrix: one record per cell, resumable, written atomically.

A cell is (task, encoder, dataset, config). Its record is one JSON file under
results/records/<task>/, named by the cell's key, which hashes everything the numbers depend on:
task config, dataset config, encoder name and build arguments, the hash of the encoder's
weights, and the task's declared version (`TaskSpec.version`, bumped whenever a change to the task can
move a number). A rerun skips cells whose record exists; a crash loses at most the cell in flight. A
record of the same cell from another task version is reported as stale and recomputed; `keep_stale`
(`--keep-stale`) reuses it instead, labelled stale (its `stale` field) wherever it is shown. Records carry
svgbench's version and, when it runs from a git checkout, the commit and whether the tree had changes.

A cell's claim (processes sharing a results folder) is held until its record is on disk, so a process
that claims the cell after it finds the record and never computes the cell a second time.

Interrupting a run (Ctrl-C) raises RunInterrupted, which names the cell in flight; records and
feature-cache entries are only ever replaced whole (temporary file + rename), so an interrupt or a
kill at any moment leaves every finished cell reusable and nothing half-written under its name.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import distributed as dist
from .claims import read_claim, release, shard_of, try_claim
from .data import DataConfig, build_dataset
from .errors import UserError, debug_enabled
from .presets import EMBEDDED_ENCODERS
from .records import Record, load_records, read_record, record_path, stale_reason, write_record

__all__ = ["CellFailure", "RunConfig", "RunInterrupted", "RunSummary", "cell_keys", "code_version", "load_records",
           "parse_setting", "read_record", "record_path", "resolve_device", "run_matrix", "write_record"]


@dataclass
class RunConfig:
    encoders: tuple[str, ...] = EMBEDDED_ENCODERS
    tasks: tuple[str, ...] = ("reconstruction",)
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    results_dir: str = "results"
    batch_size: int = 32
    skip_existing: bool = True
    encoder_kwargs: dict = field(default_factory=dict)  # encoder name -> create_encoder kwargs
    task_overrides: dict = field(default_factory=dict)  # task name -> config field overrides
    seed: int = 0
    shard: tuple[int, int] | None = None  # (I, N): only cells I, I+N, ... of the matrix (`--shard I/N`)
    claims: bool = True  # claim each cell, so processes sharing results_dir compute it once
    keep_stale: bool = False  # reuse a record of another task version (labelled stale) instead of recomputing it
    run_options: dict = field(default_factory=dict)  # the CLI's resolved options (--config and flags), for provenance

    def __post_init__(self):
        # the API's form of the CLI's number checks: a batch size of 0 would never finish a feature-store shard
        for name, flag, low in (("batch_size", "--batch-size", 1), ("seed", "--seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"{flag} {value!r}: takes an integer >= {low}", input=flag)

    @classmethod
    def from_preset(cls, preset: str | None = "tiny", *, encoders=None, tasks=None, data=None,
                    settings: dict | None = None, set_items=(), **fields) -> "RunConfig":
        """The run of `preset` with what was given over it: the one place `svgbench run`, `svgbench train`,
        `pytest tasks/` and `svgbench.evaluate` turn a preset and options into a run, so the same inputs give
        the same cells (and keys) whichever way the run starts.

        Settings go preset < `settings` < `set_items`: a --config file and the flags reach here already merged
        (argparse: the file's values are the flags' defaults), `settings` {task: {field: value}} holds the task
        settings the flags imply (--train-diffusion, --diffusion, --reference) or the API's, and `set_items`
        the --set TASK.FIELD=VALUE texts, each parsed and type-checked by `parse_setting`.

        preset: a RUN_PRESETS name, or None for no preset (DataConfig's and each task config's defaults).
        encoders: default the embedded ones. tasks: default every registered task.
        data: a DataConfig (taken whole), a dataset name, or a dict of DataConfig fields over the preset's; a root
        given without a dataset name, over data that reads no files, names its format (`kind_of_root`: .zip, .tar
        or .parquet shards, else an image folder); convert_mode True or a composite (`convert_mode_of`).
        fields: the other RunConfig fields (device, results_dir, batch_size, seed, encoder_kwargs, ...).
        """
        from .presets import get_preset
        from .tasks import list_tasks

        if preset is None:
            preset_data, preset_tasks = {}, {}
        else:
            try:
                chosen = get_preset(preset)
            except KeyError as e:
                raise UserError(f"svgbench run: --preset {preset}: {e.args[0] if e.args else e}",
                                input="--preset") from None
            preset_data, preset_tasks = chosen["data"], chosen["tasks"]
        data = _data_config(preset_data, data)
        overrides = {task: dict(kw) for task, kw in preset_tasks.items()}
        for task, kw in (settings or {}).items():
            overrides.setdefault(task, {}).update(kw)
        for item in set_items:
            task, name, value = parse_setting(item)
            overrides.setdefault(task, {})[name] = value
        return cls(encoders=tuple(encoders) if encoders else EMBEDDED_ENCODERS,
                   tasks=tuple(tasks) if tasks else tuple(list_tasks()), data=data,
                   task_overrides=overrides, **fields)


def _data_config(preset_data: dict, data) -> DataConfig:
    """RunConfig.from_preset's data: `data` (a DataConfig, a dataset name or a dict of fields) over the preset's."""
    if isinstance(data, DataConfig):
        return data
    if data is not None and not isinstance(data, (str, dict)):
        raise TypeError(f"data must be a DataConfig, a dataset name or a dict of its fields, got {type(data).__name__}")
    given = {"name": data} if isinstance(data, str) else dict(data or {})
    kw = dict(preset_data)
    if given.get("root") and "name" not in given:
        from .data import dataset_spec

        if not dataset_spec(kw.get("name", DataConfig.name)).needs_root:  # a root for data that reads none
            from .data.formats import kind_of_root

            given["name"] = kind_of_root(given["root"])
    kw |= given
    if given.get("convert_mode"):  # True: PIL's conversion; a COMPOSITES name: over it
        from .data.folders import convert_mode_of

        kw["convert_mode"] = convert_mode_of(given["convert_mode"])  # an unknown way: one line, exit 2
    try:
        return DataConfig(**kw)
    except ValueError as e:  # a DataError too: said as the run's
        raise UserError(f"svgbench run: {e}", input=getattr(e, "input", None)) from None


def parse_setting(item: str) -> tuple[str, str, object]:
    """'TASK.FIELD=VALUE' -> (task, field, value), VALUE read as JSON (lists become tuples) or else as text;
    the task and its config field must exist and the value must be of the field's type (a UserError otherwise:
    one line, exit 2, before any work)."""
    from .tasks import get_task, list_tasks
    from .validate import check_setting

    target, sep, text = item.partition("=")
    task, dot, name = target.partition(".")
    if not sep or not dot or not name:
        raise UserError(f"svgbench run: --set takes TASK.FIELD=VALUE, got {item!r}", input="--set")
    if task not in list_tasks():
        raise UserError(f"svgbench run: --set {item!r}: unknown task {task!r}; tasks: {', '.join(list_tasks())}",
                        input="--set")
    names = get_task(task).config_fields()
    if name not in names:
        raise UserError(f"svgbench run: --set {item!r}: {task} has no config field {name!r}; "
                        f"fields: {', '.join(names)}", input="--set")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    value = tuple(value) if isinstance(value, list) else value
    problems = check_setting(task, get_task(task).config_class(), name, value)
    if problems and not isinstance(value, str) and not check_setting(task, get_task(task).config_class(), name, text):
        value, problems = text, []  # a text field given digits (train_split=2012): the text as typed
    for problem in problems:
        raise UserError(str(problem), input=problem.input)
    return task, name, value


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return device


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("svgbench", "timm", "diffusers", "torch-fidelity", "torchmetrics", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """svgbench's version and, when svgbench runs from a git checkout, its commit (read from .git, no git
    process) and whether tracked files differ from it (one `git status`; None when git cannot say)."""
    from ._version import __version__

    root = Path(__file__).resolve().parent.parent
    commit = _git_head(root / ".git")
    return {"svgbench_version": __version__, "git_commit": commit, "git_dirty": _git_dirty(root) if commit else None}


def _git_head(dot_git: Path) -> str | None:
    """The commit HEAD names in the repository at `dot_git` (a folder, or a worktree's "gitdir:" file)."""
    try:
        if dot_git.is_file():
            dot_git = (dot_git.parent / dot_git.read_text().split("gitdir:", 1)[1].strip()).resolve()
        head = (dot_git / "HEAD").read_text().strip()
        common = dot_git / (dot_git / "commondir").read_text().strip() if (dot_git / "commondir").is_file() else dot_git
        if head.startswith("ref:"):
            ref = head[4:].strip()
            for d in (dot_git, common):
                if (d / ref).is_file():
                    head = (d / ref).read_text().strip()
                    break
            else:
                packed = (common / "packed-refs").read_text() if (common / "packed-refs").is_file() else ""
                head = next((ln.split()[0] for ln in packed.splitlines() if ln.endswith(" " + ref)), "")
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return head if len(head) in (40, 64) and all(c in "0123456789abcdef" for c in head) else None


def _git_dirty(root: Path) -> bool | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during run_matrix. `cell` is what was in flight (e.g. "tiny-ssl / probe"), or None
    between cells; `computed` / `skipped` count the cells finished (and saved) / reused before it."""

    def __init__(self, cell: str | None, computed: int, skipped: int, results_dir: str):
        super().__init__(cell)
        self.cell, self.computed, self.skipped, self.results_dir = cell, computed, skipped, results_dir


@dataclass
class CellFailure:
    task: str
    encoder: str
    error: str


@dataclass
class RunSummary:
    records: list[Record]
    failures: list[CellFailure]
    computed: int
    skipped: int
    claimed_elsewhere: int = 0  # cells left to the other processes that held their claims
    cell_times: list[tuple[str, float]] = field(default_factory=list)  # (cell, seconds) computed here
    not_applicable: int = 0  # cells recorded as n/a with their reason (e.g. reconstruction without a decoder)
    stale: int = 0  # cells whose record was of another task version: recomputed, or kept (with --keep-stale)
    kept_stale: int = 0  # of those, kept (in `records`, each with its `stale` reason)


def run_matrix(cfg: RunConfig, log=None) -> RunSummary:
    """Run every (encoder, task) cell of `cfg`; return the records (new and reused) and the failures.

    Ctrl-C raises RunInterrupted (a KeyboardInterrupt) naming the cell in flight; the cells finished
    before it keep their records, so rerunning the same configuration resumes after them.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    state = {"cell": None, "computed": 0, "skipped": 0, "claimed": 0, "na": 0, "times": [], "stale": 0, "kept": 0}
    try:
        return _run_cells(cfg, log, state)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(_in_flight(state), state["computed"], state["skipped"], cfg.results_dir) from None


def _in_flight(state: dict) -> str | None:
    """The cell an interrupt cut short, or None: a cell whose record was written since it started is finished,
    even when the interrupt came before the runner moved on (between the write and the next cell)."""
    path = state.get("path")
    if state["cell"] and path is not None:
        now = _file_mark(path)
        if now is not None and now != state.get("before"):
            return None
    return state["cell"]


def _file_mark(path: Path) -> tuple[int, int] | None:
    """(inode, mtime in ns) of the file at `path`, or None without one. A record is written by replacing the file
    (checkpoints.atomic_write), so a write since the mark gives another; comparing marks, not a file time with
    the wall clock, holds where the filesystem's clock runs behind time.time() by a tick."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _build_encoder(cfg: RunConfig, name: str):
    """The encoder `name` as the run's cells use it, refused when it cannot take the run's resolution."""
    from .encoders import create_encoder

    torch.manual_seed(cfg.seed)  # encoders without weights initialise from the run's seed
    encoder = create_encoder(name, **cfg.encoder_kwargs.get(name, {}))
    encoder.spec.check_resolution(cfg.data.resolution, cfg.data.resolution)
    return encoder


def _cell_key(cfg: RunConfig, task, tcfg, name: str, encoder, weights_hash: str, device: str) -> tuple[str, str]:
    """(cell id, key) of `task` on encoder `name` in run `cfg`: the id hashes everything the numbers depend on, the
    key the id with the task's version (a record is stored under its key)."""
    tcfg_key = {k: v for k, v in dataclasses.asdict(tcfg).items() if k != "batch_size"}  # batch size: speed only
    files = {f: _file_hash(getattr(tcfg, f, None)) for f in task.file_fields}
    files |= {k: _file_hash(v) if Path(v).is_file() else None for k, v in task.key_files_of(encoder).items()}
    # the device type, not its index: every rank of a distributed run computes the same cell
    cell = {"task": task.name, "config": tcfg_key, "data": cfg.data.key(), "encoder": name,
            "kwargs": cfg.encoder_kwargs.get(name, {}), "weights": weights_hash, "seed": cfg.seed,
            "device": device.split(":")[0]}
    cell |= {"files": files} if files else {}
    # the cell without the task's version: what a record of the same cell from another version carries
    # (a record from before tasks declared versions has it as its key)
    cell_id = _hash(cell)
    return cell_id, _hash(cell | {"task_version": task.version})


def cell_keys(cfg: RunConfig) -> dict[tuple[str, str], str]:
    """{(encoder, task): record key} of every cell of `cfg`, computed as `run_matrix` computes them (the encoders
    are built for their weights' hash; nothing is run or written)."""
    from .tasks import get_task

    device = resolve_device(cfg.device)
    tasks = [get_task(t) for t in cfg.tasks]
    configs = {t.name: task_config(t, cfg) for t in tasks}
    out = {}
    for name in cfg.encoders:
        encoder = _build_encoder(cfg, name)
        weights_hash = encoder.weights_hash()
        for task in tasks:
            out[name, task.name] = _cell_key(cfg, task, configs[task.name], name, encoder, weights_hash, device)[1]
    return out


def _run_cells(cfg: RunConfig, log, state: dict) -> RunSummary:
    from .encoders import encoder_spec
    from .tasks import get_task

    device = str(dist.device()) if cfg.device == "auto" and dist.is_initialized() else resolve_device(cfg.device)
    tasks = [get_task(t) for t in cfg.tasks]
    configs = {t.name: task_config(t, cfg) for t in tasks}  # strict: an unknown field fails here, before any work
    unknown = sorted(set(cfg.task_overrides) - {t.name for t in tasks} - set(_known_task_names()))
    if unknown:
        raise ValueError(f"run config: settings for unknown task(s) {', '.join(unknown)}; "
                         f"tasks: {', '.join(_known_task_names())}")
    for name in cfg.encoders:
        encoder_spec(name)  # unknown names fail before any work, with the list of known ones
    dataset = build_dataset(cfg.data)
    records, failures = [], []
    main = dist.is_main()
    cells = [(name, task) for name in cfg.encoders for task in tasks]
    if cfg.shard is not None:
        cells = shard_of(cells, *cfg.shard)
        log(f"shard {cfg.shard[0]}/{cfg.shard[1]}: {len(cells)} of {len(cfg.encoders) * len(tasks)} cells")
    for name in dict.fromkeys(n for n, _ in cells):
        kwargs = cfg.encoder_kwargs.get(name, {})
        mine = [t for n, t in cells if n == name]
        try:
            encoder = _build_encoder(cfg, name)
        except Exception as e:
            failures += [CellFailure(t.name, name, f"{type(e).__name__}: {e}") for t in mine]
            log(f"[{name}] cannot be built or used at {cfg.data.resolution}px: {e}")
            continue
        weights_hash = encoder.weights_hash()
        for task in mine:
            state["cell"] = None
            tcfg = configs[task.name]
            cell_id, key = _cell_key(cfg, task, tcfg, name, encoder, weights_hash, device)
            path = record_path(cfg.results_dir, task.name, name, key)
            claim_path = path.with_name(f".{path.stem}.claim")
            # rank 0 decides (reuse the record / compute / another process holds the cell); all ranks follow
            decision = (_decide(cfg, path, key, claim_path, name, task, cell_id, log, state) if main else None)
            decision, reuse = dist.broadcast_object(decision)
            if decision == "taken":
                state["claimed"] += 1
                continue
            if decision == "reuse":
                records.append(read_record(path, key))
                state["skipped"] += 1
                continue
            if decision == "stale":  # --keep-stale: another version's record, shown labelled stale
                old = read_record(Path(reuse))
                records.append(dataclasses.replace(old, stale=stale_reason(old, task.version)))
                state["skipped"] += 1
                continue
            made_by = {"task_version": task.version, "cell": cell_id, **code_version()}
            why = _not_applicable_reason(task, encoder, cfg)
            if why:  # not applicable: a record of n/a with the reason, so the encoder keeps its row in every table
                record = _not_applicable(cfg, task, tcfg, encoder, device, key, kwargs, weights_hash, why)
                record = dataclasses.replace(record, finished=time.time(), **made_by)
                if main:
                    try:
                        write_record(path, record)
                    finally:  # the claim goes only once the record is on disk
                        if decision == "claimed":
                            release(claim_path)
                records.append(record)
                state["na"] += 1
                log(f"[{name}] {task.name}: n/a ({why})")
                continue
            try:
                try:
                    state["cell"], state["path"], state["before"] = f"{name} / {task.name}", path, _file_mark(path)
                    record = _compute(cfg, task, tcfg, encoder, dataset, device, key, kwargs, weights_hash, log)
                    record = dataclasses.replace(record, finished=time.time(), **made_by)
                except Exception as e:
                    failures.append(CellFailure(task.name, name, f"{type(e).__name__}: {e}"))
                    log(f"[{name}] {task.name} FAILED: {type(e).__name__}: {e}")
                    if not isinstance(e, UserError) or debug_enabled():  # an input error needs no traceback
                        log(traceback.format_exc(limit=3))
                    continue
                if main:
                    write_record(path, record)
            finally:
                # released only once the record is on disk (or the cell failed): released before it, another
                # process could claim the cell, find no record yet and compute it a second time
                if main and decision == "claimed":
                    release(claim_path)
            dist.barrier()
            records.append(record)
            why = all_na_reason(task, record.metrics)
            if why:  # ran, but measured nothing: counted and shown as n/a, not as a computed cell
                state["na"] += 1
                log(f"[{name}] {task.name}: n/a ({why})")
                continue
            state["computed"] += 1
            state["times"].append((f"{name} / {task.name}", record.wall_s))
            log(f"[{name}] {task.name}: done in {record.wall_s:.1f}s")
    state["cell"] = None
    return RunSummary(records, failures, state["computed"], state["skipped"], state["claimed"], state["times"],
                      state["na"], state["stale"], state["kept"])


def _stale_records(path: Path, cell_id: str) -> list[tuple[Path, Record]]:
    """Readable records of the cell `cell_id` made by another task version (other keys than `path`'s), oldest
    first. Only the encoder's records of the task are read (its `<encoder>__*.json`), a handful of files."""
    out = []
    encoder = path.stem.rsplit("__", 1)[0]
    for p in sorted(path.parent.glob(f"{glob.escape(encoder)}__*.json")):
        if p == path:
            continue
        try:
            rec = read_record(p)
        except (ValueError, OSError):
            continue
        if rec.cell == cell_id or (rec.task_version is None and rec.key == cell_id):
            out.append((p, rec))
    return sorted(out, key=lambda pr: pr[1].finished or 0.0)


def _decide(cfg: RunConfig, path: Path, key: str, claim_path: Path, name: str, task, cell_id: str, log,
            state: dict) -> tuple[str, str | None]:
    """("reuse", None) (a finished record), ("stale", its path) (keep another task version's record),
    ("claimed", None) (this process computes the cell) or ("taken", None) (another live process holds its
    claim)."""
    task_version, task = task.version, task.name

    def usable() -> bool:
        if not (cfg.skip_existing and path.exists()):
            return False
        try:
            old = read_record(path, key)
        except (ValueError, OSError) as e:
            log(f"[{name}] {task}: record {path} is unusable ({e}); recomputing the cell")
            return False
        pending = old.metrics.get("pending") or {}
        if pending:  # n/a that depended on this machine (e.g. missing feature-network weights): try again
            log(f"[{name}] {task}: record {path.name} has pending metrics "
                f"({'; '.join(f'{k}: {v}' for k, v in sorted(pending.items()))}); recomputing the cell")
            return False
        return True

    if usable():
        log(f"[{name}] {task}: cached ({path.name})")
        return "reuse", None
    stale = _stale_records(path, cell_id) if cfg.skip_existing else []
    stale = [(p, r) for p, r in stale if not r.metrics.get("pending")]
    if stale:
        state["stale"] += 1
        old_path, old = stale[-1]
        why = stale_reason(old, task_version)
        if cfg.keep_stale:
            state["kept"] += 1
            log(f"[{name}] {task}: keeping stale record {old_path.name} ({why}; --keep-stale)")
            return "stale", str(old_path)
        log(f"[{name}] {task}: record {old_path.name} is stale ({why}); recomputing the cell "
            f"(--keep-stale keeps it, labelled stale)")
    if not cfg.claims:
        return "claimed", None
    if not try_claim(claim_path):
        holder = read_claim(claim_path) or {}
        log(f"[{name}] {task}: computed by another process (host {holder.get('host')}, pid {holder.get('pid')}); "
            f"skipped here")
        return "taken", None
    if usable():  # finished by another process between our first look and the claim
        release(claim_path)
        log(f"[{name}] {task}: cached ({path.name})")
        return "reuse", None
    return "claimed", None


def _not_applicable_reason(task, encoder, cfg: RunConfig) -> str | None:
    """Why `task` cannot run for `encoder` on the run's data, or None when it can: the task's `needs` against what
    the encoder can do with its weights (its spec's abilities: a decoder-only checkpoint decodes, never encodes)
    and what the data has (its DatasetSpec: labels, masks, a training split)."""
    if "decoder" in task.needs and not encoder.spec.has_decoder:
        return f"no pixel decoder: `{task.name}` needs one"
    for need, ability, does in (("encode", "encode", "encode images"), ("features", "features", "compute features"),
                                ("decoder", "decode", "decode latents")):
        why = encoder.spec.why_not(ability) if need in task.needs else None
        if why:
            return f"{encoder.spec.name} cannot {does} with its weights: `{task.name}` needs it ({why})"
    data = cfg.data.spec()
    for need, what in (("labels", "them"), ("masks", "them"), ("train", "one")):
        why = data.lacks(need) if need in task.needs else None
        if why:
            return f"{why}: `{task.name}` needs {what}"
    return None


def all_na_reason(task, metrics: dict) -> str | None:
    """The first reason (in the task's metric order) when every value `task` reports in `metrics` is n/a, else None.
    The values: its table metrics that have a direction (not timings, not counts), and its curve's points."""
    keys = [m.key for m in task.metrics if not m.timing and m.higher_is_better is not None]
    values = [metrics.get(k) for k in keys]
    if task.curve is not None:
        points = metrics.get(task.curve.key) or []
        values += [p.get(task.curve.value) for p in points if isinstance(p, dict)]
        keys.append(task.curve.value)
    if not keys or any(v is not None for v in values):
        return None
    reasons = metrics.get("unavailable") or {}
    first = next((reasons[k] for k in keys if reasons.get(k)), None) or next(iter(reasons.values()), None)
    return first or "no metric could be computed"


def _spec_dict(encoder, cfg: RunConfig) -> dict:
    """The encoder's spec as recorded: its latent shape at the run's resolution (not its native one)."""
    return encoder.spec.as_dict() | {"latent_shape": list(encoder.spec.latent_shape(cfg.data.resolution))}


def _not_applicable(cfg, task, tcfg, encoder, device, key, kwargs, weights_hash, why: str) -> Record:
    keys = [m.key for m in task.metrics if not m.timing and m.higher_is_better is not None]
    keys += [task.curve.value] if task.curve is not None else []
    return Record(
        key=key, task=task.name, encoder=encoder.spec.name, encoder_kwargs=kwargs, spec=_spec_dict(encoder, cfg),
        weights_hash=weights_hash, data=cfg.data.as_dict() | {"key": cfg.data.key()}, config=dataclasses.asdict(tcfg),
        seed=cfg.seed, metrics={"unavailable": {k: why for k in keys}}, device=device, device_name=device_name(device),
        wall_s=0.0, versions=versions(), not_applicable=why, run_options=cfg.run_options)


def _compute(cfg, task, tcfg, encoder, dataset, device, key, kwargs, weights_hash, log) -> Record:
    from tqdm.auto import tqdm

    from .diffusion.flops import ForwardClock, diffusion_model_types
    from .validate import finite_or_na

    torch.manual_seed(cfg.seed)
    n = len(dataset) if getattr(tcfg, "num_images", None) is None else min(tcfg.num_images, len(dataset))
    bar = tqdm(total=n, desc=f"{encoder.spec.name} / {task.name}", unit="img", leave=False, file=sys.stderr,
               disable=not dist.is_main())
    t0 = time.perf_counter()
    try:
        with ForwardClock(diffusion_model_types) as clock:  # the cell's cost model (results/efficiency.md)
            metrics = task.run()(encoder, dataset, tcfg, device=device, progress=bar.update)
    finally:
        bar.close()
    return Record(
        key=key, task=task.name, encoder=encoder.spec.name, encoder_kwargs=kwargs, spec=_spec_dict(encoder, cfg),
        weights_hash=weights_hash, data=cfg.data.as_dict() | {"key": cfg.data.key()}, config=dataclasses.asdict(tcfg),
        seed=cfg.seed, metrics=finite_or_na(metrics), device=device, device_name=device_name(device),
        wall_s=round(time.perf_counter() - t0, 3), versions=versions(), cost=clock.cost(device),
        run_options=cfg.run_options)


def _file_hash(path) -> str | None:
    """sha256 of the file at `path` (None when the field is unset)."""
    if not path:
        return None
    from .checkpoints import file_sha256

    return file_sha256(path)


def task_config(task, cfg: RunConfig):
    """The config of `task` in run `cfg`: its overrides, with the run's batch size where the task has one.
    An unknown field is a ValueError listing the valid ones."""
    overrides = dict(cfg.task_overrides.get(task.name, {}))
    if "batch_size" in task.config_fields():
        overrides.setdefault("batch_size", cfg.batch_size)
    return task.make_config(overrides, where="run config")


def _known_task_names() -> list[str]:
    from .tasks import list_tasks

    return list_tasks()
