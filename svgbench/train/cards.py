"""Model cards for shipped weights: command, seed, data, wall time, training curve and measured metrics.

A card is built from a run directory (config.json + curve.jsonl) and written next to the weights in
svgbench/weights/<name>.md, with the curve as <name>.curve.png. Nothing in a card is typed by hand
but the one-line description.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoints import atomic_write_bytes, file_sha256
from .common import RunDir

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def plot_curve(rows: list[dict], keys: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 40 else None)
        ax.set_xlabel("step")
        ax.set_title(k)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _cell(row: dict, key: str) -> str:
    """A curve value for the card's table, with its interval where the evaluation recorded one."""
    if key not in row:
        return ""
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    return str(row[key]) if lo is None or hi is None else f"{row[key]} [{lo}, {hi}]"


def write_card(name: str, run_dir: str | Path, weights: str | Path, *, description: str, command: str,
               curve_keys: list[str], metrics: dict | None = None, notes: str = "",
               hardware: str = "this CPU") -> Path:
    run = RunDir(run_dir)
    cfg = json.loads((run.path / "config.json").read_text())
    rows = run.curve()
    if not rows:
        raise ValueError(f"run {run_dir} has no curve rows")
    weights = Path(weights)
    digest = file_sha256(weights / "diffusion_pytorch_model.safetensors" if weights.is_dir() else weights, 12)
    plot_curve(rows, curve_keys, WEIGHTS_DIR / f"{name}.curve.png", name)
    last = rows[-1]
    # wall_s restarts in a resumed process: the run's wall time is the sum over its segments
    walls = [r["wall_s"] for r in rows if "wall_s" in r]
    segments = sum(1 for a, b in zip(walls, walls[1:]) if b < a) + 1 if walls else 0
    total_wall = sum(a for a, b in zip(walls, walls[1:] + [-1.0]) if b < a) if walls else None
    table = ["| step | " + " | ".join(curve_keys) + " |", "|---|" + "---|" * len(curve_keys)]
    for r in rows:
        if any(k in r for k in curve_keys if k not in ("loss", "l1")) or r is last:
            table.append(f"| {r['step']} | " + " | ".join(_cell(r, k) for k in curve_keys) + " |")
    ci_keys = [k for k in curve_keys if any(f"{k}_ci_low" in r for r in rows)]
    lines = [
        f"# {name}", "", description, "",
        "Trained by svgbench on its procedural `shapes` data. Numbers here are shapes numbers, not ImageNet numbers.",
        "", f"- weights: `{weights.name}` (sha256 {digest})", f"- command: `{command}`",
        f"- seed: {cfg.get('seed')}", f"- steps: {last['step']}, wall time {round(total_wall, 1) if walls else '?'} s on {hardware}"
        + (f" (in {segments} processes: resumed from checkpoints)" if segments > 1 else ""),
        "", "## Config", "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", "",
        "## Training curve", "", f"![curve]({Path(name).name}.curve.png)", "", *table, "",
    ]
    if ci_keys:
        lines += [f"[low, high]: the 95% interval of {', '.join(ci_keys)} at that step, as the evaluation recorded it.",
                  ""]
    if metrics:
        lines += ["## Measured", "", *[f"- {k}: {v}" for k, v in metrics.items()], ""]
    if notes:
        lines += ["## Notes", "", notes, ""]
    path = WEIGHTS_DIR / f"{name}.md"
    lines += kept_history(path)
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path


HISTORY = "## History"


def kept_history(card: Path) -> list[str]:
    """The hand-written `## History` section of an existing card (to the next `## ` heading or the end), as
    lines: the exporter writes every other section afresh and carries this one over, so a re-export keeps
    what people wrote about earlier runs."""
    if not card.exists():
        return []
    out: list[str] = []
    for line in card.read_text().splitlines():
        if out and line.startswith("## "):
            break
        if out or line.strip() == HISTORY:
            out.append(line)
    return out + [""] if out and out[-1].strip() else out
