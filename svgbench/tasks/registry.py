"""The task registry: one name -> one task function, its config dataclass, what it needs and its metric specs.

A task is `function(encoder, dataset, config, device=..., progress=...) -> dict of metrics`. Its spec
declares, once, everything the runner, the reports, the scorecard, the plots and the CLI need to know about
it: the config class (strict: unknown fields are errors), what the task needs from an encoder or a dataset
(`needs`), and one `MetricSpec` per reported metric (title, format, direction, scorecard headline, timing,
how its uncertainty is computed). No other list of task names exists.

Built-in tasks are lazy "module:attribute" strings (importing svgbench imports no task module); third-party
tasks arrive through `register_task` in the user's code (a `--plugin` file) or the `svgbench.tasks`
entry-point group. Duplicate names are errors naming the first registrant, never silent overwrites.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..registry import Registry, UnknownNameError, spec_entry_point
from .builtin import BUILTIN_TASKS
from .spec import NEEDS, CurveSpec, MetricSpec, TaskSpec  # noqa: F401  (the registry's vocabulary)

ENTRY_POINT_GROUP = "svgbench.tasks"


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
