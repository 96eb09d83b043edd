"""Published figures from baselines/published.csv (with their primary sources), as a pandas DataFrame.

Every row cites a primary source: a paper by its arXiv id (and the table or figure), or an official
repository file ("repo owner/name, path"). `load_published` refuses a file with a row that names neither,
or whose source is this repository or a secondary note ("as cited ..."), or whose value is not a number.
"""

from __future__ import annotations

import re
from pathlib import Path

REQUIRED = ("group", "model", "latent", "metric", "value", "dataset", "source")

ARXIV_ID = re.compile(r"arXiv[ :]?\d{4}\.\d{4,5}")
# "repo owner/name, path/to/file": an official repository and a file in it
REPO_FILE = re.compile(r"repo [A-Za-z0-9][\w.-]*/[\w.-]+, [\w./-]+\.\w+")
# sources that point back at this project or at someone else's citation, not at the primary source
SECONDARY = re.compile(r"MISSION\.md|DESIGN\.md|as cited|svgbench|baselines/", re.IGNORECASE)


def published_path() -> Path:
    return Path(__file__).resolve().parent.parent / "baselines" / "published.csv"


def source_problem(source) -> str | None:
    """Why `source` is not a primary source (None when it is one)."""
    text = "" if source is None else str(source).strip()
    if not text or text.lower() == "nan":
        return "no source"
    if SECONDARY.search(text):
        return f"not a primary source (points at this repository or a citation): {text!r}"
    if not (ARXIV_ID.search(text) or REPO_FILE.search(text)):
        return f"names neither an arXiv id nor an official repository file: {text!r}"
    return None


def load_published(path: str | Path | None = None):
    """-> DataFrame of the CSV plus kind="published"; value as float. ValueError naming the row (1-based line
    of the file) on a missing column, a non-numeric value or a source that is not primary."""
    import pandas as pd

    path = Path(path) if path else published_path()
    if not path.exists():
        raise FileNotFoundError(f"published baselines {path} not found")
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    values = pd.to_numeric(df["value"], errors="coerce")
    problems = [f"line {i + 2}: value {v!r} is not a number" for i, v in enumerate(df["value"])
                if pd.isna(values[i])]
    problems += [f"line {i + 2}: {why}" for i, s in enumerate(df["source"]) if (why := source_problem(s))]
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    df["value"] = values.astype(float)
    df["kind"] = "published"
    return df
