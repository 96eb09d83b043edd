"""Tables: built from records only; the same command twice gives identical tables; timings kept apart.
The scorecard keeps measured and published rows apart; the plots are written, with or without their data."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from svgbench import plots
from svgbench.data import DataConfig
from svgbench.report import (frames, sampling_table, scorecard_table, scorecard_unavailable, write_reports,
                             write_scorecard)
from svgbench.records import SCHEMA_VERSION as RECORD_VERSION
from svgbench.records import Record, write_record
from svgbench.runner import RunConfig, run_matrix

PLOT_FILES = ("fid_vs_train_steps", "fid_vs_sampler_steps", "understanding", "reconstruction", "discriminability",
              "samples", "overview")
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# synthetic, well-formed records (the shapes of svgbench.runner's records, numbers made up)
# ---------------------------------------------------------------------------------------------

DATA = {"name": "shapes", "split": "val", "resolution": 64, "size": 512, "root": None, "seed": 0,
        "max_objects": 1, "convert_mode": False, "key": "shapes-val-64px-synthetic"}
CLASSES = ["circle", "square", "triangle", "star"]
JUDGE = "judge (svgbench shapes judge; not Inception)"
NO_MODEL = "no shipped diffusion model matches encoder 'tiny-vae'; run with --train-diffusion"
NO_INCEPTION = "rFID needs torch-fidelity's inception-v3-compat weights (set SVGBENCH_INCEPTION_WEIGHTS)"
ENCODERS = {  # name -> (has decoder, quality in [0, 1])
    "tiny-svg": (True, 0.9),
    "tiny-vae": (True, 0.5),
    "tiny-ssl": (False, 0.8),
}


def _record(task, encoder, metrics, config=None) -> Record:
    has_decoder, _ = ENCODERS[encoder]
    return Record.from_dict({"record_version": RECORD_VERSION, "key": f"{task[:3]}{encoder}"[:12], "task": task, "encoder": encoder,
            "encoder_kwargs": {}, "weights_hash": f"hash-{encoder}", "data": dict(DATA), "config": config or {},
            "seed": 0, "metrics": metrics, "device": "cpu", "device_name": "cpu (test)", "wall_s": 1.5,
            "spec": {"name": encoder, "weights": "random", "latent_shape": [8, 8, 8], "has_decoder": has_decoder}})


def _pca(q, n=60):
    g = torch.Generator().manual_seed(int(q * 100))
    labels = [i % len(CLASSES) for i in range(n)]
    centres = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [0.0, -3.0]]) * q
    xy = centres[labels] + torch.randn(n, 2, generator=g)
    return {"xy": [[round(float(a), 4), round(float(b), 4)] for a, b in xy], "labels": labels, "classes": CLASSES,
            "explained_variance": round(0.3 + 0.2 * q, 6)}


def synthetic_records() -> list[Record]:
    recs = []
    for enc, (has_decoder, q) in ENCODERS.items():
        if has_decoder:
            recs.append(_record("reconstruction", enc, {
                "psnr": 20 + 10 * q, "ssim": 0.5 + 0.4 * q, "lpips": None, "rfid": None, "num_images": 512,
                "encode_ips": 900.0 + q, "decode_ips": 800.0 + q,
                "unavailable": {"lpips": "LPIPS needs the VGG weights", "rfid": NO_INCEPTION}}))
        recs.append(_record("probe", enc, {
            "probe_top1": 100 * q, "probe_top5": None, "probe_top1_sklearn": 100 * q - 1, "num_train": 2000,
            "num_test": 512, "feature_dim": 64, "probe_fit_s": 3.25,
            "unavailable": {"probe_top5": "only 4 classes: top-5 would be trivially 100%"}}))
        recs.append(_record("knn", enc, {
            "knn_top1_k10": 90 * q, "knn_top1_k20": 88 * q, "silhouette": 0.4 * q - 0.1, "variance_ratio": 2 * q,
            "num_train": 2000, "num_test": 512, "pca_figure": None, "pca_points": _pca(q), "unavailable": {}}))
        recs.append(_record("seg", enc, {
            "miou": 60 * q, "macc": 70 * q, "aacc": 90 * q, "num_images": 512, "train_images": 500,
            "train_s": 12.5, "unavailable": {}}))
    recs.append(_record("generation", "tiny-svg", {
        "fid": 12.5, "kid": 0.0123, "precision": 0.71, "recall": 0.55, "train_steps": 4000,
        "feature_network": JUDGE, "num_samples": 1000, "sample_s_per_image": 0.0123, "decode_s_per_image": 0.001,
        "fid_curve": [[500, 80.0], [1000, 40.0], [2000, 20.0], [4000, 12.5]]}))
    recs.append(_record("generation", "tiny-vae", {
        "fid": None, "kid": None, "precision": None, "recall": None,
        "unavailable": {m: NO_MODEL for m in ("fid", "kid", "precision", "recall")}}))
    steps = [1, 2, 4, 8, 16, 25, 50]
    curve = [{"method": m, "steps": s, "nfe": s * (2 if m == "heun" else 1), "fid": 200.0 / s + (1 if m == "euler" else 0),
              "sample_s_per_image": 0.001 * s, "decode_s_per_image": 0.0005}
             for m in ("euler", "heun") for s in steps if m == "euler" or s <= 16]
    cfg = {"steps": steps, "methods": ["euler", "heun"], "heun_max_steps": 16}
    recs.append(_record("sampling", "tiny-svg", {"curve": curve, "feature_network": JUDGE, "num_samples": 250,
                                                 "headline": {"method": "euler", "steps": 4}}, config=cfg))
    recs.append(_record("sampling", "tiny-vae", {"unavailable": {"fid": NO_MODEL}}, config=cfg))
    return recs


def write_synthetic_results(results: Path, records=None) -> Path:
    """results/records/<task>/*.json from `synthetic_records()`, as the runner lays them out."""
    for r in records or synthetic_records():
        write_record(results / "records" / r.task / f"{r.encoder}__{r.key}.json", r)
    return results


@pytest.fixture
def synthetic_results(tmp_path):
    return write_synthetic_results(tmp_path / "results")


# ---------------------------------------------------------------------------------------------
# task tables from real runs
# ---------------------------------------------------------------------------------------------

def _run(results):
    cfg = RunConfig(encoders=("pixels", "tiny-ssl"), tasks=("reconstruction", "probe"),
                    data=DataConfig(size=64), results_dir=str(results), skip_existing=False,
                    task_overrides={"probe": {"train_size": 256, "epochs": 5}})
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures
    return write_reports(results, plots=False)


def test_same_command_same_tables(tmp_path):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    assert set(a) == {"reconstruction", "probe", "scorecard", "findings", "summary"}
    for task in a:
        assert a[task].read_text() == b[task].read_text(), task
        if task != "summary":  # prose only: no csv
            assert (tmp_path / "a" / f"{task}.csv").read_text() == (tmp_path / "b" / f"{task}.csv").read_text()
    eff = (tmp_path / "a" / "efficiency.csv").read_text()
    assert "encode img/s" in eff and "probe fit (s)" in eff
    assert "img/s" not in a["reconstruction"].read_text()
    assert "tiny-ssl: PSNR (dB), SSIM, rFID" in a["scorecard"].read_text()  # no decoder: n/a with the reason


# ---------------------------------------------------------------------------------------------
# scorecard
# ---------------------------------------------------------------------------------------------

def test_scorecard_rows_and_columns():
    df = scorecard_table(synthetic_records())
    assert list(df["encoder"]) == ["tiny-ssl", "tiny-svg", "tiny-vae"]
    assert set(df["kind"]) == {"measured"}
    svg = df.set_index("encoder").loc["tiny-svg"]
    assert svg["PSNR (dB)"] == pytest.approx(29.0) and svg["kNN k=20 top-1 (%)"] == pytest.approx(88 * 0.9)
    assert svg["judge-FID"] == 12.5 and svg["judge-KID"] == 0.0123
    assert "FID" not in df.columns and "Inception-FID" not in df.columns  # named after the judge, never plain FID
    # the point the record fixed in advance (euler, 4 steps: 200 / 4 + 1), though heun at 4 steps is lower
    assert svg["few-step judge-FID (<=4 steps)"] == pytest.approx(51.0)
    assert svg["few-step sampler"] == "euler, 4 steps (fixed in advance)"
    assert math.isnan(df.set_index("encoder").loc["tiny-ssl", "PSNR (dB)"])
    reasons = {(u["row"], u["column"]): u["reason"] for u in scorecard_unavailable(synthetic_records())}
    assert reasons[("tiny-ssl", "PSNR (dB)")].startswith("no pixel decoder")
    assert reasons[("tiny-vae", "judge-FID")] == NO_MODEL
    assert reasons[("tiny-svg", "rFID")] == NO_INCEPTION


def test_scorecard_files_kind_published_apart_and_reasons(synthetic_results):
    write_reports(synthetic_results, plots=False)
    md = (synthetic_results / "scorecard.md").read_text()
    measured, published = md.split("## Published (from baselines/published.csv)")
    assert "not ImageNet numbers" in measured and "judge-FID" in measured
    assert "ImageNet" not in measured.split("| encoder |")[1].split("\n\n")[0]  # no published figure in the table
    assert f"- n/a — {NO_MODEL} (tiny-vae: judge-FID, judge-KID, judge-precision, judge-recall" in measured
    assert f"- n/a — {NO_INCEPTION} (tiny-svg: rFID; tiny-vae: rFID)" in measured
    assert "arXiv 2510.15301" in published and "tiny-svg" not in published
    csv = pd.read_csv(synthetic_results / "scorecard.csv")
    assert set(csv["kind"]) == {"measured", "published"}
    meas, pub = csv[csv["kind"] == "measured"], csv[csv["kind"] == "published"]
    assert len(meas) == 3 and len(pub) > 10
    assert meas["source"].isna().all() and meas["metric"].isna().all()  # never on a measured row
    assert pub["encoder"].isna().all() and pub["judge-FID"].isna().all()  # and no measurement on a published row
    assert pub["source"].notna().all()
    js = json.loads((synthetic_results / "scorecard.json").read_text())
    kinds = [r["kind"] for r in js["rows"]]
    assert kinds == sorted(kinds)  # measured first, then published
    assert all("source" not in r for r in js["rows"] if r["kind"] == "measured")
    assert all("encoder" not in r and r["source"] for r in js["rows"] if r["kind"] == "published")
    assert {"row": "tiny-vae", "column": "judge-FID", "reason": NO_MODEL} in js["unavailable"]


def test_scorecard_deterministic(tmp_path, synthetic_results):
    write_reports(synthetic_results, plots=False)
    first = {n: (synthetic_results / n).read_bytes() for n in
             ("scorecard.md", "scorecard.csv", "scorecard.json", "sampling.md", "sampling.csv", "sampling.json")}
    write_reports(synthetic_results, plots=False)
    other = write_synthetic_results(tmp_path / "other", list(reversed(synthetic_records())))
    write_reports(other, plots=False)
    for name, data in first.items():
        assert (synthetic_results / name).read_bytes() == data, name
        assert (other / name).read_bytes() == data, name
    assert b"s/img" not in first["scorecard.md"] and b"0.0123" not in first["sampling.md"]  # timings stay out


def test_scorecard_without_records_or_published(tmp_path):
    path = write_scorecard(tmp_path, [], published=pd.DataFrame(columns=["kind"]))
    assert "No records." in path.read_text() and "not found" in path.read_text()


# ---------------------------------------------------------------------------------------------
# sampling table and efficiency
# ---------------------------------------------------------------------------------------------

def test_sampling_pivot_and_timings(synthetic_results):
    write_reports(synthetic_results, plots=False)
    df = sampling_table(synthetic_records())
    assert list(df.columns[:4]) == ["encoder", "data", "method", "metric"]
    assert [c for c in df.columns if "step" in c] == ["1 step", "2 steps", "4 steps", "8 steps", "16 steps",
                                                     "25 steps", "50 steps"]
    svg = df[df["encoder"] == "tiny-svg"].set_index("method")
    assert svg.loc["euler", "8 steps"] == pytest.approx(26.0) and math.isnan(svg.loc["heun", "25 steps"])
    assert set(df["metric"]) == {"judge-FID"}
    md = (synthetic_results / "sampling.md").read_text()
    assert "| tiny-svg | shapes/val (embedded, procedural) 64px | euler | judge-FID | 201.00 |" in md
    assert "Heun (2 model evaluations a step) runs up to 16 steps (tiny-svg: heun at 25, 50 steps)" in md
    assert f"{NO_MODEL} (tiny-vae: euler (all steps), heun (all steps))" in md
    eff = pd.read_csv(synthetic_results / "efficiency.csv")
    samp = eff[eff["task"] == "sampling"]
    assert "heun 4 steps: sample s/img" in set(samp["measure"]) and len(samp) == 2 * 12


def test_sampling_points_carry_their_intervals(tmp_path):
    """A sampling point's FID interval follows its value: "<steps> ci_low/ci_high/n" columns next to it in the
    csv, "value [low, high]" in sampling.md with a legend line naming the method, and the scorecard's few-step
    FID carries the interval of the point it shows. A point without an interval shows its value alone."""
    recs = synthetic_records()
    samp = next(r for r in recs if r.task == "sampling" and r.encoder == "tiny-svg")
    for p in samp.metrics["curve"]:
        if (p["method"], p["steps"]) != ("euler", 50):
            p |= {"ci_low": p["fid"] - 3.0, "ci_high": p["fid"] + 1.0, "n": 250, "level": 0.95,
                  "method_ci": "bootstrap-basic x200"}
    results = write_synthetic_results(tmp_path / "results", recs)
    write_reports(results, plots=False)
    df = sampling_table(recs)
    cols = list(df.columns)
    assert cols[cols.index("4 steps"):cols.index("4 steps") + 4] == ["4 steps", "4 steps ci_low", "4 steps ci_high",
                                                                     "4 steps n"]
    svg = df[df["encoder"] == "tiny-svg"].set_index("method")
    assert svg.loc["heun", "4 steps ci_low"] == pytest.approx(200.0 / 4 - 3.0)
    assert "50 steps ci_low" not in cols  # no point at 50 steps has one
    md = (results / "sampling.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| tiny-svg |") and "| euler |" in line)
    assert "| 201.00 [198.00, 202.00] |" in row and "| 5.00 |" in row  # 50 steps: no interval
    assert "- [low, high]: 95% interval, bootstrap-basic x200 (bootstrap over generated and reference samples" in md
    assert md.count("FID at each step count") == 1
    card = (results / "scorecard.md").read_text()
    fixed = 200.0 / 4 + 1  # euler at 4 steps, the record's headline point (heun at 4 steps is lower: not shown)
    assert f"| {fixed:.2f} [{fixed - 3:.2f}, {fixed + 1:.2f}] | euler, 4 steps (fixed in advance) |" in card
    assert "sampling few-step judge-FID (<=4 steps)" in card
    head = (results / "scorecard.csv").read_text().splitlines()[0].split(",")
    few = head.index("few-step judge-FID (<=4 steps)")  # its interval next to it, though tiny-vae's row has none
    assert head[few + 1:few + 4] == [f"few-step judge-FID (<=4 steps) {p}" for p in ("ci_low", "ci_high", "n")]


def test_few_step_headline_without_a_fixed_point_is_na_with_the_fix():
    """A sampling record that names no headline point (made before records did) gives no few-step value: never
    the minimum over its points."""
    recs = synthetic_records()
    samp = next(r for r in recs if r.task == "sampling" and r.encoder == "tiny-svg")
    del samp.metrics["headline"]
    svg = scorecard_table(recs).set_index("encoder").loc["tiny-svg"]
    assert pd.isna(svg["few-step judge-FID (<=4 steps)"])
    reasons = {(u["row"], u["column"]): u["reason"] for u in scorecard_unavailable(recs)}
    assert "--force" in reasons[("tiny-svg", "few-step judge-FID (<=4 steps)")]
    samp.metrics["headline"] = {"method": "euler", "steps": 8}  # beyond the column's 4 steps
    reasons = {(u["row"], u["column"]): u["reason"] for u in scorecard_unavailable(recs)}
    assert reasons[("tiny-svg", "few-step judge-FID (<=4 steps)")].endswith("beyond 4 steps")


def test_efficiency_states_the_statistics_share(tmp_path):
    """efficiency.md ends with the seconds spent on intervals against all cells' wall time (issue: the
    statistics' extra cost), summed from the records independently here."""
    recs = synthetic_records()
    for i, r in enumerate(recs):
        r.wall_s = 10.0 + i
        if r.task in ("probe", "reconstruction"):
            r.metrics["stats_s"] = 0.5 * (i % 3)
    results = write_synthetic_results(tmp_path / "results", recs)
    write_reports(results, plots=False)
    total = sum(r.wall_s for r in recs)
    spent = sum(r.metrics.get("stats_s", 0.0) for r in recs)
    assert spent > 0
    line = (results / "efficiency.md").read_text().rstrip().splitlines()[-1]
    assert line == (f"Statistics (intervals, the probe's extra head seeds): {spent:.1f} s of {total:.1f} s of cell "
                    f"time ({100 * spent / total:.1f}%); without them the cells would take {total - spent:.1f} s "
                    f"(+{100 * spent / (total - spent):.1f}% with them).")


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------

def test_every_plot_written(synthetic_results):
    write_reports(synthetic_results)
    for name in PLOT_FILES:
        data = (synthetic_results / f"{name}.png").read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
    assert not list(synthetic_results.glob("*.tmp*")) and not list(synthetic_results.glob(".*"))


def test_frames_hold_the_plot_data():
    f = frames(synthetic_records())
    assert list(f["fid_curve"]["step"]) == [500, 1000, 2000, 4000]
    assert set(f["sampling_curve"]["method"]) == {"euler", "heun"}
    assert len(f["pca_points"]) == 3 * 60 and set(f["pca_points"]["class"]) == set(CLASSES)
    assert set(f["published"]["kind"]) == {"published"}


def test_plots_with_missing_data_do_not_crash(tmp_path):
    # only understanding records, older knn records without pca_points, and empty frames
    recs = [r for r in synthetic_records() if r.task in ("probe", "knn")]
    for r in recs:
        r.metrics.pop("pca_points", None)
    write_synthetic_results(tmp_path, recs)
    write_reports(tmp_path)
    for name in PLOT_FILES:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG, name
    empty = {k: pd.DataFrame() for k in ("scorecard", "fid_curve", "sampling_curve", "pca_points")}
    out = plots.write_plots(tmp_path / "empty", empty)
    assert set(out) == set(PLOT_FILES)
    assert set(plots.write_plots(tmp_path / "none", {})) == set(PLOT_FILES)
    partial = scorecard_table(recs).drop(columns=["seg mIoU (%)"])
    plots.understanding(partial)  # a missing column: drawn without it
    plots.reconstruction(partial)  # every value n/a: "no data"


def test_knn_pca_points_in_record():
    from svgbench.metrics.probe import pca_points, pca_projection

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(700, 6, generator=g), torch.arange(700) % 3
    proj = pca_projection(x, y)
    pts = pca_points(proj, 512)
    assert len(pts["xy"]) == len(pts["labels"]) == 512
    assert all(round(v, 4) == v for p in pts["xy"] for v in p)
    assert json.loads(json.dumps(pts)) == pts
    assert len(pca_points(pca_projection(x[:100], y[:100]))["xy"]) == 100


def test_knn_record_carries_pca_points_to_the_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig(encoders=("pixels",), tasks=("knn",), data=DataConfig(resolution=32, size=40), device="cpu",
                    results_dir=str(tmp_path / "results"),
                    task_overrides={"knn": {"train_size": 60, "pca_record_points": 30}})
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    pts = summary.records[0].metrics["pca_points"]
    assert len(pts["xy"]) == len(pts["labels"]) == 30 and pts["classes"]
    assert summary.records[0].metrics["pca_figure"] is None  # no figure_dir: points only
    on_disk = json.loads(next((tmp_path / "results" / "records" / "knn").glob("*.json")).read_text())
    assert on_disk["metrics"]["pca_points"] == pts
    table = frames(summary.records)["pca_points"]
    assert len(table) == 30 and set(table["class"]) <= set(pts["classes"])
    out = plots.write_plots(tmp_path / "results", frames(summary.records))
    assert out["discriminability"].read_bytes()[:8] == PNG


def test_generation_table_steps_to_fid_levels():
    from svgbench.report import task_table, to_markdown

    curve = [[800, 66.7], [1600, 52.0], [2400, 44.0]]
    records = [_record("generation", "tiny-svg", {"fid": 44.0, "feature_network": JUDGE, "fid_curve": curve,
                                                  "steps_to_fid": {"60": 1600, "50": 2400, "40": None}}),
               _record("generation", "tiny-vae", {"fid": 70.0, "feature_network": JUDGE, "fid_curve": curve[:1]})]
    df = task_table(records, "generation")
    row = df.set_index("encoder").loc["tiny-svg"]
    assert (row["steps to judge-FID <= 60"], row["steps to judge-FID <= 50"]) == (1600, 2400)
    assert row["steps to judge-FID <= 40"] == "> 2400"  # not reached within the curve
    md = to_markdown(df, "generation")
    assert "| 1600 | 2400 | > 2400 |" in md and "| n/a | n/a | n/a |" in md  # tiny-vae: no levels asked


def test_adm_only_metrics_are_columns_only_where_a_record_has_them():
    """sFID and the Inception Score (the ADM evaluator's) are columns of the generation table only when some record
    computed them or says why not; on the embedded data (judge) they are no column of n/a."""
    from svgbench.report import task_table

    judge = [_record("generation", "tiny-svg", {"fid": 44.0, "feature_network": JUDGE})]
    assert not {"Inception-sFID", "Inception Score"} & set(task_table(judge, "generation").columns)
    adm = _record("generation", "tiny-vae", {"fid": 9.5, "sfid": 6.25, "inception_score": 120.5,
                                             "feature_network": "Inception (ADM reference batch)"})
    df = task_table(judge + [adm], "generation").set_index("encoder")
    assert (df.loc["tiny-vae", "Inception-sFID"], df.loc["tiny-vae", "Inception Score"]) == (6.25, 120.5)
    assert pd.isna(df.loc["tiny-svg", "Inception-sFID"])


def test_sample_strip_round_trips_to_the_samples_plot(tmp_path):
    import base64
    import io

    from PIL import Image

    from svgbench.report import samples_table
    from svgbench.diffusion.generate import sample_strip

    g = torch.Generator().manual_seed(0)
    fake = torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8, generator=g)
    strip = sample_strip(fake, CLASSES)
    assert strip["count"] == 10 and strip["classes"] == (CLASSES * 3)[:10]
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(strip["png_base64"]))))
    assert pixels.shape == (64, 640, 3)  # lossless: sample i is the i-th 64 px tile
    assert all(np.array_equal(pixels[:, 64 * i:64 * (i + 1)], fake[i].permute(1, 2, 0).numpy()) for i in range(10))
    big = sample_strip(torch.zeros(3, 3, 256, 256, dtype=torch.uint8), CLASSES)  # thumbnails at most 64 px
    assert np.asarray(Image.open(io.BytesIO(base64.b64decode(big["png_base64"])))).shape == (64, 192, 3)
    records = [_record("generation", "tiny-svg", {"fid": 30.0, "feature_network": JUDGE, "samples": strip}),
               _record("generation", "tiny-vae", {"fid": None, "feature_network": JUDGE})]
    df = samples_table(records)
    assert list(df["encoder"]) == ["tiny-svg"] and df["metric"].iloc[0] == "judge-FID"
    path = plots.save_png(plots.samples(df), tmp_path / "samples.png")
    assert path.read_bytes().startswith(PNG)
