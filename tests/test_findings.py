"""Findings F0..F6 and paired comparisons on small synthetic records: each verdict is exercised."""

import json

import numpy as np
import pytest

from svgbench.findings import encoder_roles, findings_table, paired_comparison, write_findings

DATA = {"name": "shapes", "key": "shapes-test"}
SPECS = {
    "my-svg": {"family": "svg", "extra": {"svg_config": {"residual": True, "dino": "my-ssl"}}},
    "my-svg-dino-only": {"family": "svg", "extra": {"svg_config": {"residual": False, "dino": "my-ssl"}}},
    "my-ssl": {"family": "dino", "extra": {}},
    "my-vae": {"family": "sd-vae", "extra": {}},
}


def rec(task, enc, **metrics):
    return {"task": task, "encoder": enc, "spec": SPECS[enc], "data": DATA, "metrics": metrics}


def correct(acc, n, seed):
    g = np.random.default_rng(seed)
    return [100.0 if v else 0.0 for v in g.random(n) < acc]


def records():
    n = 2000
    base = np.random.default_rng(0).random(n)
    probe = {"my-ssl": base < 0.90, "my-svg": base < 0.902, "my-vae": base < 0.50}
    knn_ssl, knn_svg = correct(0.82, 400, 1), correct(0.64, 400, 2)  # kNN: the residual costs retrieval
    psnr_only = list(np.random.default_rng(3).normal(18.8, 1.0, 64))
    out = [rec("probe", e, probe_top1=float(100 * v.mean()),
               per_item={"probe_top1": [100.0 if x else 0.0 for x in v]}) for e, v in probe.items()]
    out += [rec("knn", "my-ssl", knn_top1_k20=float(np.mean(knn_ssl)), per_item={"knn_top1_k20": knn_ssl}),
            rec("knn", "my-svg", knn_top1_k20=float(np.mean(knn_svg)), per_item={"knn_top1_k20": knn_svg})]
    # PSNR: too few images and too small a gain to tell
    psnr_svg = [v + 0.05 + np.random.default_rng(4 + i).normal(0, 1.0) for i, v in enumerate(psnr_only)]
    psnr_svg[0] = None  # an identical reconstruction (inf dB) is None and dropped from the pairing
    # the VAE baseline: 0.5 dB above SVG on the same images (F0 holds)
    psnr_vae = [None if v is None else v + 0.5 + np.random.default_rng(70 + i).normal(0, 0.2)
                for i, v in enumerate(psnr_svg)]
    out += [rec("reconstruction", "my-svg-dino-only", psnr=float(np.mean(psnr_only)), per_item={"psnr": psnr_only}),
            rec("reconstruction", "my-svg", psnr=0.0, per_item={"psnr": psnr_svg}),
            rec("reconstruction", "my-vae", psnr=0.0, per_item={"psnr": psnr_vae})]
    out += [rec("generation", "my-svg", fid_curve=[[1000, 40, 36, 44], [2000, 25, 22, 28]],
                class_accuracy=80.0, ci={"class_accuracy": {"ci_low": 76.0, "ci_high": 84.0}}),
            rec("generation", "my-vae", fid_curve=[[1000, 60, 55, 65], [4000, 30, 27, 33]],
                class_accuracy=60.0, ci={"class_accuracy": {"ci_low": 55.0, "ci_high": 65.0}})]
    return out


def test_roles_come_from_specs():
    assert encoder_roles(records()) == {"svg": "my-svg", "ssl": "my-ssl", "dino_only": "my-svg-dino-only",
                                        "vae": "my-vae", "vae_wide": None}


WIDE_SPECS = {
    "my-svg": dict(SPECS["my-svg"], latent_channels=136),
    "a-vae-wide": {"family": "sd-vae", "latent_channels": 136, "extra": {}},  # sorts before my-vae
    "my-vae": {"family": "sd-vae", "latent_channels": 4, "extra": {}},
}


def test_matched_capacity_vae_gets_its_own_findings():
    """A VAE as wide as SVG's latent is the matched-capacity baseline (F2w, F4w-F6w), never the VAE of F2-F6."""
    out = [r for r in records() if r["encoder"] != "my-vae"]
    base = np.random.default_rng(0).random(2000)
    for name, acc in (("my-vae", 0.5), ("a-vae-wide", 0.6)):
        v = base < acc
        out.append({"task": "probe", "encoder": name, "spec": WIDE_SPECS[name], "data": DATA,
                    "metrics": {"probe_top1": float(100 * v.mean()),
                                "per_item": {"probe_top1": [100.0 if x else 0.0 for x in v]}}})
    for r in out:
        if r["encoder"] == "my-svg":
            r["spec"] = WIDE_SPECS["my-svg"]
    roles = encoder_roles(out)
    assert roles["vae"] == "my-vae" and roles["vae_wide"] == "a-vae-wide"
    df = findings_table(out).set_index("finding")
    assert list(df.index) == ["F0", "F1", "F1b", "F2", "F3", "F4", "F5", "F6", "F0w", "F2w", "F4w", "F5w", "F6w"]
    assert df.loc["F0w", "reason"] == "not measured: no `reconstruction` record for a-vae-wide"
    assert df.loc["F2w", "verdict"] == "holds" and 25 < df.loc["F2w", "value"] < 35  # 90.2 vs 60
    assert df.loc["F2", "value"] > df.loc["F2w", "value"]  # F2 compares with the 4-channel VAE
    assert "same-width VAE" in df.loc["F4w", "claim"] and df.loc["F4w", "reason"].startswith("not measured")


def test_findings_verdicts():
    df = findings_table(records()).set_index("finding")
    assert list(df.index) == ["F0", "F1", "F1b", "F2", "F3", "F4", "F5", "F6"]
    # F0: the VAE's PSNR minus SVG's on the images both reconstructed (SVG's None item dropped)
    assert df.loc["F0", "verdict"] == "holds" and 0.4 < df.loc["F0", "value"] < 0.6 and df.loc["F0", "ci_low"] > 0
    assert df.loc["F0", "measured"].startswith("psnr(my-vae) - psnr(my-svg) = +0.") and "n=63" in df.loc["F0", "measured"]
    assert df.loc["F1", "verdict"] == "holds"  # shared items, 0.2 point apart, n=2000: within +-1
    assert df.loc["F1", "ci_low"] >= -1 and df.loc["F1", "ci_high"] <= 1
    assert df.loc["F1b", "verdict"] == "does not hold" and df.loc["F1b", "ci_high"] < -1
    assert df.loc["F2", "verdict"] == "holds" and df.loc["F2", "ci_low"] > 30
    assert df.loc["F3", "verdict"] == "inconclusive" and df.loc["F3", "ci_low"] < 0 < df.loc["F3", "ci_high"]
    assert "n=63" in df.loc["F3", "measured"]
    # F4: VAE's final FID 30 [27, 33]; SVG first <= 30 at 2000 -> 2x; optimistic (28 <= 33 at 2000) 2x;
    # pessimistic (ci_high <= 27 never) -> not reached: inconclusive
    assert df.loc["F4", "value"] == 2.0 and df.loc["F4", "ci_high"] == 2.0 and np.isnan(df.loc["F4", "ci_low"])
    assert df.loc["F4", "verdict"] == "inconclusive"
    assert df.loc["F5", "verdict"] == "inconclusive" and df.loc["F5", "reason"].startswith("not measured")
    assert df.loc["F6", "verdict"] == "holds" and df.loc["F6", "value"] == 20.0


def test_paired_comparison_lists_shared_metrics():
    df = paired_comparison(records(), "my-svg", "my-ssl")
    assert set(df["metric"]) == {"probe_top1", "knn_top1_k20"}
    knn = df.set_index("metric").loc["knn_top1_k20"]
    assert knn["excludes_zero"] and knn["ci_high"] < 0 and knn["n"] == 400
    assert paired_comparison(records(), "my-svg", "nobody").empty


def test_write_findings(tmp_path):
    md = write_findings(tmp_path, records()).read_text()
    assert "| F1 |" in md and "does not hold" in md and "95% bootstrap" in md
    data = json.loads((tmp_path / "findings.json").read_text())
    assert [f["finding"] for f in data["findings"]][:2] == ["F0", "F1"] and data["level"] == 0.95
    assert (tmp_path / "findings.csv").read_text().startswith("finding,claim")


def test_f4_without_curve_intervals_gives_the_point_ratio_as_inconclusive():
    """A shipped model's curve evaluated without intervals: F4 shows the point speed-up, never a verdict."""
    out = [r for r in records() if r["task"] != "generation"]
    out += [rec("generation", "my-svg", fid_curve=[[1000, 40], [2000, 25], [4000, 20]]),
            rec("generation", "my-vae", fid_curve=[[1000, 60, 55, 65], [8000, 30, 27, 33]])]
    f4 = findings_table(out).set_index("finding").loc["F4"]
    assert f4["value"] == 4.0 and f4["verdict"] == "inconclusive"  # FID 30 first reached at 2000: 8000 / 2000
    assert "my-svg's FID-vs-step curve carries no intervals" in f4["reason"] and "no interval" in f4["measured"]


def test_f5_decides_at_the_most_few_steps_fixed_in_advance():
    """F5's verdict is read at the largest few-step count (4; the paper compares at 5), whatever the others say."""
    def curve(points):
        return [{"method": "euler", "steps": s, "fid": v, "ci_low": v - h, "ci_high": v + h, "n": 250}
                for s, v, h in points]

    out = records() + [
        rec("sampling", "my-svg", curve=curve([(1, 90, 20), (2, 40, 5), (4, 22, 2), (50, 20, 1)])),
        rec("sampling", "my-vae", curve=curve([(1, 95, 20), (2, 80, 5), (4, 60, 3), (50, 20, 1)])),
    ]
    f5 = findings_table(out).set_index("finding").loc["F5"]
    # 1 step: 4.5 [3.3, 5.79] vs 4.75 [3.5, 6.05] overlap; 4 steps: 1.1 [0.95, 1.26] vs 3.0 [2.71, 3.32]
    assert f5["verdict"] == "holds" and f5["reason"].startswith("at 4 steps")
    assert f5["value"] == pytest.approx(22 / 20) and "1 step: my-svg 4.50" in f5["measured"]
