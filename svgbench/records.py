"""Result records: one JSON file per (task, encoder, dataset, config) cell, typed and versioned.

`Record` is the schema; `to_json` / `from_json` are the only way records are written and read, so a file
that is truncated, corrupt, of another schema version or of another cell is reported (and recomputed by
the runner), never half-read. Helpers here are what every reader of records shares (the report, the
findings, the task tables' hooks).

Schema history: version 1 (svgbench 0.1.0) is the same fields as an untyped dict; it loads unchanged as
version 2 (version 2 adds the explicit schema check and strict field set), so finished cells survive.
Version 3 adds what ties a record to the code that made it: `task_version` (the task's declared version,
part of the cell's key), `cell` (the key without the task version: the same cell across task versions),
`svgbench_version`, `git_commit` and `git_dirty`; and `not_applicable`, the runner's reason a cell cannot run
(None: it ran). Records of versions 1 and 2 load with `task_version` None: made before tasks declared
versions, so `stale_reason` calls them stale.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .checkpoints import atomic_write_bytes
from .registry import file_name

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # older schemas this version reads as they are (see the module docstring)


@dataclass
class Record:
    """One finished cell. `metrics` is the task's flat dict: metric keys per the task's metric specs, plus
    `unavailable` (metric -> reason, for every n/a) and `pending` (metric -> reason, for an n/a that depends on
    this machine, e.g. feature-network weights not yet on it: the runner recomputes such a cell on rerun)."""

    key: str
    task: str
    encoder: str
    metrics: dict
    config: dict
    data: dict
    spec: dict
    weights_hash: str | None = None
    encoder_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    device_name: str = ""
    wall_s: float = 0.0
    # where the cell's time went (runner: ForwardClock): model forwards' seconds and FLOPs by arithmetic
    cost: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    # unix time the cell was computed: of several records of one (task, encoder, data), e.g. before and after
    # new weights, the tables show the newest (0: written before records had it)
    finished: float = 0.0
    record_version: int = SCHEMA_VERSION
    # the code that made it: the task's declared version (None: made before tasks declared versions), the cell's
    # key without it, svgbench's version and, from a git checkout, its commit and whether the tree had changes
    task_version: int | None = None
    cell: str = ""
    svgbench_version: str = ""
    git_commit: str | None = None
    git_dirty: bool | None = None
    # the runner's reason the cell cannot run here (the task's needs against the encoder and data: e.g. no
    # decoder), None when the cell ran: an n/a record without it is a cell that should have computed
    not_applicable: str | None = None
    # why this record is stale (another task version than the running code's), set by whoever reads it against
    # the registered tasks (`mark_stale`, the runner's --keep-stale); never written to disk
    stale: str | None = None
    # the options of the `svgbench run` that computed it (--config file and flags merged; empty from the API)
    run_options: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        # allow_nan=False: a record never holds Infinity/NaN (non-finite metrics are n/a with their reason)
        d = {k: v for k, v in self.as_dict().items() if k != "stale"}  # relative to the reader's code: not stored
        return json.dumps(d, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, rec: dict, key: str | None = None) -> "Record":
        """Validate `rec` and build the record; raises ValueError saying what is wrong."""
        if not isinstance(rec, dict):
            raise ValueError(f"holds a JSON {type(rec).__name__}, not a record")
        version = rec.get("record_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"schema version {version!r}, this svgbench reads {READABLE_VERSIONS}: recomputing")
        if key is not None and rec.get("key") != key:
            raise ValueError(f"its key {rec.get('key')!r} is not the cell's key {key!r}")
        if not isinstance(rec.get("metrics"), dict):
            raise ValueError("it has no metrics")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("key", "task", "encoder", "config", "data", "spec") if n not in rec]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        known = {k: v for k, v in rec.items() if k in names and k != "stale"}
        known["record_version"] = SCHEMA_VERSION
        return cls(**known)

    @classmethod
    def from_json(cls, text: str, key: str | None = None) -> "Record":
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON (truncated or corrupt: {e.msg} at char {e.pos})") from None
        return cls.from_dict(rec, key)


def record_path(results_dir: str | Path, task: str, encoder: str, key: str) -> Path:
    # the key hashes the full name, so two names that read the same as a file name still get two files
    return Path(results_dir) / "records" / task / f"{file_name(encoder)}__{key}.json"


def write_record(path: Path, record: Record) -> None:
    atomic_write_bytes(path, record.to_json().encode())


def read_record(path: Path, key: str | None = None) -> Record:
    """The record at `path`; raises ValueError saying what is wrong when it is not a finished record."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"not text ({e.reason})") from None
    return Record.from_json(text, key)


def load_records(results_dir: str | Path, task: str | None = None) -> list[Record]:
    """Every readable record (an unreadable file is skipped with a warning naming it, never half-read), the
    oldest `finished` first, so that of several records of one cell the last is the newest, not whichever file
    name sorts last."""
    root = Path(results_dir) / "records"
    pattern = f"{task}/*.json" if task else "*/*.json"
    out = []
    for p in sorted(root.glob(pattern)):
        try:
            out.append(read_record(p))
        except (ValueError, OSError) as e:
            print(f"warning: skipping record {p}: {e}", file=sys.stderr)
    return sorted(out, key=lambda r: r.finished or 0.0)  # stable: ties keep the path order


# ---------------------------------------------------------------------------------------------
# what readers of records share
# ---------------------------------------------------------------------------------------------

def stale_reason(record: Record, version: int) -> str | None:
    """Why `record` is stale against its task at `version` (another task version made it), or None."""
    made = record.task_version
    if made == version:
        return None
    by = f"task version {made}" if made is not None else "a task version from before tasks declared versions"
    return f"made by {by}; `{record.task}` is now version {version}"


def mark_stale(records: Iterable[Record], versions: dict[str, int], legacy: bool = True) -> list[Record]:
    """Set each record's `stale` (its reason, or None) against `versions` (task name -> its registered version,
    e.g. `{t.name: t.version for t in task_specs()}`); a task absent from `versions` is left as it is. With
    `legacy` False, a record without a task version (made before tasks declared them, or written by hand) is
    left as it is too."""
    records = list(records)
    for r in records:
        if r.task in versions and (legacy or r.task_version is not None):
            r.stale = stale_reason(r, versions[r.task])
    return records


def stale_label(record: Record) -> str:
    """" (stale)" after a row's name when the record is stale, else ""."""
    return " (stale)" if record.stale else ""


def data_label(data: dict) -> str:
    """The row label of records on `data` (a record's data config), as its dataset's spec words it."""
    from .data import find_dataset

    spec = find_dataset(data["name"])
    if spec is not None:
        return spec.label(data)
    # a dataset whose plugin is not loaded (svgbench report without --plugin) still reports
    where = f":{data['root']}" if data.get("root") else ""
    return f"{data['name']}{where}/{data['split']} {data['resolution']}px"


def feature_network_prefix(record: Record) -> str:
    """The name that prefixes a generation metric of `record`: "judge" (svgbench's shapes judge) or "Inception"."""
    label = str(record.metrics.get("feature_network") or "").lower()
    if label.startswith("judge"):
        return "judge"
    if label.startswith("inception"):
        return "Inception"
    from .data import find_dataset

    spec = find_dataset(record.data["name"])
    return "judge" if spec is not None and spec.feature_network == "judge" else "Inception"


class Results:
    """The records of one results folder (or of a run), with each cell's newest record found once.

    `records`: every record, the oldest `finished` first. Two views of the newest records, built in one pass:
    - `latest(task)`: the rows of `task`'s table, (encoder, data label) -> its newest record, ordered by data
      label, then encoder. A newest record that is stale (`stale` set: made by another task version) comes as
      "<encoder> (stale)", so every table built from here labels it, and nothing looking an encoder up by name
      takes its numbers as current;
    - `cell(task, encoder, data_key)`: the newest record of one cell, by the data's key (what the findings
      compare: two datasets with one label, e.g. two sizes, stay apart).
    `versions` (task -> its registered version) marks stale records first (see `mark_stale`, with `legacy`).
    """

    def __init__(self, records: Iterable[Record] = (), versions: dict[str, int] | None = None, legacy: bool = True):
        records = list(records)
        wrong = next((r for r in records if not isinstance(r, Record)), None)
        if wrong is not None:  # e.g. a dict from before records were typed: say the fix, not an AttributeError later
            raise TypeError(f"Results takes Record objects (load_records and read_record give them), not "
                            f"{type(wrong).__name__}: Record.from_dict(d) makes one from a record's dict")
        self.records = sorted(records, key=lambda r: r.finished or 0.0)  # stable: a run's order among ties
        if versions is not None:
            mark_stale(self.records, versions, legacy)
        cells, rows = {}, {}
        for r in self.records:  # oldest first: the last one of a key is its newest
            cells[(r.task, r.encoder, data_key(r))] = r
            rows.setdefault(r.task, {})[(r.encoder, data_label(r.data))] = r
        self._cells = cells
        self._rows = {}
        for t, by in rows.items():  # a stale record relabelled, its row named by the label
            shown = sorted(((label, _row_record(r)) for (_, label), r in by.items()),
                           key=lambda lr: (lr[0], lr[1].encoder))
            self._rows[t] = {(r.encoder, label): r for label, r in shown}

    @classmethod
    def load(cls, results_dir: str | Path, versions: dict[str, int] | None = None,
             legacy: bool = True) -> "Results":
        return cls(load_records(results_dir), versions, legacy)

    @classmethod
    def of(cls, records: "Results | Iterable[Record]") -> "Results":
        """`records` as Results (itself when it is one)."""
        return records if isinstance(records, Results) else cls(records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def tasks(self) -> list[str]:
        """The tasks with records, sorted."""
        return sorted(self._rows)

    def latest(self, task: str) -> dict[tuple[str, str], Record]:
        return self._rows.get(task, {})

    def rows(self) -> Iterator[tuple[str, tuple[str, str], Record]]:
        """(task, (encoder, data label), its newest record) of every table row, task by task in the order they
        were first recorded, each task's rows as `latest` orders them."""
        return ((t, k, r) for t, by in self._rows.items() for k, r in by.items())

    def newest(self) -> list[Record]:
        """The newest record of every table row, in the order of `rows`."""
        return [r for _, _, r in self.rows()]

    def cell(self, task: str, encoder: str, data: str) -> Record | None:
        return self._cells.get((task, encoder, data))

    def cells(self) -> Iterable[tuple[str, str, str]]:
        """The (task, encoder, data key) of every cell with a record (`cell` gives its newest)."""
        return self._cells.keys()

    def data_keys(self) -> list[str]:
        """The data keys of the records, sorted."""
        return sorted({d for (_, _, d) in self._cells})


def data_key(record: Record) -> str:
    """The key of the data `record` was measured on (one dataset, split, size and resolution)."""
    return str(record.data.get("key", ""))


def _row_record(record: Record) -> Record:
    return dataclasses.replace(record, encoder=record.encoder + stale_label(record)) if record.stale else record


def steps_label(n: int) -> str:
    """"1 step", "4 steps": sampler step counts in tables and findings."""
    return "1 step" if n == 1 else f"{n} steps"


def finite_number(value):
    """A finite number, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if isinstance(value, float) and not math.isfinite(value) else value
