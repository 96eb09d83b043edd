"""svgbench's exceptions, and how a user-fixable one reaches the terminal.

`UserError` is a problem the user can fix (a missing file, a refused image mode, a folder that
cannot be written). The CLI prints it as one line, "svgbench: <what is wrong>; <what to do>", and
exits with status 2; the traceback is shown only with `--debug` or SVGBENCH_DEBUG=1. Any other
exception is an internal bug and keeps its traceback.
"""

from __future__ import annotations

import os

EXIT_USER_ERROR = 2  # argparse's status for a bad command line; a bad input is the same kind of fault


class SvgbenchError(Exception):
    """Base of every exception svgbench raises on purpose."""


class UserError(SvgbenchError):
    """An input the user can fix. The message names the input (path, option or encoder) and says
    what to do; `input` and `fix`, when given, are those two parts on their own."""

    def __init__(self, message: str, *, input: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.input = input
        self.fix = fix


def debug_enabled(flag: bool = False) -> bool:
    """True when tracebacks of user errors are wanted: `--debug` given or SVGBENCH_DEBUG set to 1/true/yes."""
    return bool(flag) or os.environ.get("SVGBENCH_DEBUG", "").strip().lower() in ("1", "true", "yes")


def format_user_error(exc: BaseException, prog: str = "svgbench") -> str:
    """`exc` as the line(s) the CLI prints: "<prog>: <message>", without a doubled prefix.

    A message that lists several files keeps its list on the following lines; everything else is
    one line.
    """
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = text.strip() or type(exc).__name__
    return text if text.startswith(f"{prog}:") or text.startswith(f"{prog} ") else f"{prog}: {text}"


class DataError(UserError, ValueError):
    """A dataset on disk, or a data option, that cannot be used as it is; the message names the
    file, folder or option and says what to do."""
