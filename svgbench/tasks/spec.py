"""What a task declares: its metric specs, its curve (if its record holds one), and the task spec itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..data.registry import DATA_NEEDS
from ..registry import resolve

# what a task may need from an encoder (its abilities) and from its data (DATA_NEEDS: "labels", "masks", "train":
# a training split); a cell whose encoder or data lacks one is recorded as n/a with the reason
NEEDS = frozenset({"decoder", "diffusion", "encode", "features"}) | DATA_NEEDS


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
    optional: computed by one protocol only (sFID: the ADM evaluator's): a table column only where some record
    has it, computed or with its reason.
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
    optional: bool = False

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
    uncertainty: str = ""  # what a point's interval resamples (its legend line), when points carry ci_low / ci_high

    def x_title(self, n) -> str:
        return f"{n} {self.x_unit}" if n == 1 else f"{n} {self.x_unit}s"


@dataclass
class TaskSpec:
    """A registered task. `function` / `config` are callables/classes or lazy "module:attribute" strings.
    `extra_columns`: optional (Record) -> {column title: value} for derived columns of the task table, formatted
    with `extra_columns_fmt`.
    `missing_reason`: optional (Record, series, x) -> why a curve cell is n/a.

    `version`: the version of the task's code and protocol. It enters every cell's key and record. Bump it
    whenever a change can move a number: the task function or a metric it calls, its protocol, a default of
    its config, a model or file it loads, a dependency called in a way that changes results. The next
    `svgbench run` then reports the task's old records as stale and recomputes them (`--keep-stale` keeps them,
    labelled stale in every table), and only them. A change that cannot move a number (a faster path with
    identical output, a comment, a column title) keeps the version."""

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
    # (encoder) -> {name: path}: files outside the config that the cell's numbers depend on (a shipped model);
    # their content hash (None: absent) goes into the cell's key, so replacing one recomputes the cell
    key_files: Callable | str | None = None
    version: int = 1  # bump whenever a change can move a number (see the class docstring)

    def _resolve(self, attr: str):
        value = getattr(self, attr)
        if isinstance(value, str):
            value = resolve(value)
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

    def key_files_of(self, encoder) -> dict:
        return {} if self.key_files is None else self._resolve("key_files")(encoder)

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


# the encoder roles a finding compares (svgbench.tasks.comparison.encoder_roles reads them from the records'
# specs): SVG, the SSL encoder it wraps, its decoder without the residual branch, the VAE baseline, and the VAE as
# wide as SVG's latent
ROLES = ("svg", "ssl", "dino_only", "vae", "vae_wide")


def vae_name(role: str | None) -> str:
    """The VAE of `role` in a claim's words."""
    return "same-width VAE" if role == "vae_wide" else "VAE"


@dataclass(frozen=True)
class Coverage:
    """The level a finding's interval states: one measured in the regime the finding uses it in, and how."""

    level: float
    basis: str


@dataclass
class FindingSpec:
    """A registered finding: a claim checked on the records of the tasks it `reads`, one table row per dataset.

    `function(spec, results, data, roles) -> row` is a callable or a lazy "module:attribute" string: `results` the
    records (svgbench.records.Results), `data` the data key of the row, `roles` role -> encoder name (None where no
    record has that role); it returns one row of the findings table (svgbench.tasks.comparison.finding_row).
    `claim`: the claim in words; "{metric}" in it stands for the metric compared (`metric`, or the one the function
    picked). `premise`: not a claim of the paper but what the comparisons rest on (the baselines' own strength),
    listed apart. `vae_role`: the VAE role it compares SVG with ("vae", or "vae_wide" for the matched-capacity
    rows). `requires_role`: a role without which the finding has no row at all (the matched-capacity rows need a
    VAE as wide as SVG's latent), where a missing role of any other finding is an inconclusive row. `coverage`: the
    level its interval states, measured (None: the function states its interval's own, nominal, level)."""

    id: str
    claim: str
    reads: tuple[str, ...]
    function: Callable | str
    metric: str = ""
    premise: bool = False
    vae_role: str | None = None
    requires_role: str | None = None
    coverage: Coverage | None = None
    source: str = "builtin"

    @property
    def name(self) -> str:  # the registry's word for the id
        return self.id

    def run(self) -> Callable:
        if isinstance(self.function, str):
            self.function = resolve(self.function)
        return self.function

    def claim_text(self, metric: str | None = None) -> str:
        return self.claim.replace("{metric}", metric or self.metric)
