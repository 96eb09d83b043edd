"""Published figures from baselines/published.csv (with their sources), as a pandas DataFrame."""

from __future__ import annotations

from pathlib import Path

REQUIRED = ("group", "model", "latent", "metric", "value", "dataset", "source")


def published_path() -> Path:
    return Path(__file__).resolve().parent.parent / "baselines" / "published.csv"


def load_published(path: str | Path | None = None):
    import pandas as pd

    path = Path(path) if path else published_path()
    if not path.exists():
        raise FileNotFoundError(f"published baselines {path} not found")
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if df["source"].isna().any() or (df["source"].astype(str).str.strip() == "").any():
        bad = df.index[df["source"].isna()].tolist()
        raise ValueError(f"{path}: rows {bad} have no source")
    df["kind"] = "published"
    return df
