"""Bootstrap intervals: coverage of known truths, agreement with the normal interval, pairing, FD formula."""

import numpy as np
import pytest

from svgbench.metrics import stats

pytestmark = pytest.mark.usefixtures("one_thread")


def test_accuracy_interval_covers_a_known_accuracy_in_95_percent_of_trials():
    p, n, trials = 0.9, 400, 400
    g = np.random.default_rng(0)
    hits = 0
    for t in range(trials):
        correct = (g.random(n) < p) * 100.0
        r = stats.mean_ci(correct, seed=t)
        hits += r["ci_low"] <= 100 * p <= r["ci_high"]
    print(f"accuracy coverage {hits / trials:.3f}")
    assert 0.93 <= hits / trials <= 0.97, hits / trials


def test_frechet_interval_covers_a_known_distance_in_95_percent_of_trials():
    # N(0, I) vs N(m, diag(s^2)): FD = |m|^2 + sum (1 - s)^2. 100 resamples per trial (not 200) for speed.
    m, s, n, trials = np.array([0.4, -0.3]), np.array([1.3, 0.8]), 600, 200
    truth = float(m @ m + ((1 - s) ** 2).sum())
    g = np.random.default_rng(1)
    hits = 0
    for t in range(trials):
        a = g.normal(size=(n, 2))
        b = m + s * g.normal(size=(n, 2))
        r = stats.frechet_ci(a, b, n_resamples=100, seed=t, batch=100)
        hits += r["ci_low"] <= truth <= r["ci_high"]
    print(f"Frechet coverage {hits / trials:.3f}")
    assert 0.93 <= hits / trials <= 0.97, hits / trials


def test_bootstrap_interval_agrees_with_the_normal_interval_on_a_large_sample():
    x = np.random.default_rng(2).exponential(2.0, size=5000)
    r = stats.mean_ci(x)
    half = 1.959964 * x.std(ddof=1) / np.sqrt(x.size)
    normal = (x.mean() - half, x.mean() + half)
    width = normal[1] - normal[0]
    assert abs(r["ci_low"] - normal[0]) < 0.1 * width and abs(r["ci_high"] - normal[1]) < 0.1 * width
    assert r["value"] == x.mean() and r["n"] == 5000 and r["method"] == "bootstrap-BCa x1000"


def test_paired_interval_is_narrower_than_unpaired_on_correlated_items():
    g = np.random.default_rng(3)
    difficulty = g.normal(size=500)
    a = difficulty + 0.3 * g.normal(size=500) + 0.1
    b = difficulty + 0.3 * g.normal(size=500)
    paired, unpaired = stats.paired_diff_ci(a, b), stats.unpaired_diff_ci(a, b)
    assert paired["value"] == pytest.approx(unpaired["value"])
    assert (paired["ci_high"] - paired["ci_low"]) < 0.5 * (unpaired["ci_high"] - unpaired["ci_low"])
    assert paired["excludes_zero"] and not unpaired["excludes_zero"]


def test_degenerate_and_identical_values():
    r = stats.mean_ci([100.0] * 10)
    assert (r["value"], r["ci_low"], r["ci_high"]) == (100.0, 100.0, 100.0)
    d = stats.paired_diff_ci([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (d["ci_low"], d["ci_high"], d["excludes_zero"]) == (0.0, 0.0, False)
    with pytest.raises(ValueError, match="non-finite"):
        stats.mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_ci([1.0])


@pytest.mark.parametrize("d", [6, 80])  # D <= N: D-square eigenproblem; D > N: Gram path
def test_frechet_value_and_weighted_resamples_match_torch_fidelity(d):
    g = np.random.default_rng(4)
    a, b = g.normal(size=(50, d)), 0.2 + 1.1 * g.normal(size=(40, d))

    def tf(x, y):
        return stats.frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))

    r = stats.frechet_ci(a, b, n_resamples=20)
    assert r["plugin"] == pytest.approx(tf(a, b), rel=1e-6) and (r["n_gen"], r["n_ref"]) == (50, 40)
    assert r["value"] == pytest.approx(r["plugin"] - r["bias"])
    # a resample as row counts equals the distance of the explicitly duplicated rows
    i1, i2 = g.integers(0, 50, 50), g.integers(0, 40, 40)
    c = np.concatenate([a, b]).mean(0)
    x1, x2 = a - c, b - c
    grams = None if d <= 40 else (x1 @ x1.T, x2 @ x2.T, x1 @ x2.T)
    w1, w2 = np.bincount(i1, minlength=50)[None] * 1.0, np.bincount(i2, minlength=40)[None] * 1.0
    assert stats._fd_weighted(x1, x2, w1, w2, grams)[0] == pytest.approx(tf(a[i1], b[i2]), rel=1e-6)


@pytest.mark.parametrize("paired", [False, True])
def test_frechet_point_lies_inside_its_interval(paired):
    # reconstruction-like rows (y = 0.9 x + noise, as judge-rFID sees them) and independent sets, D close to n
    g = np.random.default_rng(6)
    for seed in range(4):
        x = g.normal(size=(60, 40)) * np.linspace(2, 0.05, 40)
        y = 0.9 * x + 0.2 * g.normal(size=x.shape) if paired else g.normal(size=(60, 40)) * np.linspace(2, .1, 40)
        for method in ("normal-bc", "basic"):
            r = stats.frechet_ci(y, x, paired=paired, method=method, n_resamples=60, seed=seed, batch=60)
            assert r["ci_low"] <= r["value"] <= r["ci_high"], (method, seed, r)
            assert r["n_resamples"] == 60 and r["method"] == f"bootstrap-{method} x60" and r["paired"] is paired
            entry = stats.ci_entry(r)
            assert {"level_measured_by", "nominal_level", "plugin", "bias", "n_resamples"} <= set(entry)
    with pytest.raises(ValueError, match="paired"):
        stats.frechet_ci(x, x[:50], paired=True)
    with pytest.raises(ValueError, match="not one of"):
        stats.frechet_ci(x, y, method="percentile")


def test_paired_resampling_keeps_a_reconstruction_interval_around_its_point():
    # an image and its reconstruction resampled as one item: the interval covers the distance; resampled as two
    # independent sets the pairing is lost, the bias correction grows to the whole plug-in value and the
    # interval collapses to 0, below the distance
    g = np.random.default_rng(7)
    s = np.linspace(3, 0.1, 30)
    x = g.normal(size=(200, 30)) * s
    y = 0.95 * x + 0.05 * g.normal(size=x.shape)
    truth = float(((s - np.sqrt(0.95 ** 2 * s ** 2 + 0.05 ** 2)) ** 2).sum())  # diagonal Gaussians
    p = stats.frechet_ci(y, x, paired=True, n_resamples=100, batch=100)
    u = stats.frechet_ci(y, x, paired=False, n_resamples=100, batch=100)
    assert p["ci_low"] <= truth <= p["ci_high"] and p["ci_low"] <= p["value"] <= p["ci_high"]
    assert u["ci_high"] < truth and p["bias"] < 0.1 * u["bias"]


def test_fd_level_is_the_measured_one_outside_93_to_97_percent(monkeypatch):
    from svgbench.report.tables import _interval_how

    g = np.random.default_rng(8)
    a, b = g.normal(size=(50, 4)), g.normal(size=(50, 4)) + 0.5  # distance about 1
    runs = ((1.0, 1.0, 0.81, 200, 50), (50.0, 50.0, 0.955, 200, 50))
    monkeypatch.setattr(stats, "FD_COVERAGE", {(4, 50, 50, False): runs})
    r = stats.frechet_ci(a, b, n_resamples=30)
    assert r["level"] == 0.81 and r["nominal_level"] == 0.95 and r["level_measured"] == 0.81
    assert "200 trials, D=4 n=50 vs 50" in r["level_measured_by"] and "distance 1," in r["level_measured_by"]
    assert _interval_how(r["level"], r["method"]).startswith("81% interval")
    far = stats.frechet_ci(a, b + 6, n_resamples=30)  # distance about 150: the measurement at 50 is nearest
    assert far["level"] == 0.95 and far["level_measured"] == 0.955
    monkeypatch.setattr(stats, "FD_COVERAGE", {(4, 52, 51, False): runs[1:]})
    assert stats.frechet_ci(a, b, n_resamples=30)["level"] == 0.95  # within 5% of a measured n, inside 93-97%
    assert stats.frechet_ci(a, b, n_resamples=30, paired=True)["level_measured"] is None  # never measured
    assert "not measured" in stats.frechet_ci(a[:30], b, n_resamples=30)["level_measured_by"]


def test_a_bca_interval_that_falls_back_is_labelled_percentile(monkeypatch):
    import scipy.stats

    real = scipy.stats.bootstrap

    def undefined_bca(*args, **kw):
        res = real(*args, **kw)
        if kw.get("method") == "BCa":  # as scipy returns it where BCa cannot be formed
            res.confidence_interval = type(res.confidence_interval)(np.nan, np.nan)
        return res

    monkeypatch.setattr(scipy.stats, "bootstrap", undefined_bca)
    x = np.random.default_rng(9).normal(size=100)
    r = stats.mean_ci(x, n_resamples=200)
    assert r["method"].startswith("bootstrap-percentile x200 (fallback: BCa") and "BCa" in r["fallback"]
    assert r["ci_low"] < x.mean() < r["ci_high"] and stats.ci_entry(r)["fallback"] == r["fallback"]
    ok = stats.mean_ci(x, method="percentile", n_resamples=200)
    assert ok["method"] == "bootstrap-percentile x200" and "fallback" not in ok and ok["n_resamples"] == 200
    assert stats.mean_ci([3.0] * 5)["method"].startswith("none (every item equal")


def test_seg_interval_recomputes_miou_from_summed_areas():
    from svgbench.metrics.segmentation import metrics_from_confusion

    g = np.random.default_rng(5)
    cms = g.integers(0, 50, size=(30, 4, 4)) * (g.random((30, 4, 4)) < 0.7)
    cms[:, 3, :] = 0  # class 3 never labelled: excluded from mAcc, IoU 0 where predicted
    inter = np.diagonal(cms, axis1=1, axis2=2)
    label, pred = cms.sum(2), cms.sum(1)
    r = stats.seg_ci(inter, label + pred - inter, label)
    ref = metrics_from_confusion(cms.sum(0))
    assert r["miou"]["value"] == pytest.approx(ref["miou"], abs=1e-9)
    assert r["macc"]["value"] == pytest.approx(ref["macc"], abs=1e-9)
    assert r["miou"]["ci_low"] < ref["miou"] < r["miou"]["ci_high"]
    areas = {"intersect": inter, "union": label + pred - inter, "label": label}
    same = stats.paired_seg_diff_ci(areas, areas, "miou", n_resamples=200)
    assert same["value"] == 0 and same["ci_low"] == same["ci_high"] == 0 and not same["excludes_zero"]


def test_seed_spread_speedup_and_ratio():
    s = stats.seed_spread([90.0, 92.0, 91.0], [0, 1, 2])
    assert s["mean"] == 91.0 and s["std"] == pytest.approx(1.0) and (s["min"], s["max"]) == (90.0, 92.0)
    with pytest.raises(ValueError, match="at least 3 seeds"):
        stats.seed_spread([1.0, 2.0], [0, 1])
    slow = [[1000, 60, 55, 65], [4000, 30, 27, 33]]
    fast = [[500, 40, 36, 44], [1000, 31, 28, 34], [2000, 25, 22, 28], [4000, 20, 18, 22]]
    r = stats.speedup_ci(fast, slow)
    # point: first fid <= 30 at 2000 -> 2x; optimistic: ci_low <= 33 at 1000 -> 4x; pessimistic: ci_high <= 27 at 4000 -> 1x
    assert (r["value"], r["ci_low"], r["ci_high"]) == (2.0, 1.0, 4.0)
    assert stats.speedup_ci([[100, 90, 80, 99]], slow)["ci_high"] is None
    # a slow curve that plateaus: its final FID 30.5 was first reached at 2000, not at its last step 4000
    plateau = [[1000, 60, 55, 65], [2000, 30, 27, 33], [4000, 30.5, 27.5, 33.5]]
    p = stats.speedup_ci(fast, plateau)
    assert p["slow_steps"] == 2000 and p["value"] == 1.0  # fast: first fid <= 30.5 at 2000
    q = stats.ratio_ci({"value": 10, "ci_low": 8, "ci_high": 12, "n": 5, "method": "m", "level": 0.95},
                       {"value": 5, "ci_low": 4, "ci_high": 6, "n": 5, "method": "m", "level": 0.95})
    assert (q["value"], q["ci_low"], q["ci_high"]) == (2.0, 8 / 6, 3.0)
