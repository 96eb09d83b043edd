"""Figures of the results: pandas frames from `svgbench.report.frames` in, matplotlib Figures out.

Every function draws on matplotlib's Agg canvas (no display, no pyplot state), so the same code serves
`write_reports` and the results notebook. A panel whose frame lacks its data says "no data" instead of
failing. `write_plots` writes the PNGs under results/ atomically.

Frames (columns):
  fid_curve       encoder, data, metric, step, fid
  sampling_curve  encoder, data, metric, method, steps, nfe, fid, ...
  scorecard       encoder, data, PSNR (dB), SSIM, probe top-1 (%), kNN k=20 top-1 (%), seg mIoU (%), judge-FID, ...
  pca_points      encoder, data, x, y, label, class, explained_variance
  samples         encoder, data, metric, fid, png_base64, classes
"""

from __future__ import annotations

import io
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .checkpoints import atomic_write_bytes
from .tasks import get_task, list_tasks
LINESTYLES = {"euler": "-", "heun": "--"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def plot_metrics(group: str) -> list[tuple[str, str]]:
    """(scorecard column, label) of every headline metric drawn in figure panel `group`, from the task registry."""
    return [(m.headline_title, m.label or m.headline_title) for name in list_tasks()
            for m in get_task(name).headline_metrics() if m.plot == group]


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` atomically (a temporary file, then os.replace)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def no_data(ax, title: str = "", why: str = "") -> None:
    ax.text(0.5, 0.5, "no data" + (f"\n{why}" if why else ""), ha="center", va="center", transform=ax.transAxes,
            color="0.45", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def _empty(df: pd.DataFrame | None, *cols: str) -> bool:
    return df is None or df.empty or any(c not in df.columns for c in cols)


def short_data(data) -> str:
    """"shapes/val (embedded, procedural) 64px" -> "shapes/val"."""
    return str(data).split(" (")[0]


def series_labels(df: pd.DataFrame) -> pd.Series:
    """The encoder name, with the dataset added when the frame holds several datasets."""
    if "data" not in df.columns or df["data"].nunique(dropna=False) <= 1:
        return df["encoder"].astype(str)
    return df["encoder"].astype(str) + " (" + df["data"].map(short_data) + ")"


def colours(names) -> dict[str, tuple]:
    from matplotlib import colormaps

    names = list(dict.fromkeys(names))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _metric_name(df: pd.DataFrame, default: str = "FID") -> str:
    if "metric" not in df.columns:
        return default
    names = sorted(str(m) for m in df["metric"].dropna().unique())
    return " / ".join(names) if names else default


def generation_fid_column(scorecard: pd.DataFrame) -> str | None:
    """The scorecard's generation FID column (judge-FID, Inception-FID), or None."""
    for c in scorecard.columns:
        if re.fullmatch(r"(judge|Inception)-FID", str(c)):
            return c
    return None


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# panels: draw into a given Axes
# ---------------------------------------------------------------------------------------------

def _band(ax, g: pd.DataFrame, x: str, colour) -> None:
    """The 95% interval of a curve as a shaded band, where its frame has one (ci_low / ci_high columns)."""
    if "ci_low" not in g.columns or "ci_high" not in g.columns:
        return
    ok = g["ci_low"].map(_finite) & g["ci_high"].map(_finite)
    if ok.any():
        ax.fill_between(g.loc[ok, x], g.loc[ok, "ci_low"].astype(float), g.loc[ok, "ci_high"].astype(float),
                        color=colour, alpha=0.15, linewidth=0)


def draw_fid_vs_train_steps(ax, fid_curve: pd.DataFrame) -> None:
    """One line per encoder: FID of the diffusion model along its training."""
    title = "FID vs diffusion training steps"
    if _empty(fid_curve, "encoder", "step", "fid") or not fid_curve["fid"].map(_finite).any():
        return no_data(ax, title, "no generation fid_curve in the records")
    df = fid_curve[fid_curve["fid"].map(_finite)].copy()
    df["series"] = series_labels(df)
    col = colours(df["series"])
    for name, g in df.groupby("series", sort=True):
        g = g.sort_values("step")
        ax.plot(g["step"], g["fid"].astype(float), marker="o", ms=3, color=col[name], label=name)
        _band(ax, g, "step", col[name])
    ax.set_xlabel("diffusion training steps")
    ax.set_ylabel(_metric_name(df))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def draw_fid_vs_sampler_steps(ax, sampling_curve: pd.DataFrame) -> None:
    """Per encoder one colour; Euler solid, Heun dashed; sampler steps on a log axis."""
    title = "FID vs sampler steps"
    if _empty(sampling_curve, "encoder", "method", "steps", "fid") or not sampling_curve["fid"].map(_finite).any():
        return no_data(ax, title, "no sampling curve in the records")
    from matplotlib.ticker import NullFormatter, NullLocator

    df = sampling_curve[sampling_curve["fid"].map(_finite)].copy()
    df["series"] = series_labels(df)
    col = colours(df["series"])
    for (name, method), g in df.groupby(["series", "method"], sort=True):
        g = g.sort_values("steps")
        ax.plot(g["steps"], g["fid"].astype(float), linestyle=LINESTYLES.get(method, ":"), marker="o", ms=3,
                color=col[name], label=f"{name} {method}")
        _band(ax, g, "steps", col[name])
    ax.set_xscale("log")
    steps = sorted(int(s) for s in df["steps"].unique())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("sampler steps (log)")
    ax.set_ylabel(_metric_name(df))
    ax.set_title(f"{title} (Euler solid, Heun dashed)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)


def _intervals(df: pd.DataFrame, column: str):
    """[(low, high) or None per row] of `column`'s 95% interval columns, or None when the frame has none."""
    lo, hi = f"{column} ci_low", f"{column} ci_high"
    if lo not in df.columns or hi not in df.columns:
        return None
    return [(float(a), float(b)) if _finite(a) and _finite(b) else None for a, b in zip(df[lo], df[hi])]


def _bars(ax, names, groups, ylabel: str, title: str) -> None:
    """groups: [(label, values per name[, (low, high) or None per name])] drawn as grouped bars, with the 95%
    intervals as error bars where given; non-finite values are marked n/a."""
    x = np.arange(len(names))
    width = 0.8 / max(1, len(groups))
    for i, (label, values, *ivs) in enumerate(groups):
        pos = x - 0.4 + width * (i + 0.5)
        ok = [j for j, v in enumerate(values) if _finite(v)]
        ax.bar(pos[ok], [float(values[j]) for j in ok], width, label=label if len(groups) > 1 else None)
        iv = ivs[0] if ivs and ivs[0] is not None else None
        with_iv = [j for j in ok if iv is not None and iv[j] is not None]
        if with_iv:
            v = np.array([float(values[j]) for j in with_iv])
            err = np.array([[v[k] - iv[j][0], iv[j][1] - v[k]] for k, j in enumerate(with_iv)]).T.clip(min=0)
            ax.errorbar(pos[with_iv], v, yerr=err, fmt="none", ecolor="0.2", elinewidth=1, capsize=2)
        for j in (j for j in range(len(values)) if j not in ok):
            ax.text(pos[j], 0.02, "n/a", ha="center", va="bottom", fontsize=7, color="0.4",
                    transform=ax.get_xaxis_transform())
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=7)


def draw_understanding(ax, scorecard: pd.DataFrame) -> None:
    """Grouped bars per encoder: linear-probe top-1, kNN top-1 (k=20), segmentation mIoU."""
    title = "understanding"
    cols = [(c, label) for c, label in plot_metrics("understanding") if not _empty(scorecard, c)]
    if _empty(scorecard, "encoder") or not cols or not any(scorecard[c].map(_finite).any() for c, _ in cols):
        return no_data(ax, title, "no probe / knn / seg records")
    names = list(series_labels(scorecard))
    _bars(ax, names, [(label, list(scorecard[c]), _intervals(scorecard, c)) for c, label in cols], "%",
          f"{title} (bars: 95% intervals)")
    ax.set_ylim(bottom=0)


def draw_metric_bars(ax, scorecard: pd.DataFrame, column: str, title: str | None = None,
                     ylabel: str | None = None) -> None:
    """One bar per encoder for one scorecard column (n/a marked)."""
    title = title or column
    if _empty(scorecard, "encoder", column) or not scorecard[column].map(_finite).any():
        return no_data(ax, title)
    _bars(ax, list(series_labels(scorecard)), [(column, list(scorecard[column]), _intervals(scorecard, column))],
          ylabel or column, title)


def draw_pca(ax, points: pd.DataFrame, title: str = "", class_colours: dict | None = None) -> None:
    """Scatter of one encoder's 2-D PCA points, coloured by class."""
    if _empty(points, "x", "y"):
        return no_data(ax, title)
    cls = points["class"] if "class" in points.columns else pd.Series(["?"] * len(points), index=points.index)
    cls = cls.fillna("?").astype(str)
    class_colours = class_colours or colours(sorted(cls.unique()))
    for name in sorted(cls.unique()):
        m = (cls == name).to_numpy()
        ax.scatter(points["x"].to_numpy()[m], points["y"].to_numpy()[m], s=5, alpha=0.7,
                   color=class_colours.get(name), label=name)
    ev = points["explained_variance"].iloc[0] if "explained_variance" in points.columns else None
    sub = f"\n2 PCs: {100 * float(ev):.1f}% of the variance" if _finite(ev) else ""
    ax.set_title(f"{title}{sub}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_fid_vs_probe(ax, scorecard: pd.DataFrame) -> None:
    """Generation FID against linear-probe top-1, one point per encoder: a latent good at both sits bottom right."""
    title = "generation vs understanding"
    fid = None if _empty(scorecard) else generation_fid_column(scorecard)
    probe = plot_metrics("understanding")[0][0]
    if fid is None or _empty(scorecard, "encoder", probe):
        return no_data(ax, title, "needs generation FID and probe top-1")
    ok = scorecard[fid].map(_finite) & scorecard[probe].map(_finite)
    if not ok.any():
        return no_data(ax, title, "needs generation FID and probe top-1")
    df = scorecard[ok]
    names = list(series_labels(df))
    col = colours(names)
    for name, x, y in zip(names, df[probe].astype(float), df[fid].astype(float)):
        ax.scatter([x], [y], color=col[name], s=30)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(probe)
    ax.set_ylabel(fid)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def fid_vs_train_steps(fid_curve: pd.DataFrame):
    fig = new_figure(6, 4)
    draw_fid_vs_train_steps(fig.add_subplot(1, 1, 1), fid_curve)
    return fig


def fid_vs_sampler_steps(sampling_curve: pd.DataFrame):
    fig = new_figure(6, 4)
    draw_fid_vs_sampler_steps(fig.add_subplot(1, 1, 1), sampling_curve)
    return fig


def understanding(scorecard: pd.DataFrame):
    fig = new_figure(7, 4)
    draw_understanding(fig.add_subplot(1, 1, 1), scorecard)
    return fig


def reconstruction(scorecard: pd.DataFrame):
    fig = new_figure(9, 3.8)
    panels = plot_metrics("reconstruction")
    for i, (col, label) in enumerate(panels):
        draw_metric_bars(fig.add_subplot(1, len(panels), i + 1), scorecard, col, label, col)
    return fig


def discriminability(pca_points: pd.DataFrame, ncols: int = 3):
    """A grid with one PCA scatter per encoder, coloured by class, one legend for all."""
    if _empty(pca_points, "encoder", "x", "y"):
        fig = new_figure(5, 4)
        no_data(fig.add_subplot(1, 1, 1), "PCA of the evaluation features", "no pca_points in the knn records")
        return fig
    df = pca_points.copy()
    df["series"] = series_labels(df)
    groups = sorted(df.groupby("series", sort=True), key=lambda kv: kv[0])
    classes = sorted(df["class"].fillna("?").astype(str).unique()) if "class" in df.columns else ["?"]
    cc = colours(classes)
    ncols = max(1, min(ncols, len(groups)))
    nrows = math.ceil(len(groups) / ncols)
    width, height = 3.6 * ncols + 1.4, 3.4 * nrows + 0.6
    fig = new_figure(width, height)
    for i, (name, g) in enumerate(groups):
        draw_pca(fig.add_subplot(nrows, ncols, i + 1), g, title=name, class_colours=cc)
    right = 1.0
    if len(classes) <= 20:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=cc[c], label=c) for c in classes]
        fig.legend(handles=handles, loc="center right", fontsize=8, title="class")
        right = 1 - 1.3 / width
    fig.subplots_adjust(left=0.02, right=right, bottom=0.02, top=1 - 1.0 / height, hspace=0.3)
    fig.suptitle("PCA of the evaluation features (first two components)", fontsize=11)
    return fig


def overview(frames: dict[str, pd.DataFrame]):
    """One figure: FID vs training steps, FID vs sampler steps, understanding, PSNR, SSIM, FID vs probe."""
    sc = frames.get("scorecard")
    fig = new_figure(16, 9)
    draw_fid_vs_train_steps(fig.add_subplot(2, 3, 1), frames.get("fid_curve"))
    draw_fid_vs_sampler_steps(fig.add_subplot(2, 3, 2), frames.get("sampling_curve"))
    draw_fid_vs_probe(fig.add_subplot(2, 3, 3), sc)
    draw_understanding(fig.add_subplot(2, 3, 4), sc)
    for i, (col, label) in enumerate(plot_metrics("reconstruction")[:2]):
        draw_metric_bars(fig.add_subplot(2, 3, 5 + i), sc, col, label, col)
    datas = set()
    for f in frames.values():
        if f is not None and "data" in getattr(f, "columns", []):
            datas |= {short_data(d) for d in f["data"].dropna().unique()}
    title = "svgbench results" + (f" on {', '.join(sorted(datas))}" if datas else "")
    from .data import find_dataset

    # what each dataset's spec says once about numbers on it ("not ImageNet numbers"); a label starts with its name
    specs = [find_dataset(d.replace(":", "/").split("/")[0]) for d in datas]
    caveats = sorted({s.caveat for s in specs if s is not None and s.caveat})
    if caveats:
        title += f" ({'; '.join(caveats)})"
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def samples(strips: pd.DataFrame):
    """One row per encoder: the first scored samples of its diffusion model (one per class), with its FID."""
    if _empty(strips, "encoder", "png_base64"):
        fig = new_figure(6, 2)
        no_data(fig.add_subplot(1, 1, 1), "generated samples", "no sample strips in the generation records")
        return fig
    import base64

    from PIL import Image

    df = strips.copy()
    df["series"] = series_labels(df)
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in df["png_base64"]]
    width = max(im.shape[1] for im in images)
    fig = new_figure(min(16, 1.2 + width / 50), 0.9 + 1.25 * len(images))
    for i, (im, row) in enumerate(zip(images, df.itertuples())):
        ax = fig.add_subplot(len(images), 1, i + 1)
        ax.imshow(im, interpolation="nearest")
        fid = f"{row.metric} {row.fid:.1f}" if _finite(row.fid) else "FID n/a"
        ax.set_ylabel(f"{row.series}\n{fid}", rotation=0, ha="right", va="center", fontsize=9)
        classes, n = list(row.classes or []), len(row.classes or [])
        ax.set_yticks([])
        if n and i == 0:
            step = im.shape[1] / n
            ax.xaxis.tick_top()
            ax.set_xticks([step * (k + 0.5) for k in range(n)], classes, fontsize=8)
        else:
            ax.set_xticks([])
    fig.suptitle("generated samples (sample i has class i; judge-FID over all scored samples)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


# file name -> figure function of the frames
PLOTS = {
    "fid_vs_train_steps": lambda f: fid_vs_train_steps(f.get("fid_curve")),
    "fid_vs_sampler_steps": lambda f: fid_vs_sampler_steps(f.get("sampling_curve")),
    "understanding": lambda f: understanding(f.get("scorecard")),
    "reconstruction": lambda f: reconstruction(f.get("scorecard")),
    "discriminability": lambda f: discriminability(f.get("pca_points")),
    "samples": lambda f: samples(f.get("samples")),
    "overview": overview,
}


def write_plots(results_dir: str | Path, frames: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write results_dir/<name>.png for each of PLOTS; returns name -> path. A figure that cannot be drawn is
    reported on stderr and skipped, so the tables are never held up by a plot."""
    results_dir = Path(results_dir)
    out = {}
    for name, make in PLOTS.items():
        try:
            out[name] = save_png(make(frames), results_dir / f"{name}.png")
        except Exception as e:  # noqa: BLE001 - a figure must not stop the report
            print(f"warning: {name}.png not written: {type(e).__name__}: {e}", file=sys.stderr)
    return out
