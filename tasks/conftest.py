"""tasks/: each task module runs its task against every selected encoder.

`pytest tasks/` runs them in quick mode (few images, still real models and metrics);
`pytest tasks/ --benchmark` runs them at full size through the runner and regenerates results/.
"""

import os
from pathlib import Path

import pytest

from svgbench.data import DataConfig
from svgbench.presets import EMBEDDED_ENCODERS
from svgbench.runner import RunConfig

QUICK_IMAGES = 32
FULL_IMAGES = 512


def selected_encoders(config) -> tuple[str, ...]:
    opt = config.getoption("--encoders")
    return tuple(e.strip() for e in opt.split(",") if e.strip()) if opt else EMBEDDED_ENCODERS


SAMPLER_STEPS = (1, 2, 4, 8, 16, 25, 50)  # the few-step table's step counts
QUICK_SAMPLER_STEPS = (1, 4)


def one_per_family(encoders) -> set[str]:
    """The first of `encoders` in each encoder family (EncoderSpec.family)."""
    from svgbench.encoders import encoder_spec

    first: dict[str, str] = {}
    for name in encoders:
        first.setdefault(encoder_spec(name).family, name)
    return set(first.values())


def pytest_generate_tests(metafunc):
    if "encoder_name" in metafunc.fixturenames:
        encoders = selected_encoders(metafunc.config)
        # a test marked one_per_family runs, in the default quick run, for the first embedded encoder of each
        # family, and for the others behind --runslow (the expensive diffusion cells: at least one end-to-end case
        # per task and family stays in the default suite); --benchmark or an --encoders list runs every encoder
        if (metafunc.definition.get_closest_marker("one_per_family") and not metafunc.config.getoption("--benchmark")
                and not metafunc.config.getoption("--encoders")):
            keep = one_per_family(encoders)
            encoders = [e if e in keep else pytest.param(e, marks=pytest.mark.slow) for e in encoders]
        metafunc.parametrize("encoder_name", encoders)
    if "sampler_steps" in metafunc.fixturenames:
        full = metafunc.config.getoption("--benchmark")
        metafunc.parametrize("sampler_steps", SAMPLER_STEPS if full else QUICK_SAMPLER_STEPS)


@pytest.fixture(scope="session")
def full(request) -> bool:
    return bool(request.config.getoption("--benchmark"))


def harness_config(preset: str, *, full: bool, data_root: str | None = None, device: str = "auto",
                   results: str = "results", encoders=None, tasks=None) -> RunConfig:
    """The run `pytest tasks/` options describe, built by RunConfig.from_preset as `svgbench run` builds its own:
    the preset's resolution and task settings over FULL_IMAGES images (--benchmark) or QUICK_IMAGES; with a
    --data-root, its ImageNet-layout folder converted to RGB, else the embedded shapes."""
    size = FULL_IMAGES if full else QUICK_IMAGES
    data = ({"name": "imagefolder", "root": data_root, "split": "val", "size": size, "convert_mode": True} if data_root
            else {"name": "shapes", "size": size, "convert_mode": False})  # shapes are RGB: no conversion
    return RunConfig.from_preset(preset, encoders=encoders, tasks=tasks, data=data, device=device, results_dir=results)


@pytest.fixture(scope="session")
def harness_run(request, full) -> RunConfig:
    opt = request.config.getoption
    return harness_config(opt("--preset"), full=full, data_root=opt("--data-root"), device=opt("--device"),
                          results=opt("--results"))


@pytest.fixture(scope="session")
def data_config(harness_run) -> DataConfig:
    return harness_run.data


@pytest.fixture(scope="session")
def run_options(full, harness_run):
    return {
        "data": harness_run.data,
        "device": harness_run.device,
        "results_dir": harness_run.results_dir if full else None,
        # full size: the preset's task sizes, so `pytest tasks/ --benchmark` and `svgbench run --preset P`
        # compute (and share) the same cells; quick: each test's own small settings
        "tasks": harness_run.task_overrides if full else {},
    }


@pytest.fixture(scope="module")
def feature_cache(full, tmp_path_factory):
    """Quick mode: one throwaway feature cache shared by tasks/ modules; --benchmark: the default cache."""
    if full:
        yield None
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVGBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        yield os.environ["SVGBENCH_CACHE"]


def rows_written_by(write):
    """A module-scoped fixture: the list a module's benchmarks append their rows to; with --benchmark,
    `write(<results dir>, rows)` at the end of the module."""

    @pytest.fixture(scope="module")
    def rows(full, request):
        collected: list[dict] = []
        yield collected
        if full and collected:
            write(Path(request.config.getoption("--results")), collected)

    return rows


def wants_task(config, task: str) -> bool:
    opt = config.getoption("--tasks")
    return not opt or task in [t.strip() for t in opt.split(",")]


def pytest_sessionfinish(session, exitstatus):
    """With --benchmark, after every task module has run (whatever their file names): rebuild every table under
    results/ from the records."""
    config = session.config
    if not config.getoption("--benchmark") or getattr(config, "workerinput", None) is not None:
        return
    from svgbench.report import write_reports

    results = config.getoption("--results")
    paths = write_reports(results)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    if not paths:
        reporter.write_line(f"svgbench: no records under {results}/records: no tables written", red=True)
        session.exitstatus = 1
        return
    reporter.write_line(f"svgbench: tables rebuilt from the records: {', '.join(str(p) for p in paths.values())}")


# ---------------------------------------------------------------------------------------------
# a cell that should compute never passes as n/a
# ---------------------------------------------------------------------------------------------

def measured(record) -> bool:
    """Whether `record` holds at least one measured value: a metric with a direction (not a count, not a timing)
    or a point of its curve."""
    from svgbench.records import finite_number
    from svgbench.tasks import get_task

    task, m = get_task(record.task), record.metrics
    keys = [s.key for s in task.metrics if not s.timing and s.higher_is_better is not None]
    if any(finite_number(m.get(k)) is not None for k in keys):
        return True
    curve = task.curve
    return curve is not None and any(finite_number(p.get(curve.value)) is not None for p in m.get(curve.key) or [])


def na_problem(record, full: bool) -> str | None:
    """Why `record` fails a tasks/ test, or None. A cell the runner judged inapplicable (its `not_applicable`
    reason: the task's needs against the encoder and data, e.g. no decoder) must hold no value; any other cell
    must hold at least one measured value. Under --benchmark only, a cell whose every n/a reason is pending (what
    this machine lacks, e.g. no shipped diffusion model for the encoder) passes, with a warning."""
    cell = f"{record.encoder} / {record.task}"
    if record.not_applicable:
        return f"{cell}: judged n/a ({record.not_applicable}) yet holds values" if measured(record) else None
    if measured(record):
        return None
    why = record.metrics.get("unavailable") or {}
    pending = record.metrics.get("pending") or {}
    if full and why and set(why) <= set(pending):
        import warnings

        warnings.warn(f"{cell}: n/a on this machine ({'; '.join(sorted(set(pending.values())))})")
        return None
    reasons = "; ".join(f"{k}: {v}" for k, v in sorted(why.items())) or "no reason recorded"
    return f"{cell}: the cell should compute but came out n/a ({reasons})"


@pytest.fixture(autouse=True)
def cells_run(request, monkeypatch) -> list:
    """Every record of every `run_matrix` call the test makes (through `svgbench.runner.run_matrix` or the name its
    module imported); `pytest_runtest_call` below fails the test when one of them is an n/a that should not be."""
    from svgbench import runner

    real, seen = runner.run_matrix, []

    def watched(cfg, log=None):
        summary = real(cfg, log)
        seen.extend(summary.records)
        return summary

    monkeypatch.setattr(runner, "run_matrix", watched)
    if getattr(request.module, "run_matrix", None) is real:
        monkeypatch.setattr(request.module, "run_matrix", watched)
    request.node.svgbench_cells = seen
    return seen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    full = bool(item.config.getoption("--benchmark"))
    problems = [p for p in (na_problem(r, full) for r in getattr(item, "svgbench_cells", ())) if p]
    if problems:
        raise AssertionError("n/a where a value was due:\n  " + "\n  ".join(problems))
    return result
