"""The task registry: one name -> one task function, its config dataclass, what it needs and its metric specs.

A task is `function(encoder, dataset, config, device=..., progress=...) -> dict of metrics`. Its spec
declares, once, everything the runner, the reports, the scorecard, the plots and the CLI need to know about
it: the config class (strict: unknown fields are errors), what the task needs from an encoder or a dataset
(`needs`), and one `MetricSpec` per reported metric (title, format, direction, scorecard headline, timing,
how its uncertainty is computed). No other list of task names exists.

Built-in tasks are lazy "module:attribute" strings (importing svgbench imports no task module); third-party
tasks arrive through `register_task` in the user's code (a `--plugin` file) or the `svgbench.tasks`
entry-point group. Duplicate names are errors naming the first registrant, never silent overwrites.

Findings (claims checked on the records of the tasks they read: one row of results/findings.md per dataset) are
registered the same way, beside the tasks: `register_finding`, the `svgbench.findings` entry-point group (an entry
point names a `FindingSpec`), a `--plugin` file; the findings table runs them in registration order, the
built-ins (the SVG paper's claims) first.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..registry import Registry, UnknownNameError, spec_entry_point
from .builtin import BUILTIN_TASKS
from .builtin_findings import BUILTIN_FINDINGS
# the registry's vocabulary
from .spec import NEEDS, ROLES, Coverage, CurveSpec, FindingSpec, MetricSpec, TaskSpec  # noqa: F401

ENTRY_POINT_GROUP = "svgbench.tasks"
FINDINGS_ENTRY_POINT_GROUP = "svgbench.findings"


class UnknownTaskError(UnknownNameError):
    pass


TASKS = Registry("task", ENTRY_POINT_GROUP, name_re=r"^[a-z0-9][a-z0-9_-]*$",
                 name_rule="lower-case letters, digits, '_' and '-'",
                 builtins=lambda: {spec.name: spec for spec in BUILTIN_TASKS}, from_entry_point=spec_entry_point(TaskSpec),
                 unknown_error=UnknownTaskError)


def register_task(name: str, function: Callable | str, config: type | str, *, metrics=(), needs=(),
                  description: str = "", curve: CurveSpec | None = None, extra_columns=None, missing_reason=None,
                  extra_columns_fmt: str = "{}", note: str = "", file_fields=(), key_files=None,
                  source: str = "user", version: int = 1) -> TaskSpec:
    """Register a task; returns its spec. `needs` is a subset of NEEDS: what it needs from an encoder ("decoder",
    "diffusion", "encode", "features") and from the data ("labels", "masks", "train": a training split); an encoder
    without a decoder, or data without masks, gets n/a (with the reason) for a task that needs one. `version` (a positive
    integer) enters every cell's key and record: bump it whenever a change to the task can move a number, and
    the next run recomputes the task's cells, reporting the old records as stale (see `TaskSpec`)."""
    TASKS.check_free(name)
    bad = set(needs) - NEEDS
    if bad:
        raise ValueError(f"task {name!r}: unknown needs {sorted(bad)}; known: {sorted(NEEDS)}")
    if isinstance(config, type) and not dataclasses.is_dataclass(config):
        raise TypeError(f"task {name!r}: config must be a dataclass, got {config.__name__}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"task {name!r}: version must be a positive integer, got {version!r}")
    metrics = tuple(metrics)
    keys = [m.key for m in metrics]
    if len(keys) != len(set(keys)):
        raise ValueError(f"task {name!r}: duplicate metric keys in {keys}")
    spec = TaskSpec(name, function, config, metrics, frozenset(needs), description, curve, extra_columns,
                    missing_reason, source, extra_columns_fmt, note, tuple(file_fields), key_files, version)
    TASKS.add(name, spec)
    return spec


unregister_task = TASKS.remove
list_tasks = TASKS.names  # built-ins in their table order, then the others in registration order
get_task = TASKS.get  # an unknown name: UnknownTaskError listing the registered ones


def task_specs() -> list[TaskSpec]:
    return [get_task(n) for n in list_tasks()]


class UnknownFindingError(UnknownNameError):
    pass


FINDINGS = Registry("finding", FINDINGS_ENTRY_POINT_GROUP, name_re=r"^[A-Za-z][A-Za-z0-9_-]*$",
                    name_rule="a letter, then letters, digits, '_' and '-' (e.g. F4, X1b)",
                    builtins=lambda: {spec.id: spec for spec in BUILTIN_FINDINGS},
                    from_entry_point=spec_entry_point(FindingSpec), unknown_error=UnknownFindingError)


def register_finding(id: str, claim: str, function: Callable | str, *, reads, metric: str = "", premise: bool = False,
                     vae_role: str | None = None, requires_role: str | None = None, coverage: Coverage | None = None,
                     source: str = "user") -> FindingSpec:
    """Register a finding; returns its spec. `function(spec, results, data, roles) -> row` (see `FindingSpec`;
    svgbench.tasks.comparison has the row builder, the verdicts and the paired difference the built-ins use).
    `reads`: the registered tasks whose records it compares; on a dataset where one of them has no record, its row
    is inconclusive without calling `function`. `coverage`: the level its interval states, as measured."""
    FINDINGS.check_free(id)
    reads = (reads,) if isinstance(reads, str) else tuple(reads)
    if not reads:
        raise ValueError(f"finding {id!r}: `reads` names no task; give the tasks whose records it compares")
    unknown = [t for t in reads if t not in TASKS]
    if unknown:
        raise ValueError(f"finding {id!r}: reads unknown task(s) {', '.join(map(repr, unknown))}; registered tasks: "
                         f"{', '.join(list_tasks())} (register the task first)")
    for what, role in (("vae_role", vae_role), ("requires_role", requires_role)):
        if role is not None and role not in ROLES:
            raise ValueError(f"finding {id!r}: {what} {role!r} is not an encoder role; roles: {', '.join(ROLES)}")
    if coverage is not None and not (isinstance(coverage, Coverage) and 0 < coverage.level <= 1):
        raise ValueError(f"finding {id!r}: coverage must be a Coverage(level in (0, 1], basis), got {coverage!r}")
    return FINDINGS.add(id, FindingSpec(id, claim, reads, function, metric, premise, vae_role, requires_role,
                                        coverage, source))


unregister_finding = FINDINGS.remove
list_findings = FINDINGS.names  # built-ins in the findings table's order, then the others in registration order
get_finding = FINDINGS.get  # an unknown id: UnknownFindingError listing the registered ones


def finding_specs() -> list[FindingSpec]:
    return [get_finding(n) for n in list_findings()]
