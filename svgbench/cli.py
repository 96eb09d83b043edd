"""`svgbench`: list encoders, run the encoder x task matrix, rebuild reports."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def load_plugin(spec: str) -> None:
    """Import a user file or module that registers encoders, tasks, datasets or findings (register_encoder /
    register_task / register_dataset / register_finding calls at import)."""
    from .errors import UserError

    path = Path(spec)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise UserError(f"svgbench: --plugin {spec}: no such file; check the path", input="--plugin")
        mod_spec = importlib.util.spec_from_file_location(f"svgbench_plugin_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module
        mod_spec.loader.exec_module(module)
    else:
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as e:
            if e.name is None or not spec.startswith(e.name):  # a module the plugin itself imports: its own bug
                raise
            raise UserError(f"svgbench: --plugin {spec}: no module {e.name!r} is importable here; give a .py file "
                            f"path or an installed module", input="--plugin") from None


def cmd_list(args) -> int:
    from .encoders import encoder_spec, list_encoders

    rows = []
    for name in list_encoders():
        try:
            s = encoder_spec(name)
            shape = "x".join(map(str, s.latent_shape()))
            rows.append((name, s.family, shape, str(s.latent_channels), "yes" if s.has_decoder else "no",
                         f"{s.resolution}px", s.weights))
        except Exception as e:  # a broken third-party entry must not hide the others
            rows.append((name, "?", "?", "?", "?", "?", f"error: {e}"))
    _print_rows(("encoder", "family", "latent (CxHxW)", "channels", "decoder", "native", "weights"), rows)
    from .encoders.diffusers_ae import CONVENTION, KINDS
    from .encoders.timm_backbone import CONVENTION as TIMM_CONVENTION
    from .encoders.vavae import CONVENTION as LDM_CONVENTION

    print("\ngeneric families (any name of these forms; hub ids need the hub or its cache, else pass a folder/file):")
    _print_rows(("name", "builds", "latent"), [
        ("diffusers:REPO_OR_DIR[/SUBFOLDER]", f"the class config.json names: {', '.join(KINDS)}", CONVENTION),
        ("timm:MODEL[@WEIGHTS]", "any timm backbone, features only; WEIGHTS: a .safetensors/.pt file or random",
         TIMM_CONVENTION),
        ("ldm:FILE|DIR|ORG/REPO/FILE", "an LDM-layout KL checkpoint (VA-VAE) converted to AutoencoderKL", LDM_CONVENTION),
    ])
    from .encoders.zoo import ENCODER_CONFIGS as ZOO

    print("\nzoo (named hub models; offline: --weights NAME=PATH to a downloaded folder or file):")
    zrows = []
    for name, entry in ZOO.items():
        try:
            shape = "x".join(map(str, encoder_spec(name).latent_shape(256)))
        except Exception as e:  # an entry that cannot be described must not hide the others
            shape = f"? ({type(e).__name__}: {e})"
        zrows.append((name, shape, f"{entry.params_m:.1f}M" if entry.params_m else "-", entry.target, entry.paper))
    _print_rows(("name", "latent @256px", "params", "loads", "paper"), zrows)
    from .tasks import get_task, list_tasks

    print()
    trows = []
    for name in list_tasks():
        t = get_task(name)
        heads = ", ".join(m.headline_title for m in t.headline_metrics()) or "-"
        trows.append((name, ", ".join(sorted(t.needs)) or "-", heads, t.source, t.description))
    _print_rows(("task", "needs", "scorecard", "source", "what"), trows)
    from .data import dataset_specs

    print()
    yn = {True: "yes", False: "no"}
    _print_rows(("dataset", "splits (train)", "labels", "masks", "resolution", "FID network", "source", "what"),
                [(d.name, f"{', '.join(d.splits) or 'any'} ({d.train_split or '-'})", yn[d.labels], yn[d.masks],
                  d.resolution_policy, d.feature_network, d.source, d.description) for d in dataset_specs()])
    from .tasks import finding_specs

    print()
    _print_rows(("finding", "reads", "kind", "source", "claim"),
                [(f.id, ", ".join(f.reads), "premise" if f.premise else "claim", f.source, f.claim_text())
                 for f in finding_specs()])
    return 0


def _print_rows(head: tuple, rows: list[tuple]) -> None:
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _diffusion_overrides(items) -> dict:
    """--diffusion 'ENCODER=PATH[,stats=PATH][,kind=dit|sit|svg]' -> the generation / sampling config fields naming
    that checkpoint (diffusion, diffusion_stats, diffusion_kind, diffusion_encoder); one checkpoint per run. The
    files are read and the model built by the pre-run checks (validate.check_diffusion), before any cell: format,
    finite values, architecture, statistics, and the kind, which DiT and SiT layouts must declare."""
    if not items:
        return {}
    from .diffusion.official import KINDS
    from .errors import UserError

    if len(items) > 1:
        raise UserError("svgbench run: one --diffusion per run (the generation and sampling configs name one "
                        "checkpoint); run once per encoder", input="--diffusion")
    name, sep, rest = items[0].partition("=")
    path, *opts = rest.split(",")
    if not sep or not name or not path:
        raise UserError(f"svgbench run: --diffusion takes ENCODER=PATH[,stats=PATH][,kind=dit|sit|svg], "
                        f"got {items[0]!r}", input="--diffusion")
    out = {"diffusion": path, "diffusion_encoder": name}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key not in ("stats", "kind") or not eq or not value:
            raise UserError(f"svgbench run: --diffusion {items[0]!r}: unknown option {opt!r} "
                            "(stats=PATH, kind=dit|sit|svg)", input="--diffusion")
        if key == "kind" and value not in KINDS:
            raise UserError(f"svgbench run: --diffusion {items[0]!r}: kind must be one of {', '.join(KINDS)}, "
                            f"got {value!r}", input="--diffusion")
        out["diffusion_stats" if key == "stats" else "diffusion_kind"] = value
    return out


def _run_actions() -> dict[str, argparse.Action]:
    """Config-file key (the option's flag without its dashes) -> that `svgbench run` option."""
    r = argparse.ArgumentParser(add_help=False)
    _add_run_options(r)
    return {a.option_strings[0][2:]: a for a in r._actions if a.dest != "config"}


def config_keys() -> list[str]:
    """Every key a --config file may hold: the run options, and `plugin` (the global --plugin)."""
    return sorted(_run_actions()) + ["plugin"]


def load_run_config(path: str | os.PathLike) -> dict:
    """A --config YAML file as {argparse destination: value}, each key and value checked against its run option
    (a UserError naming the file, the key and the fix for an unknown key or a value of another type). Keys are
    spelled as the flags (data-root; data_root is accepted too); list options take a YAML list or one string,
    `set` also a mapping {TASK: {FIELD: VALUE}} and `weights` a mapping {ENCODER: PATH}."""
    import yaml

    from .errors import UserError

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--config {path}: no such file; check the path", input=str(path))
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{p}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__}{where}); fix the file",
                        input=str(p)) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise UserError(f"{p}: holds a YAML {type(doc).__name__}, not a mapping of run options "
                        f"(e.g. data-root: /data/imagenet)", input=str(p))
    actions = _run_actions()
    out: dict = {}
    for key, value in doc.items():
        name = str(key).replace("_", "-")
        if name == "plugin":
            out["plugin"] = _config_value(p, name, argparse.Action(["--plugin"], "plugin", nargs="*"), value)
            continue
        if name not in actions:
            raise UserError(f"{p}: unknown key {key!r}; valid keys: {', '.join(config_keys())}", input=str(p),
                            fix="use one of the valid keys")
        out[actions[name].dest] = _config_value(p, name, actions[name], value)
    if "data" in out and "plugin" not in out:  # with the file's own plugins not loaded yet, DataConfig checks it
        from .data import list_datasets

        if out["data"] not in list_datasets():
            raise UserError(f"{p}: data: {out['data']!r} is not one of {', '.join(list_datasets())} (or a dataset a "
                            f"--plugin registers); fix the value in the file", input=f"{p}: data")
    return out


def _config_value(path: Path, name: str, action: argparse.Action, value):
    import json

    from .errors import UserError

    def bad(expected: str):
        raise UserError(f"{path}: {name}: {value!r} is not {expected}; fix the value in the file",
                        input=f"{path}: {name}")

    if isinstance(action, argparse._StoreTrueAction):
        return value if isinstance(value, bool) else bad("true or false")
    if action.nargs == "?" and action.const is True:  # a flag that may also name how (convert-mode: composite-white)
        return value if isinstance(value, (bool, str)) else bad("true or false, or how (composite-white, ...)")
    if isinstance(action, argparse._AppendAction) or action.nargs == "*":
        if name == "set" and isinstance(value, dict):
            if not all(isinstance(f, dict) for f in value.values()):
                bad("a mapping TASK: {FIELD: VALUE}")
            # JSON text, as a --set value is read: a YAML list becomes the tuple the flag would give
            return [f"{task}.{field}={json.dumps(v)}" for task, fields in value.items() for field, v in fields.items()]
        if name == "weights" and isinstance(value, dict):
            return [f"{enc}={spec}" for enc, spec in value.items()]
        if isinstance(value, str):
            return [value]
        return list(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else bad(
            "a string or a list of strings")
    if action.type is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else bad("an integer")
    if action.type is _csv:
        if isinstance(value, str):
            return _csv(value)
        return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else bad(
            "a list of names (or one comma-separated string)")
    if not isinstance(value, str):
        bad("a string")
    if action.choices and value not in action.choices:
        bad(f"one of {', '.join(action.choices)}")
    return value


def resolved_run_options(args) -> dict:
    """The options a run used, file and flags merged, as a --config file holds them (None and empty left out)."""
    out = {"plugin": list(args.plugin)} if getattr(args, "plugin", None) else {}
    for name, action in _run_actions().items():
        value = getattr(args, action.dest, None)
        if value is not None and value != [] and value is not False:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


RUN_CONFIG_FILE = "run-config.yaml"


def _write_run_config(results: str, options: dict) -> Path:
    import yaml

    path = Path(results) / RUN_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# the options of the latest `svgbench run` into this folder (file and flags merged);\n"
                    "# `svgbench run --config " + RUN_CONFIG_FILE + "` runs it again\n"
                    + yaml.safe_dump(options, sort_keys=False))
    return path


def _encoder_weights(items) -> dict:
    """--weights 'ENCODER=PATH[,dino=PATH]' items -> RunConfig.encoder_kwargs {ENCODER: {weights, dino_weights}}."""
    from .errors import UserError

    encoder_kwargs = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"svgbench run: --weights takes ENCODER=PATH, got {item!r}", input="--weights")
        value, *extra = value.split(",")
        encoder_kwargs.setdefault(name, {})["weights"] = value
        for opt in extra:  # ENCODER=PATH,dino=PATH: the DINO weights an SVG checkpoint without them needs
            key, eq, path = opt.partition("=")
            if key != "dino" or not eq:
                raise UserError(f"svgbench run: --weights {item!r}: unknown option {opt!r} (dino=PATH)",
                                input="--weights")
            encoder_kwargs[name]["dino_weights"] = path
    return encoder_kwargs


def run_config_of(args):
    """The RunConfig of `svgbench run` ARGS (a --config file's options already under the flags): the flags read
    into RunConfig.from_preset's arguments, which builds the run (preset < file and flags < --set)."""
    from .claims import parse_shard
    from .errors import UserError
    from .runner import RunConfig

    settings: dict[str, dict] = {}
    if args.train_diffusion:
        for task in ("generation", "sampling"):
            settings.setdefault(task, {})["train"] = True
    diffusion = _diffusion_overrides(args.diffusion)  # its files are checked with the other inputs (preflight)
    for task in ("generation", "sampling") if diffusion else ():
        settings.setdefault(task, {}).update(diffusion)
    if getattr(args, "reference", None):
        if not Path(args.reference).is_file():
            raise UserError(f"svgbench run: --reference {args.reference}: no such file (an ADM reference batch "
                            ".npz, e.g. VIRTUAL_imagenet256_labeled.npz)", input="--reference")
        for task in ("generation", "sampling"):
            settings.setdefault(task, {})["reference_npz"] = args.reference
    shard = None
    if args.shard:
        try:
            shard = parse_shard(args.shard)
        except ValueError as e:
            raise UserError(f"svgbench run: {e}", input="--shard") from None
    # a flag not given (None; --convert-mode: False) leaves the preset's value
    data = {"name": args.data, "root": args.data_root, "split": args.split, "resolution": args.resolution,
            "size": args.num_images, "seed": args.seed, "convert_mode": args.convert_mode or None}
    data = {k: v for k, v in data.items() if v is not None}
    return RunConfig.from_preset(args.preset, encoders=args.encoders, tasks=args.tasks, data=data, settings=settings,
                                 set_items=args.set, device=args.device, results_dir=args.results,
                                 batch_size=args.batch_size, skip_existing=not args.force,
                                 encoder_kwargs=_encoder_weights(args.weights), seed=args.seed or 0, shard=shard,
                                 keep_stale=args.keep_stale, run_options=resolved_run_options(args))


def cmd_run(args) -> int:
    """Ctrl-C ends the run with status 130 after saying which cell was in flight (no traceback)."""
    _guard_interrupts()
    try:
        return _cmd_run(args)
    except KeyboardInterrupt as e:
        return _interrupted(e, args.results)


def _guard_interrupts() -> None:
    """Make a Ctrl-C impossible to lose.

    Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives; if that is inside a
    hook whose exceptions Python ignores (os.fork's after-fork hooks, run by multiprocessing and DataLoader
    workers), the interrupt is printed as "Exception ignored" and the run goes on. So the first SIGINT also
    starts a thread that re-raises it in the main thread every 2 s until it is handled (`_interrupted` sets
    SIGINT back to SIG_DFL, after which `_thread.interrupt_main` does nothing), and a swallowed
    KeyboardInterrupt is not printed.
    """
    import _thread
    import signal
    import threading
    import time

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return  # not ours to handle (a background job ignores SIGINT)

    def repeat():
        while signal.getsignal(signal.SIGINT) is on_sigint:
            time.sleep(2.0)
            _thread.interrupt_main(signal.SIGINT)

    def on_sigint(signum, frame):
        if not started.is_set():
            started.set()
            threading.Thread(target=repeat, name="svgbench-interrupt", daemon=True).start()
        raise KeyboardInterrupt

    def quiet_unraisable(unraisable, default=sys.unraisablehook):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return  # the interrupt an ignoring hook swallowed: `repeat` raises it again, no need to print it
        default(unraisable)

    started = threading.Event()
    sys.unraisablehook = quiet_unraisable
    signal.signal(signal.SIGINT, on_sigint)


def _cmd_run(args) -> int:
    from . import distributed as dist
    from .cache import default_cache_dir
    from .errors import EXIT_USER_ERROR
    from .validate import check_numbers, errors, preflight
    from .report import task_table, to_markdown, write_reports
    from .records import Results
    from .runner import run_matrix

    # numbers first, under the flags the user typed: everything below builds from them
    numbers = check_numbers({"--batch-size": args.batch_size, "--num-images": args.num_images,
                             "--resolution": args.resolution, "--workers": args.workers, "--seed": args.seed})
    for p in numbers:
        print(p, file=sys.stderr)
    if errors(numbers):
        return EXIT_USER_ERROR
    cfg = run_config_of(args)
    if args.workers is not None:
        os.environ["SVGBENCH_WORKERS"] = str(args.workers)  # DataLoader workers of the feature cache
    problems = preflight(data=cfg.data, encoders=cfg.encoders,
                         weights={k: v["weights"] for k, v in cfg.encoder_kwargs.items()}, results_dir=args.results,
                         cache_dir=default_cache_dir(), tasks=cfg.tasks, task_settings=cfg.task_overrides)
    for p in problems:  # all of them at once, one line each, before any work
        print(p, file=sys.stderr)
    if errors(problems):
        return EXIT_USER_ERROR
    distributed = dist.init()
    try:
        try:
            summary = run_matrix(cfg)
        except (KeyError, ValueError) as e:
            raise SystemExit(f"svgbench run: {e}")
        if not dist.is_main():
            return 0
        _write_run_config(args.results, cfg.run_options)  # after the matrix: a run refused inside it leaves nothing
        write_reports(args.results)
    finally:
        if distributed:
            dist.shutdown()
    results = Results.of(summary.records)  # each cell's newest record found once for every table below
    for task in cfg.tasks:
        df = task_table(results, task)
        if not df.empty:
            print(f"\n## {task}\n")
            print(to_markdown(df, task))
    if summary.cell_times:
        _print_cell_costs(summary)
    elsewhere = (f", {summary.claimed_elsewhere} left to other processes holding them"
                 if summary.claimed_elsewhere else "")
    na = f", {summary.not_applicable} n/a (the reason is in the tables)" if summary.not_applicable else ""
    if summary.stale:
        kept = summary.kept_stale
        na += (f", {summary.stale} stale (another task version): {summary.stale - kept} recomputed"
               + (f", {kept} kept and labelled stale (--keep-stale)" if kept else ""))
    print(f"\n{summary.computed} cells computed, {summary.skipped} reused{na}{elsewhere}; tables in {args.results}/")
    if summary.failures:
        print(f"\n{len(summary.failures)} cells failed:", file=sys.stderr)
        for f in summary.failures:
            print(f"  {f.encoder} / {f.task}: {f.error}", file=sys.stderr)
        return 1
    return 0


def _print_cell_costs(summary) -> None:
    """Each computed cell's time, slowest first, with its cost model (time in model forwards and their share
    of the achievable rate measured in this run; the table is in results/efficiency.md)."""
    from .efficiency import cell_rows

    done = {cell for cell, _ in summary.cell_times}
    rows = {f"{r['encoder']} / {r['task']}": r
            for r in cell_rows([r for r in summary.records if f"{r.encoder} / {r.task}" in done])}
    total = sum(t for _, t in summary.cell_times)
    print(f"\ntime per computed cell, slowest first (total {total:.1f} s; cost model in efficiency.md):",
          file=sys.stderr)
    for cell, t in sorted(summary.cell_times, key=lambda ct: -ct[1]):
        r = rows.get(cell) or {}
        cost = (f"  (model forwards {r['model_s']:.1f} s at {r['rate_share']:.2f} of the achievable "
                f"{r['dtype']} rate; {r['outside_model_s']:.1f} s outside them)"
                if r.get("rate_share") is not None else "")
        print(f"  {t:8.1f} s  {cell}{cost}", file=sys.stderr)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C


def _interrupted(e: KeyboardInterrupt, results: str) -> int:
    """Ctrl-C in `svgbench run` (a runner.RunInterrupted inside the matrix): say what was in flight and
    how to resume."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C now ends the process at once
    cell = getattr(e, "cell", None)
    where = f"while computing cell {cell} (its partial work is discarded)" if cell else "(no cell was in flight)"
    done = (f"{e.computed} {'cell' if e.computed == 1 else 'cells'} finished in this run and {e.skipped} reused"
            if hasattr(e, "computed") else "every finished cell")
    print(f"\nsvgbench run: interrupted {where}. {done}: records under {results}/records/. "
          f"Rerun the same command to resume: finished cells are reused, the rest are computed.",
          file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def cmd_train(args) -> int:
    from .cli_train import RECIPES, run_recipe

    if args.recipe is None:
        print("usage: svgbench train RECIPE [options]   (svgbench train RECIPE --help: its options)\n\nrecipes:")
        for name, (_, what) in RECIPES.items():
            print(f"  {name:<10} {what}")
        return 0
    run_recipe(args.recipe, args.recipe_args)
    return 0


def cmd_report(args) -> int:
    from .report import write_reports

    paths = write_reports(args.results)
    if not paths:
        print(f"no records under {args.results}/records: run `svgbench run` first", file=sys.stderr)
        return 1
    for task, p in paths.items():
        print(f"{task}: {p}")
    if args.readme:
        from .readme import update_readme

        names = update_readme(args.readme, args.results)
        print(f"{args.readme}: blocks {', '.join(names)} rewritten from {args.results}/")
    return 0


def cmd_compare(args) -> int:
    """`svgbench compare A B`: every metric the two encoders share per-item values for, as a paired difference."""
    from .findings import paired_comparison
    from .records import load_records

    records = load_records(args.results)
    encoders = {r.encoder for r in records}
    missing = [e for e in (args.a, args.b) if e not in encoders]
    if missing:
        print(f"svgbench compare: no records of {', '.join(missing)} under {args.results}/records "
              f"(encoders there: {', '.join(sorted(encoders)) or 'none'}); run `svgbench run --encoders ...` first",
              file=sys.stderr)
        return 2
    df = paired_comparison(records, args.a, args.b, n_resamples=args.resamples)
    if df.empty:
        print(f"svgbench compare: {args.a} and {args.b} share no per-item metric on the same task and dataset",
              file=sys.stderr)
        return 1
    print(f"{args.a} - {args.b}: paired bootstrap over the same items ({df['level'].iloc[0]:.0%} interval, "
          f"{df['method'].iloc[0]}, {args.resamples} resamples)\n")
    print("| task | data | metric | " + f"{args.a} | {args.b} | difference | interval | n | excludes 0 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in df.itertuples():
        print(f"| {r.task} | {r.data} | {r.metric} | {_g(r.value_a)} | {_g(r.value_b)} | {_g(r.diff)} | "
              f"[{_g(r.ci_low)}, {_g(r.ci_high)}] | {r.n} | {'yes' if r.excludes_zero else 'no'} |")
    return 0


def _g(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}"


def _add_run_options(r: argparse.ArgumentParser) -> None:
    """The options of `svgbench run`; each is also a key of a --config file (as spelled here, without the dashes)."""
    r.add_argument("--config", metavar="FILE.yaml",
                   help="read options from a YAML file (keys: these options' names, e.g. data-root: /data/imagenet; "
                        "set: {probe: {epochs: 10}}); flags on the command line and --set override it")
    r.add_argument("--encoders", type=_csv, help="comma-separated encoder names (default: the embedded tiny ones)")
    r.add_argument("--tasks", type=_csv, help="comma-separated task names (default: all)")
    r.add_argument("--preset", default="tiny", help="tiny (embedded default) or imagenet256 (real checkpoints)")
    from .data import DATA_KINDS

    # no argparse choices: a --plugin registers its datasets after parsing; DataConfig refuses an unknown name
    r.add_argument("--data", metavar="NAME",
                   help=f"a registered dataset: {', '.join(DATA_KINDS)} or one a --plugin registers (default: the "
                        "preset's; with --data-root alone: told by the root, .zip, .tar shards, .parquet shards, "
                        "else imagefolder)")
    r.add_argument("--data-root", help="dataset folder (ImageNet layout for imagefolder, ADE20K for segfolder), "
                                       "hub parquet folder, webdataset tar folder, or the .zip of an image folder")
    r.add_argument("--split", help="evaluation split (default: the preset's, val)")
    r.add_argument("--resolution", type=int, help="default: the preset's (64 tiny, 256 imagenet256)")
    r.add_argument("--num-images", type=int, help="evaluation images (default: the preset's)")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int)
    r.add_argument("--weights", action="append", metavar="ENCODER=PATH[,dino=PATH]",
                   help="weights for an encoder: hub id, folder or file (repeatable); dino=: SVG's DINO weights")
    r.add_argument("--diffusion", action="append", metavar="ENCODER=PATH[,stats=PATH][,kind=dit|sit|svg]",
                   help="generation/sampling: the diffusion checkpoint of ENCODER (official SVG-XL with its stats "
                        "file, SiT/DiT-XL/2, or an svgbench export); kind=dit|sit|svg declares its process where the "
                        "tensors cannot (required for the DiT/SiT layout)")
    r.add_argument("--reference", metavar="NPZ",
                   help="generation/sampling: the ADM reference batch to score against (e.g. "
                        "VIRTUAL_imagenet256_labeled.npz; arr_0 images, with mu/sigma and mu_s/sigma_s if it has them): "
                        "FID, sFID, IS, precision, recall by ADM's evaluator; sets {generation,sampling}.reference_npz")
    # no argparse choices: their list (svgbench.data.folders.COMPOSITES) sits beside torch, which --help must not
    # import; the run checks the value (convert_mode_of) before any work
    r.add_argument("--convert-mode", nargs="?", const=True, default=False, metavar="composite-white|composite-black",
                   help="convert non-RGB images to RGB (real ImageNet). Alone: PIL's conversion, which drops an alpha "
                        "channel (transparent areas show the colour stored under them, often black); composite-white "
                        "or composite-black lays transparent images over that background first")
    r.add_argument("--results", default="results")
    r.add_argument("--force", action="store_true", help="recompute cells that already have a record")
    r.add_argument("--keep-stale", action="store_true",
                   help="reuse a record made by another version of its task (labelled stale) instead of recomputing it")
    r.add_argument("--train-diffusion", action="store_true",
                   help="generation/sampling: train a diffusion model where none is shipped for an encoder")
    r.add_argument("--shard", metavar="I/N", help="compute only cells I, I+N, I+2N, ... of the matrix (0 <= I < N): "
                                                 "N processes or array jobs fill one results folder")
    r.add_argument("--workers", type=int, help="DataLoader workers for encoding (default: $SVGBENCH_WORKERS or 0)")
    r.add_argument("--set", action="append", default=[], metavar="TASK.FIELD=VALUE",
                   help="override one field of a task's config, e.g. sampling.heun_max_steps=50 or "
                        "sampling.steps=[1,2,4] (JSON values; repeatable)")


def build_parser(run_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The command line; `run_defaults` (a --config file's options) become the defaults of `run`'s options, so
    flags given on the command line override them and --set items add to the file's."""
    p = argparse.ArgumentParser(prog="svgbench", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the traceback of input errors too (or SVGBENCH_DEBUG=1)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="import a file/module that registers encoders, tasks, datasets or findings (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list registered encoders, tasks, datasets and findings")

    r = sub.add_parser("run", help="run the encoder x task matrix and write tables under results/")
    _add_run_options(r)
    if run_defaults:
        run_defaults = dict(run_defaults)
        p.set_defaults(plugin=run_defaults.pop("plugin", []))
        r.set_defaults(**run_defaults)

    t = sub.add_parser("train", help="train with one of svgbench's recipes: dino (ssl), vae, svg, diffusion, judge "
                                     "(svgbench train: the list; svgbench train RECIPE --help: its options)",
                       add_help=False)
    t.add_argument("recipe", nargs="?", choices=["dino", "ssl", "vae", "svg", "diffusion", "judge"])
    t.add_argument("recipe_args", nargs=argparse.REMAINDER)

    c = sub.add_parser("compare", help="paired differences A - B of every shared per-item metric, with intervals")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--results", default="results")
    c.add_argument("--resamples", type=int, default=1000)

    rep = sub.add_parser("report", help="rebuild tables from the records under results/")
    rep.add_argument("--results", default="results")
    rep.add_argument("--readme", metavar="PATH",
                     help="also rewrite the svgbench blocks of this README (scorecard, summary, findings) from the new files")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `svgbench train --help` (no recipe): the recipe list; everything else unknown is an error as usual
    if extra and not (args.command == "train" and args.recipe is None and set(extra) <= {"-h", "--help"}):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .errors import EXIT_USER_ERROR, UserError, debug_enabled, format_user_error

    try:
        on_command_line = list(args.plugin)
        for plugin in on_command_line:  # before a --config file is read: it may name the datasets they register
            load_plugin(plugin)
        if args.command == "run" and args.config:
            args = build_parser(load_run_config(args.config)).parse_args(argv)
            for plugin in args.plugin[: len(args.plugin) - len(on_command_line)]:  # the file's (listed first)
                load_plugin(plugin)
        commands = {"list": cmd_list, "run": cmd_run, "train": cmd_train, "report": cmd_report, "compare": cmd_compare}
        return commands[args.command](args)
    except UserError as e:  # a fixable input: one line naming it (the traceback only when debugging)
        if debug_enabled(args.debug):
            raise
        print(format_user_error(e), file=sys.stderr)
        return EXIT_USER_ERROR


def entry() -> int:
    """The `svgbench` console command: main(), and after a Ctrl-C the exit status 130 as said.

    Every finished cell is saved and the message printed by then, so the process ends here, before
    interpreter shutdown, which was seen to turn an interrupt landing between two cells into a death by
    SIGINT (status -2) instead of the 130 the message promises.
    """
    rc = main()
    if rc == EXIT_INTERRUPTED:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(entry())
