"""`python -m svgbench ...` is the `svgbench` command (and what `torchrun -m svgbench` runs)."""

import sys

from .cli import entry

sys.exit(entry())
