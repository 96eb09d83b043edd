"""Where a cell's time went: its cost model, a section of results/efficiency.md (`report.write_reports`).

For every computed cell, its record's `cost` (the runner's ForwardClock and `flops.achievable_rate`) holds the
time and FLOPs inside diffusion-model forwards and the machine's achievable FLOP/s, measured in the same run
by a sized GEMM in the same arithmetic and thread count. Two ratios follow:

- rate share = achieved FLOP/s / achievable FLOP/s: how close the model forwards run to the machine;
- efficiency = (model FLOPs / achievable FLOP/s) / cell wall time: the share of the cell that the model's
  arithmetic would need at the achievable rate. The rest of the cell is outside model forwards: decoding,
  judge features, statistics, I/O (the columns that records time are shown).

Rates are measured in the run whose cells they judge: shared machines differ from one run to the next, and
CPUs differ in whether they multiply bf16 natively.
"""

from __future__ import annotations

from typing import Iterable

from .records import Record, Results

COLUMNS = ("encoder", "task", "wall_s", "forwards", "model_s", "model_gflop", "dtype", "achieved_gflops",
           "achievable_gflops", "rate_share", "efficiency", "outside_model_s", "decode_s", "stats_s")


def _decode_s(m: dict) -> float | None:
    """Seconds of decoding generated latents, from the per-image times the generation tasks record."""
    if m.get("decode_s_per_image") is not None and m.get("num_samples"):
        return m["decode_s_per_image"] * m["num_samples"]
    curve = m.get("curve") or []
    if curve and all(p.get("decode_s_per_image") is not None for p in curve) and m.get("num_samples"):
        return sum(p["decode_s_per_image"] for p in curve) * m["num_samples"]
    return None


def cell_rows(records: Iterable[Record]) -> list[dict]:
    """One row per computed record (wall time > 0) of those given, slowest first; model columns empty where the
    cell ran no diffusion-model forward."""
    rows = []
    for r in records:
        if not r.wall_s:
            continue
        cost, m = r.cost or {}, r.metrics or {}
        by, rates = cost.get("by_dtype") or {}, cost.get("achievable_flops") or {}
        row = {"encoder": r.encoder, "task": r.task, "wall_s": r.wall_s, "forwards": cost.get("forwards", 0),
               "model_s": cost.get("model_s", 0.0), "model_gflop": (cost.get("model_flops") or 0.0) / 1e9,
               "dtype": "+".join(sorted(by)) or None, "achieved_gflops": None, "achievable_gflops": None,
               "rate_share": None, "efficiency": None, "decode_s": _decode_s(m), "stats_s": m.get("stats_s")}
        if by and row["model_s"] > 0 and all(d in rates for d in by):
            ideal_s = sum(v["flops"] / rates[d] for d, v in by.items())  # model time at the achievable rate
            row["achieved_gflops"] = row["model_gflop"] / row["model_s"]
            row["achievable_gflops"] = row["model_gflop"] / ideal_s if ideal_s > 0 else None
            row["rate_share"] = ideal_s / row["model_s"]
            row["efficiency"] = ideal_s / r.wall_s
        row["outside_model_s"] = r.wall_s - row["model_s"]
        rows.append(row)
    return sorted(rows, key=lambda x: -x["wall_s"])


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def cost_lines(records: Results | Iterable[Record]) -> list[str]:
    """The cost-model section of efficiency.md: one row per computed cell (the newest record of each table row),
    with the machine and rates of the run that computed it; [] when no record has a cost."""
    newest = Results.of(records).newest()
    rows = cell_rows([r for r in newest if r.cost])
    if not rows:
        return []
    machines = {}
    for r in newest:
        c = r.cost or {}
        if c.get("machine"):
            rate = ", ".join(f"{d} {v / 1e9:.1f}" for d, v in sorted((c.get("achievable_flops") or {}).items()))
            m = c["machine"]
            machines[(m.get("cpu"), m.get("threads"), m.get("arithmetic"), rate)] = None
    lines = ["", "## Cost model of each cell", ""]
    for cpu, threads, arithmetic, rate in machines:
        lines.append(f"- {cpu}, {threads} threads, diffusion sampling in {arithmetic}; achievable GFLOP/s "
                     f"measured in that run (best of 5 square GEMMs): {rate or 'not measured (no model forward)'}")
    lines += [
        "",
        "forwards: calls of the diffusion model (on a CPU a sampling batch is evaluated 64 samples a call: "
        "diffusion.generate.MODEL_CHUNK); "
        "model s / GFLOP: time and FLOPs inside diffusion-model forwards (FLOPs counted by torch's "
        "FlopCounterMode); rate share = achieved / achievable FLOP/s of those forwards; efficiency = model FLOPs "
        "at the achievable rate / cell wall time; outside model = wall - model time (decoding, judge features, "
        "statistics, data, I/O; decode and statistics seconds shown where the task records them).",
        "",
        "| encoder | task | wall s | forwards | model s | model GFLOP | dtype | achieved GFLOP/s | achievable "
        "GFLOP/s | rate share | efficiency | outside model s | decode s | statistics s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['encoder']} | {r['task']} | {r['wall_s']:.1f} | {r['forwards']} | {r['model_s']:.1f} | "
            f"{r['model_gflop']:.0f} | {r['dtype'] or ''} | {_fmt(r['achieved_gflops'], '.1f')} | "
            f"{_fmt(r['achievable_gflops'], '.1f')} | {_fmt(r['rate_share'], '.2f')} | {_fmt(r['efficiency'], '.2f')} | "
            f"{r['outside_model_s']:.1f} | {_fmt(r['decode_s'], '.1f')} | {_fmt(r['stats_s'], '.1f')} |")
    total = sum(r["wall_s"] for r in rows)
    model = sum(r["model_s"] for r in rows)
    lines += ["", f"{len(rows)} cells, {total:.1f} s in all, of which {model:.1f} s in model forwards."]
    return lines


