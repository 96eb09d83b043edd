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
import re
from importlib import metadata
from typing import Callable

from .builtin import BUILTIN_TASKS
from .spec import NEEDS, CurveSpec, MetricSpec, TaskSpec  # noqa: F401  (the registry's vocabulary)

ENTRY_POINT_GROUP = "svgbench.tasks"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


_REGISTRY: dict[str, TaskSpec] = {}
_entry_points_loaded = False


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid task name {name!r}: use lower-case letters, digits, '_' and '-'")


def _ensure_builtins() -> None:
    for spec in BUILTIN_TASKS:
        _REGISTRY.setdefault(spec.name, spec)


def _load_entry_points() -> None:
    global _entry_points_loaded
    _ensure_builtins()
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        _check_name(ep.name)
        if ep.name in _REGISTRY:
            raise ValueError(f"entry point {ep.value!r} registers task {ep.name!r}, which is already registered "
                             f"by {_REGISTRY[ep.name].source}")
        spec = ep.load()
        if not isinstance(spec, TaskSpec) or spec.name != ep.name:
            raise TypeError(f"entry point {ep.value!r} must point to a TaskSpec named {ep.name!r}")
        spec.source = f"entry point {ep.value}"
        _REGISTRY[ep.name] = spec


def register_task(name: str, function: Callable | str, config: type | str, *, metrics=(), needs=(),
                  description: str = "", curve: CurveSpec | None = None, extra_columns=None, missing_reason=None,
                  extra_columns_fmt: str = "{}", note: str = "", file_fields=(), key_files=None,
                  source: str = "user", version: int = 1) -> TaskSpec:
    """Register a task; returns its spec. `needs` is a subset of {"decoder", "diffusion", "labels", "masks"}:
    an encoder without a decoder gets n/a (with the reason) for a task that needs one. `version` (a positive
    integer) enters every cell's key and record: bump it whenever a change to the task can move a number, and
    the next run recomputes the task's cells, reporting the old records as stale (see `TaskSpec`)."""
    _check_name(name)
    _load_entry_points()
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered (by {_REGISTRY[name].source}); pick another name "
                         f"or call unregister_task({name!r}) first")
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
    _REGISTRY[name] = spec
    return spec


def unregister_task(name: str) -> None:
    _ensure_builtins()
    _REGISTRY.pop(name, None)


def list_tasks() -> list[str]:
    """Registered task names: built-ins in their table order, then the others in registration order."""
    _load_entry_points()
    return list(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    _load_entry_points()
    if name not in _REGISTRY:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def task_specs() -> list[TaskSpec]:
    return [get_task(n) for n in list_tasks()]
