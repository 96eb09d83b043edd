"""The one registry machinery behind encoders, tasks and datasets: name -> entry, built-ins, entry points.

A `Registry` holds entries (objects with a `source` attribute: who registered them) under checked names. Its
built-ins come from a callable run on first use, so that importing svgbench imports no encoder, task or dataset
module; third-party entries arrive through `register` (the user's code, a `--plugin` file) or the registry's
entry-point group, loaded once on first use. Duplicate names are errors naming the first registrant, never silent
overwrites. `resolve` is the lazy "module:attribute" lookup every lazy entry goes through.
"""

from __future__ import annotations

import importlib
import re
from importlib import metadata
from typing import Any, Callable


def resolve(target: Any) -> Any:
    """The object a lazy "module:attribute" string names (imported now); anything else is returned as is."""
    if not isinstance(target, str):
        return target
    mod, sep, attr = target.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"{target!r} is not a 'module:attribute' reference")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def file_name(name: str) -> str:
    """A registered or family name as one file or folder name: family names carry paths and hub ids
    (diffusers:/data/vae, timm:m@/w.safetensors), which must never become folders. Names of letters, digits and
    ._+- stay as they are; two names that read the same here are told apart by the key or hash beside them."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "_"


def is_reference(value: Any) -> bool:
    """A lazy "module:attribute" string (the form `resolve` takes)."""
    return isinstance(value, str) and ":" in value


def spec_entry_point(spec_class: type) -> Callable[[Any, str], Any]:
    """A registry's `from_entry_point` for entry points that name a spec object (a TaskSpec, a DatasetSpec) of
    the entry point's own name; the spec's `source` becomes the entry point."""
    def load(ep, source: str):
        spec = ep.load()
        if not isinstance(spec, spec_class) or spec.name != ep.name:
            raise TypeError(f"entry point {ep.value!r} must point to a {spec_class.__name__} named {ep.name!r}")
        spec.source = source
        return spec

    return load


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry:
    """Entries of one kind ("encoder", "task", "dataset") by name.

    kind: the word errors use. group: the entry-point group third-party packages register in. name_re / name_rule:
    what a valid name is, and the rule in words. builtins: () -> {name: entry}, run on first use. from_entry_point:
    (entry point, source) -> entry. unknown_error: the KeyError subclass `get` raises. sort_names: list names
    sorted (else in registration order: built-ins first, in their declared order). remove_hint: the call an error
    suggests to free a name.
    """

    def __init__(self, kind: str, group: str, *, name_re: str, name_rule: str,
                 builtins: Callable[[], dict[str, Any]], from_entry_point: Callable[[Any, str], Any],
                 unknown_error: type[KeyError] = UnknownNameError, sort_names: bool = False, remove_hint: str = ""):
        self.kind, self.group = kind, group
        self._name_re, self._name_rule = re.compile(name_re), name_rule
        self._builtins, self._from_entry_point = builtins, from_entry_point
        self._unknown_error, self._sort_names = unknown_error, sort_names
        self._remove_hint = remove_hint or f"unregister_{kind}"
        self._entries: dict[str, Any] = {}
        self._builtins_loaded = False
        self.entry_points_loaded = False

    def check_name(self, name: str) -> None:
        if not isinstance(name, str) or not self._name_re.match(name):
            raise ValueError(f"invalid {self.kind} name {name!r}: use {self._name_rule}")

    def _ensure_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for name, entry in self._builtins().items():
                self._entries.setdefault(name, entry)

    def _load(self) -> None:
        self._ensure_builtins()
        if self.entry_points_loaded:
            return
        self.entry_points_loaded = True
        for ep in metadata.entry_points(group=self.group):
            self.check_name(ep.name)
            if ep.name in self._entries:
                package = ep.dist.name if getattr(ep, "dist", None) else "?"
                raise ValueError(f"entry point {ep.value!r} of package {package} registers {self.kind} {ep.name!r}, "
                                 f"which is already registered by {self._entries[ep.name].source}")
            self._entries[ep.name] = self._from_entry_point(ep, f"entry point {ep.value}")

    def check_free(self, name: str) -> None:
        """A valid name no entry holds yet (else the error naming who registered it)."""
        self.check_name(name)
        self._load()
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered (by {self._entries[name].source}); "
                             f"pick another name or call {self._remove_hint}({name!r}) first")

    def add(self, name: str, entry: Any) -> Any:
        """Register `entry` (its `source` says by whom) under `name`; a taken name is an error."""
        self.check_free(name)
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        self._ensure_builtins()
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries) if self._sort_names else list(self._entries)

    def find(self, name: str) -> Any | None:
        """The entry of `name`, or None."""
        self._load()
        return self._entries.get(name)

    def get(self, name: str) -> Any:
        """The entry of `name`; an unknown name is `unknown_error` listing the known ones."""
        entry = self.find(name)
        if entry is None:
            raise self._unknown_error(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")
        return entry

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def __getitem__(self, name: str) -> Any:
        return self.get(name)
