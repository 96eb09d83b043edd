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
import importlib
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable

ENTRY_POINT_GROUP = "svgbench.tasks"
NEEDS = frozenset({"decoder", "diffusion", "labels", "masks"})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric of a task.

    key: the key in the task's metrics dict. title: its column title. fmt: a str.format spec for tables.
    higher_is_better: None for descriptive counts. headline: a scorecard column (titled `scorecard_title` or
    `title`). timing: a wall-clock measure (goes to efficiency, never to the measured tables).
    network: titled after the feature network that computed it ("judge-FID", "Inception-FID").
    uncertainty: how its interval is computed, in words ("" = none).
    plot: the figure panel group it is drawn in ("understanding", "reconstruction"), or None; label: its
    name in that figure.
    """

    key: str
    title: str
    fmt: str = "{:.4g}"
    higher_is_better: bool | None = None
    headline: bool = False
    scorecard_title: str | None = None
    timing: bool = False
    network: bool = False
    uncertainty: str = ""
    plot: str | None = None
    label: str = ""

    @property
    def headline_title(self) -> str:
        return self.scorecard_title or self.title


@dataclass(frozen=True)
class CurveSpec:
    """A task whose record holds a curve (a list of points) rather than one value per metric: its table is a
    pivot with one row per `series` value and one column per `x` value, cells = `value`. `headline_max_x`:
    the scorecard shows the best `value` among points with x <= it ("few-step")."""

    key: str = "curve"
    series: str = "method"
    x: str = "steps"
    value: str = "fid"
    headline_max_x: int | None = None
    higher_is_better: bool = False
    fmt: str = "{:.2f}"
    value_title: str = "FID"
    x_unit: str = "step"
    headline_title: str = "few-step {network}-FID (<={max_x} steps)"
    headline_at_title: str = "few-step sampler"

    def x_title(self, n) -> str:
        return f"{n} {self.x_unit}" if n == 1 else f"{n} {self.x_unit}s"


@dataclass
class TaskSpec:
    """A registered task. `function` / `config` are callables/classes or lazy "module:attribute" strings.
    `extra_columns`: optional (record) -> {column title: value} for derived columns of the task table, formatted
    with `extra_columns_fmt`.
    `missing_reason`: optional (record, series, x) -> why a curve cell is n/a."""

    name: str
    function: Callable | str
    config: type | str
    metrics: tuple[MetricSpec, ...] = ()
    needs: frozenset[str] = frozenset()
    description: str = ""
    curve: CurveSpec | None = None
    extra_columns: Callable | str | None = None
    missing_reason: Callable | str | None = None
    source: str = "builtin"
    extra_columns_fmt: str = "{}"
    note: str = ""  # a paragraph under the task table's title (what rows, columns and cells are)
    file_fields: tuple[str, ...] = ()  # config fields naming files: their content hash goes into the cell's key

    def _resolve(self, attr: str):
        value = getattr(self, attr)
        if isinstance(value, str):
            mod, _, name = value.partition(":")
            value = getattr(importlib.import_module(mod), name)
            setattr(self, attr, value)
        return value

    def run(self) -> Callable:
        return self._resolve("function")

    def config_class(self) -> type:
        return self._resolve("config")

    def extra_columns_fn(self) -> Callable | None:
        return None if self.extra_columns is None else self._resolve("extra_columns")

    def missing_reason_fn(self) -> Callable | None:
        return None if self.missing_reason is None else self._resolve("missing_reason")

    def metric(self, key: str) -> MetricSpec | None:
        return next((m for m in self.metrics if m.key == key), None)

    def table_metrics(self) -> list[MetricSpec]:
        return [m for m in self.metrics if not m.timing]

    def headline_metrics(self) -> list[MetricSpec]:
        return [m for m in self.metrics if m.headline]

    def config_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config_class())]

    def make_config(self, overrides: dict, *, where: str = "") -> object:
        """The task's config from `overrides`; an unknown field is an error listing the valid ones."""
        fields = self.config_fields()
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(f"{where or 'task config'}: task {self.name!r} has no config field "
                             f"{', '.join(map(repr, unknown))}; fields: {', '.join(fields)}")
        return self.config_class()(**overrides)


_REGISTRY: dict[str, TaskSpec] = {}
_entry_points_loaded = False


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid task name {name!r}: use lower-case letters, digits, '_' and '-'")


def _ensure_builtins() -> None:
    from .builtin import BUILTIN_TASKS

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
                  extra_columns_fmt: str = "{}", note: str = "", file_fields=(), source: str = "user") -> TaskSpec:
    """Register a task; returns its spec. `needs` is a subset of {"decoder", "diffusion", "labels", "masks"}:
    an encoder without a decoder gets n/a (with the reason) for a task that needs one."""
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
    metrics = tuple(metrics)
    keys = [m.key for m in metrics]
    if len(keys) != len(set(keys)):
        raise ValueError(f"task {name!r}: duplicate metric keys in {keys}")
    spec = TaskSpec(name, function, config, metrics, frozenset(needs), description, curve, extra_columns,
                    missing_reason, source, extra_columns_fmt, note, tuple(file_fields))
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
