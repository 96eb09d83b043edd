#!/usr/bin/env python3
"""Set up svgbench's virtual environment (first time, or when pyproject.toml changes) and run a command in it.

    python3 bootstrap.py svgbench run     # the embedded default benchmark
    python3 bootstrap.py pytest           # the tests

Needs only Python >= 3.10 with venv. The environment lives in .venv/ next to this file.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".svgbench-installed"
# torch and torchvision are pinned as a matching pair: a mismatched torchvision fails to import.
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _want() -> str:
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    h.update(" ".join(TORCH).encode())
    return h.hexdigest()


def ensure_env() -> None:
    if STAMP.exists() and STAMP.read_text() == _want():
        return
    if not _bin("python").exists():
        print(f"bootstrap: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    # --no-compile: Python compiles a module when it is first imported instead of pip compiling every file of
    # every package at install (measured on 2 cores: install 126 s -> 65 s; the first import of what svgbench
    # uses 8 s -> 18 s, once)
    pip = [str(_bin("python")), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-compile"]
    print("bootstrap: installing torch, torchvision and svgbench with its test dependencies (a few minutes, once)",
          file=sys.stderr)
    subprocess.run(pip + TORCH, check=True)
    subprocess.run(pip + ["-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(_want())


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_env()
    cmd, args = sys.argv[1], sys.argv[2:]
    exe = _bin(cmd)
    if not exe.exists():
        print(f"bootstrap: no command {cmd!r} in {VENV / 'bin'}", file=sys.stderr)
        return 2
    env = dict(os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([str(exe), *args], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
