"""svgbench's imports run one way: cli -> runner/report -> tasks -> lower parts, with no cycle anywhere.

Every import in the package is read from the source (including imports inside functions, which hide cycles
from Python itself), resolved to a module of svgbench, and checked against the layers below.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import svgbench

PKG = Path(svgbench.__file__).resolve().parent

# layer of each top-level part; a module may import its own layer or a lower one
LAYERS = {
    "cli": 4, "cli_train": 4, "__main__": 4, "api": 4,  # api: svgbench.evaluate, the notebook's `svgbench run`
    "runner": 3, "report": 3, "plots": 3, "findings": 3, "validate": 3, "readme": 3,
    "tasks": 2,
}
LOWER = 1  # metrics, train, diffusion, encoders, cache, store, data, checkpoints, records, errors, registry, ...
FACADE = "svgbench"  # the package's lazy public API (imports nothing at import time)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """svgbench modules imported anywhere in the file (absolute or relative, at any depth)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "svgbench"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "svgbench":
                continue
            for a in node.names:  # "from . import registry" imports a submodule, not the package's names
                if (PKG.parent / (target.replace(".", "/") + f"/{a.name}.py")).exists():
                    out.add(f"{target}.{a.name}")
                else:
                    out.add(target)
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def _layer(module: str) -> int:
    return LAYERS.get(_part(module), LOWER)


def graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) - {_module_name(p)} for p in sorted(PKG.rglob("*.py"))}


def test_every_import_goes_down_or_sideways():
    bad = []
    for mod, deps in graph().items():
        if mod == FACADE:
            continue
        for dep in deps:
            if dep == FACADE:
                bad.append(f"{mod} imports the package facade `svgbench` (import the module that defines the name)")
            elif _layer(dep) > _layer(mod):
                bad.append(f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_cycle_between_modules_or_parts():
    g = graph()
    g.pop(FACADE, None)
    mods = {m: {d for d in deps if d in g} for m, deps in g.items()}
    assert _cycle(mods) is None, f"module import cycle: {' -> '.join(_cycle(mods))}"
    parts = {}
    for m, deps in mods.items():
        parts.setdefault(_part(m), set()).update(_part(d) for d in deps if _part(d) != _part(m))
    assert _cycle(parts) is None, f"cycle between parts of svgbench: {' -> '.join(_cycle(parts))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


HEAVY = ("torch", "timm", "diffusers", "torch_fidelity", "mmseg", "sklearn", "pandas", "matplotlib", "scipy")


@pytest.mark.parametrize("argv, allowed", [
    (["--help"], ()),
    (["run", "--help"], ()),
    (["train", "--help"], ()),
    (["list"], ("torch",)),  # encoder specs come from the encoder modules, which build on torch
])
def test_cli_help_and_list_import_only_what_they_need(argv, allowed):
    code = ("import sys, time, io, contextlib\n"
            "t = time.perf_counter()\n"
            "from svgbench.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            f"        main({argv!r})\n"
            "    except SystemExit:\n"
            "        pass\n"
            f"print(time.perf_counter() - t, *[m for m in {HEAVY!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    seconds, heavy = float(out[0]), set(out[1:])
    print(f"svgbench {' '.join(argv)}: {seconds:.2f} s, heavy modules imported: {sorted(heavy) or 'none'}")
    assert heavy <= set(allowed), f"svgbench {' '.join(argv)} imported {sorted(heavy - set(allowed))}"


def test_python_dash_m_svgbench_works():
    out = subprocess.run([sys.executable, "-m", "svgbench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: svgbench" in out.stdout
