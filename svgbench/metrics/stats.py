"""Uncertainty of benchmark numbers: bootstrap confidence intervals, paired differences, seed spread.

Every interval comes from `scipy.stats.bootstrap` (seeded `rng`, vectorised statistics). Statistics
that are not means of per-item values (segmentation IoU from summed areas, Fréchet distance from
feature moments) are bootstrapped the same way by handing scipy the item *indices* as the data and
recomputing the statistic from the resampled indices, so no hand-written resampling loop exists.

Every interval function returns a dict {"value", "ci_low", "ci_high", "n", "method", "n_resamples",
"level"}: value is the point of the same estimand as the interval (the number the task reports), n the
number of resampled items (for two-sample statistics, "n" is the smaller sample and "n_ref" the other),
method names what ran ("bootstrap-BCa x1000", ...; a BCa interval that could not be formed and fell back
to the percentile interval says so, and carries "fallback"), level the coverage it stands for (0.95, or
for a Fréchet distance in a regime where coverage was measured outside 93-97%, the measured coverage,
with "level_measured_by"). All floats are finite or the function raises; callers that may see
degenerate inputs check first.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

LEVEL = 0.95
N_RESAMPLES = 1000
FD_RESAMPLES = 200  # Fréchet distance: one eigendecomposition per resample, so fewer than for means


def _result(value, low, high, n, method, n_resamples, level, fallback=None, **extra) -> dict:
    label = f"bootstrap-{method} x{n_resamples}" + (f" ({fallback})" if fallback else "")
    out = {"value": float(value), "ci_low": float(low), "ci_high": float(high), "n": int(n), "method": label,
           "n_resamples": int(n_resamples), "level": float(level), **extra}
    if fallback:
        out["fallback"] = fallback
    return out


def _no_spread(value, n, level) -> dict:
    """Every item equal: no resampling can move the statistic, so the interval is the point (nothing ran)."""
    return {"value": float(value), "ci_low": float(value), "ci_high": float(value), "n": int(n),
            "method": "none (every item equal: zero-width interval)", "n_resamples": 0, "level": float(level)}


def _bootstrap(data, statistic, *, paired=False, method="BCa", n_resamples=N_RESAMPLES, level=LEVEL, seed=0,
               batch=None):
    """scipy.stats.bootstrap with this module's defaults -> (low, high, method that ran, fallback or None).
    A BCa interval that scipy cannot form (e.g. every resample equal) falls back to the percentile interval
    of the same resamples, and the method returned is then "percentile"."""
    from scipy.stats import bootstrap

    kw = dict(statistic=statistic, paired=paired, vectorized=True, n_resamples=n_resamples,
              confidence_level=level, rng=np.random.default_rng(seed), batch=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: handled below
        res = bootstrap(data, method=method, **kw)
        low, high = res.confidence_interval
        ran, fallback = method, None
        if method.lower() == "bca" and not (np.isfinite(low) and np.isfinite(high)):
            dist = res.bootstrap_distribution
            alpha = (1 - level) / 2
            low, high = np.quantile(dist, [alpha, 1 - alpha])
            ran, fallback = "percentile", "fallback: BCa undefined on these resamples"
    return float(low), float(high), ran, fallback


_CI_EXTRA = ("n_resamples", "fallback", "nominal_level", "level_measured", "level_measured_by", "estimand",
             "plugin", "bias")


def ci_entry(res: dict) -> dict:
    """The record's form of an interval: {"ci_low", "ci_high", "n", "method", "level"} and those of
    "n_resamples", "fallback", "nominal_level", "level_measured", "level_measured_by", "estimand", "plugin",
    "bias" that the interval carries; a Fréchet interval adds "point", the value of its estimand."""
    out = {k: res[k] for k in ("ci_low", "ci_high", "n", "method", "level")} | {
        k: res[k] for k in _CI_EXTRA if k in res}
    if "plugin" in res:  # a Fréchet interval: its own (bias-corrected) point, for callers that show the plug-in
        out["point"] = res["value"]
    return out


def _values(x, what="values") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"{what}: need at least 2 items for an interval, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x)).sum())} non-finite of {x.size}")
    return x


##################################################################################################
# Means and paired differences
##################################################################################################


def mean_ci(values, *, method: str = "BCa", n_resamples: int = N_RESAMPLES, level: float = LEVEL,
            seed: int = 0) -> dict:
    """Interval of the mean of per-item values (accuracy: 0/1 or 0/100 correctness, PSNR in dB, ...)."""
    x = _values(values)
    if np.all(x == x[0]):  # no spread: every resample has the same mean, and BCa is undefined
        return _no_spread(x[0], x.size, level)
    low, high, ran, fb = _bootstrap((x,), np.mean, method=method, n_resamples=n_resamples, level=level, seed=seed)
    return _result(x.mean(), low, high, x.size, ran, n_resamples, level, fb)


def _mean_diff(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def paired_diff_ci(a, b, *, method: str = "BCa", n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                   seed: int = 0) -> dict:
    """Interval of mean(a) - mean(b) over the same items (a[i], b[i] measured on item i): one set of
    resampled indices for both. Adds "excludes_zero"."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same items: {a.size} vs {b.size}")
    d = a - b
    if np.all(d == d[0]):
        out = _no_spread(d[0], d.size, level)
    else:
        low, high, ran, fb = _bootstrap((a, b), _mean_diff, paired=True, method=method, n_resamples=n_resamples,
                                        level=level, seed=seed)
        out = _result(d.mean(), low, high, d.size, ran, n_resamples, level, fb)
    out["excludes_zero"] = bool(out["ci_low"] > 0 or out["ci_high"] < 0)
    return out


def unpaired_diff_ci(a, b, *, method: str = "percentile", n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                     seed: int = 0) -> dict:
    """Interval of mean(a) - mean(b) for independent samples (each resampled on its own)."""
    a, b = _values(a, "a"), _values(b, "b")
    low, high, ran, fb = _bootstrap((a, b), _mean_diff, method=method, n_resamples=n_resamples, level=level,
                                    seed=seed)
    out = _result(a.mean() - b.mean(), low, high, min(a.size, b.size), ran, n_resamples, level, fb)
    out["excludes_zero"] = bool(low > 0 or high < 0)
    return out


##################################################################################################
# Segmentation: mIoU / mAcc from per-image areas
##################################################################################################


def _seg_from_sums(inter, union, label, pct=True):
    """... x C summed areas -> (mIoU, mAcc), mmseg's NaN rules (a class with a zero denominator is left out)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
        acc = np.where(label > 0, inter / np.where(label > 0, label, 1), np.nan)
    scale = 100.0 if pct else 1.0
    # all-NaN rows only arise for an all-ignore resample; nanmean's warning is not informative there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return scale * np.nanmean(iou, axis=-1), scale * np.nanmean(acc, axis=-1)


def seg_ci(intersect, union, label_area, *, method: str = "percentile", n_resamples: int = N_RESAMPLES,
           level: float = LEVEL, seed: int = 0) -> dict:
    """Intervals of mIoU and mAcc (percent) by resampling images and recomputing both from the summed
    per-class areas (mmseg's definition: IoU_c = sum_i I_ic / sum_i U_ic, not a mean of per-image IoUs).

    intersect, union, label_area: N images x C classes pixel counts (label_area = pixels labelled c).
    -> {"miou": interval dict, "macc": interval dict}.
    """
    inter, uni, lab = (np.asarray(a, dtype=np.float64) for a in (intersect, union, label_area))
    if inter.ndim != 2 or inter.shape != uni.shape or inter.shape != lab.shape or inter.shape[0] < 2:
        raise ValueError(f"need N >= 2 images x C classes areas of one shape, got {inter.shape}, {uni.shape}, "
                         f"{lab.shape}")
    n = inter.shape[0]
    idx = np.arange(n)
    # scipy resamples the image indices; the statistic sums the areas of the drawn images
    batch = max(1, int(2e7 // (n * inter.shape[1])))

    def stat(which):
        def f(i, axis=-1):
            return _seg_from_sums(inter[i].sum(-2), uni[i].sum(-2), lab[i].sum(-2))[which]
        return f

    miou, macc = _seg_from_sums(inter.sum(0), uni.sum(0), lab.sum(0))
    out = {}
    for which, key, value in ((0, "miou", miou), (1, "macc", macc)):
        low, high, ran, fb = _bootstrap((idx,), stat(which), method=method, n_resamples=n_resamples,
                                        level=level, seed=seed, batch=batch)
        out[key] = _result(value, low, high, n, ran, n_resamples, level, fb)
    return out


def paired_seg_diff_ci(areas_a: dict, areas_b: dict, key: str = "miou", *, n_resamples: int = N_RESAMPLES,
                       level: float = LEVEL, seed: int = 0) -> dict:
    """Interval of metric(a) - metric(b), `key` in {"miou", "macc"}, resampling the same images for both.
    areas_*: {"intersect", "union", "label"} N x C counts on the same N images in the same order."""
    which = {"miou": 0, "macc": 1}[key]
    a = [np.asarray(areas_a[k], dtype=np.float64) for k in ("intersect", "union", "label")]
    b = [np.asarray(areas_b[k], dtype=np.float64) for k in ("intersect", "union", "label")]
    if a[0].shape[0] != b[0].shape[0]:
        raise ValueError(f"paired seg areas need the same images: {a[0].shape[0]} vs {b[0].shape[0]}")
    n = a[0].shape[0]

    def f(i, axis=-1):
        va = _seg_from_sums(*(x[i].sum(-2) for x in a))[which]
        vb = _seg_from_sums(*(x[i].sum(-2) for x in b))[which]
        return va - vb

    value = f(np.arange(n))
    batch = max(1, int(2e7 // (n * (a[0].shape[1] + b[0].shape[1]))))
    low, high, ran, fb = _bootstrap((np.arange(n),), f, method="percentile", n_resamples=n_resamples,
                                    level=level, seed=seed, batch=batch)
    out = _result(value, low, high, n, ran, n_resamples, level, fb)
    out["excludes_zero"] = bool(low > 0 or high < 0)
    return out


##################################################################################################
# Fréchet distance from features
##################################################################################################


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), via torch-fidelity's formula (float64)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    s1 = {"mu": np.asarray(mu1, np.float64), "sigma": np.atleast_2d(np.asarray(sigma1, np.float64))}
    s2 = {"mu": np.asarray(mu2, np.float64), "sigma": np.atleast_2d(np.asarray(sigma2, np.float64))}
    return float(fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"])


def _sqrt_eig_sum(m: np.ndarray) -> float:
    """sum of sqrt(eigenvalues) of a symmetric PSD matrix (LAPACK syevr)."""
    from scipy.linalg import eigh

    return float(np.sqrt(np.clip(eigh(m, eigvals_only=True, driver="evr", check_finite=False), 0, None)).sum())


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr (S1 S2)^(1/2) of two D x D covariance matrices. With S = L L^T (Cholesky), the eigenvalues of S1 S2
    are the squared singular values of L1^T L2, so the trace is their sum: two Cholesky factors and one SVD
    without vectors, 1.7x faster than an eigendecomposition with vectors at D = 256. A singular S (a constant
    or duplicated feature) has no Cholesky factor; then the eigenvalues of S1^(1/2) S2 S1^(1/2) (eigh)."""
    from scipy.linalg import LinAlgError, cholesky, eigh, svdvals

    try:
        l1 = cholesky(s1, lower=True, check_finite=False)
        l2 = cholesky(s2, lower=True, check_finite=False)
    except LinAlgError:
        ev, vec = eigh(s1, driver="evr", check_finite=False)
        root = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
        return _sqrt_eig_sum(root @ s2 @ root)
    return float(svdvals(l1.T @ l2, check_finite=False).sum())


def _fd_weighted(x1, x2, w1, w2, grams=None) -> np.ndarray:
    """Fréchet distances for B resamples given as row counts w1 (B x N1), w2 (B x N2) of centred float64
    features x1, x2. grams: (X1 X1^T, X2 X2^T, X1 X2^T), used when D > min(N1, N2).

    Sample covariance S = A^T A with A = diag(sqrt w) (X - mu) / sqrt(n - 1), so tr (S1 S2)^(1/2) = the
    nuclear norm of A1 A2^T. With D <= min(N1, N2): eigh in D x D (S1^(1/2) S2 S1^(1/2)); otherwise
    A1 A2^T comes from the Gram matrices in O(N1 N2) per resample and the eigenvalues are those of an
    N-square matrix. Written here because torch-fidelity's formula takes one D x D pair at a time.
    """
    n1, n2 = w1.sum(1, keepdims=True), w2.sum(1, keepdims=True)
    out = np.empty(len(w1))
    if grams is None:
        mu1, mu2 = (w1 @ x1) / n1, (w2 @ x2) / n2  # B x D
        for b in range(len(w1)):  # one D x D eigendecomposition pair per resample
            s1 = ((x1 * w1[b, :, None]).T @ x1 - n1[b] * np.outer(mu1[b], mu1[b])) / (n1[b] - 1)
            s2 = ((x2 * w2[b, :, None]).T @ x2 - n2[b] * np.outer(mu2[b], mu2[b])) / (n2[b] - 1)
            d = mu1[b] - mu2[b]
            out[b] = d @ d + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2)
        return out
    g11, g22, g12 = grams
    p1, p2 = w1 / n1, w2 / n2  # resampling weights summing to 1
    r1 = p2 @ g12.T  # B x N1: x1_i . mu2
    c2 = p1 @ g12  # B x N2: x2_j . mu1
    m11 = (p1 * (p1 @ g11)).sum(-1)  # mu1 . mu1
    m22 = (p2 * (p2 @ g22)).sum(-1)
    m12 = (p1 * r1).sum(-1)  # mu1 . mu2
    tr1 = ((w1 * np.diag(g11)).sum(-1) - n1[:, 0] * m11) / (n1[:, 0] - 1)
    tr2 = ((w2 * np.diag(g22)).sum(-1) - n2[:, 0] * m22) / (n2[:, 0] - 1)
    for b in range(len(w1)):
        # (x1_i - mu1) . (x2_j - mu2) = g12_ij - x1_i . mu2 - mu1 . x2_j + mu1 . mu2
        a = (g12 - r1[b][:, None] - c2[b][None, :] + m12[b]) * np.sqrt(w1[b] / (n1[b] - 1))[:, None] \
            * np.sqrt(w2[b] / (n2[b] - 1))[None, :]
        a = a[w1[b] > 0][:, w2[b] > 0]  # rows never drawn are zero: dropping them shrinks the eigenproblem
        m = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
        out[b] = m11[b] + m22[b] - 2 * m12[b] + tr1[b] + tr2[b] - 2 * _sqrt_eig_sum(m)
    return out


def _frechet_boot(gen_features, ref_features, *, paired: bool, method: str, n_resamples: int, level: float,
                  seed: int, batch: int):
    """The plug-in distance on all rows and scipy's bootstrap result (its interval and the resampled
    distances) -> (value, n1, n2, scipy BootstrapResult). paired: rows i of both sets belong together
    (an image and its reconstruction) and are resampled together."""
    x1 = np.asarray(gen_features, dtype=np.float64)
    x2 = np.asarray(ref_features, dtype=np.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1] or min(len(x1), len(x2)) < 2:
        raise ValueError(f"need N x D features with the same D and N >= 2, got {x1.shape}, {x2.shape}")
    if paired and len(x1) != len(x2):
        raise ValueError(f"paired Fréchet interval: row i of each set is one item, got {len(x1)} vs {len(x2)} rows")
    if not (np.isfinite(x1).all() and np.isfinite(x2).all()):
        raise ValueError("features contain NaN/inf")
    center = np.concatenate([x1, x2]).mean(0)  # the distance is translation invariant; centring keeps float64 exact
    t1, t2 = x1 - center, x2 - center
    n1, n2 = len(x1), len(x2)

    grams = None if x1.shape[1] <= min(n1, n2) else (t1 @ t1.T, t2 @ t2.T, t1 @ t2.T)

    def stat(i1, i2, axis=-1):
        single = np.ndim(i1) == 1  # scipy probes the statistic once on the original data
        i1, i2 = np.atleast_2d(i1), np.atleast_2d(i2)
        w1 = np.stack([np.bincount(r, minlength=n1) for r in i1]).astype(np.float64)
        w2 = np.stack([np.bincount(r, minlength=n2) for r in i2]).astype(np.float64)
        # two halves of the batch on two threads (LAPACK and BLAS release the GIL): 1.25x on 2 cores
        h = (len(w1) + 1) // 2
        fd = np.concatenate(list(pool.map(lambda s: _fd_weighted(t1, t2, w1[s], w2[s], grams),
                                          (slice(0, h), slice(h, None)))))
        return fd[0] if single else fd

    from concurrent.futures import ThreadPoolExecutor

    from scipy.stats import bootstrap
    from threadpoolctl import threadpool_limits

    # Many small eigenproblems: OpenBLAS threads cost more than they gain here (measured 70x slower with
    # 2 threads on a busy 2-core machine), so BLAS runs single-threaded for the resamples.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(2) as pool:
        # the same formula on all rows: equal to torch-fidelity's (`frechet_distance`, tested), whose
        # non-symmetric eigvals on D x D takes minutes at D = 2048 on a small CPU
        value = float(_fd_weighted(t1, t2, np.ones((1, n1)), np.ones((1, n2)), grams)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((np.arange(n1), np.arange(n2)), stat, paired=paired, vectorized=True,
                            n_resamples=n_resamples, confidence_level=level, method=method,
                            rng=np.random.default_rng(seed), batch=batch)
    return value, n1, n2, res


# Coverage of frechet_ci's default interval (bias-corrected normal, below) of the population Fréchet distance,
# measured by tests/test_coverage.py (`measure_frechet_coverage`; the 200-trial runs are its slow tests): 200
# seeded trials of Gaussian features whose population is the shapes judge's 256-d feature covariance (512
# images of shapes/val) against a second Gaussian at a known distance (generated samples) or, paired row by
# row, a reconstruction-like map of the first (y = R x + e). Coverage depends on the distance as well as on
# D and n (paired n=512: 97.5% at 5, 91.5% at 36), so each regime holds measurements at the distances of the
# embedded results (judge-FIDs 30-90, judge-rFIDs 4-5 and 40-74), and an interval takes the one nearest its
# point (in log distance). Keyed by (D, n_gen, n_ref, paired): ((calibration target, population distance,
# coverage, trials, resamples per trial), ...). The interval's spread is a standard deviation of the
# resampled distances, which 50 resamples estimate about as well as 200 (D=256 n=200: 0.965 with the first 50
# of the same 200 resamples, 0.970 with all 200), so the n=512 regimes were measured with 50 resamples a
# trial (a D x D eigenproblem each) and are used with 200.
FD_COVERAGE = {
    (256, 200, 200, False): ((32.0, 32.0, 0.970, 200, 200), (80.0, 80.0, 0.970, 200, 200)),
    (256, 512, 512, False): ((32.0, 32.0, 0.955, 200, 50), (80.0, 80.0, 0.940, 200, 50)),
    # the reconstruction map reaches 35.8 at its largest scale (target 40)
    (256, 512, 512, True): ((5.0, 5.0, 0.975, 200, 50), (40.0, 35.8, 0.915, 200, 50)),
}
FD_REGIMES = {(256, 200, 200, False): "sampling preset: 200 samples vs 200 reference images",
              (256, 512, 512, False): "generation: 512 samples vs 512 reference images",
              (256, 512, 512, True): "reconstruction: 512 images and their reconstructions, paired"}
# Measured alongside, on the same trials (so not tabulated): at D=256 n=200 (distance 32) the basic interval
# with 200 resamples covers 95.0% but its plug-in point lies outside it in 2.5% of trials (the bias-corrected
# point never); the percentile interval 7.0%; a normal interval around the plug-in 69.5% (n=200), 84.5%
# (n=512), 88.5% (paired, n=512). Reconstruction rows resampled as two independent sets (the earlier
# judge-rFID interval) lose their pairing: in 100 trials (50 resamples) the basic interval covered 56% and
# excluded its own plug-in point in 60%, the bias-corrected normal one covered 80% (a slow test).
FD_COVERAGE_N_TOL = 0.05  # a regime within 5% of a measured sample count counts as measured (curves: n=500)
FD_METHOD = "normal-bc"


def frechet_level(d: int, n_gen: int, n_ref: int, paired: bool, distance: float, method: str = FD_METHOD,
                  level: float = LEVEL) -> dict:
    """The level a Fréchet interval of `method` around `distance` may claim in the regime (D, n_gen, n_ref,
    paired): {"level", "nominal_level", "level_measured", "level_measured_by"}, from the measurement at the
    distance nearest `distance`. A measured coverage within 93-97% keeps the nominal 0.95; outside, the level
    is the measured coverage (never labelled 95%); a regime or method never measured keeps the nominal level
    and says so."""
    out = {"nominal_level": float(level), "level_measured": None}
    if method == FD_METHOD and level == LEVEL:
        for (md, mg, mr, mp), runs in FD_COVERAGE.items():
            if md == d and mp == paired and abs(n_gen - mg) <= FD_COVERAGE_N_TOL * mg \
                    and abs(n_ref - mr) <= FD_COVERAGE_N_TOL * mr:
                at = math.log(max(distance, 1e-6))
                _, dist, cov, trials, res = min(runs, key=lambda r: abs(math.log(r[1]) - at))
                out["level"] = float(level) if 0.93 <= cov <= 0.97 else float(cov)
                out["level_measured"] = float(cov)
                out["level_measured_by"] = (
                    f"coverage test tests/test_coverage.py, {trials} trials, D={md} n={mg} vs {mr}"
                    f"{' paired' if mp else ''} ({FD_REGIMES.get((md, mg, mr, mp), '')}), distance {dist:g}, "
                    f"{res} resamples a trial: {cov:.3f}")
                return out
    out["level"] = float(level)
    out["level_measured_by"] = (f"not measured at D={d} n={n_gen} vs {n_ref}{' paired' if paired else ''}"
                                f" ({method}): the nominal level")
    return out


def frechet_ci(gen_features, ref_features, *, paired: bool = False, method: str = FD_METHOD,
               n_resamples: int = FD_RESAMPLES, level: float = LEVEL, seed: int = 0, batch: int = 8) -> dict:
    """Interval of the population Fréchet distance between the distributions of generated (N1 x D) and
    reference (N2 x D) features, resampling the rows of each set independently (paired: row i of both sets
    is one item, an image and its reconstruction, and rows are resampled together) and recomputing the
    distance from the moments.

    The plug-in distance on all rows (torch-fidelity's number, "plugin") is biased upwards by roughly
    tr(S1)/N1 + tr(S2)/N2 (+4.2 at D=256, N=200 on the judge's features). The point ("value") and the
    interval are of one estimand, the population distance: value = plug-in - bootstrap bias estimate
    (2 plugin - mean of the resampled distances, "bias" = plugin - value).
    method "normal-bc" (default): value +- z * sd of the resampled distances. Measured, not assumed
    (FD_COVERAGE): at D=256, N=200, distance 32 it covers 97.0% where the percentile interval covers 7% and a
    plug-in-centred one 70%; scipy has no normal bootstrap interval, hence written here. "basic": scipy's basic
    (reverse percentile) interval, 95.0% there. Not offered: the percentile interval (around plugin + bias,
    it can exclude its own plug-in point; 7% there) and BCa (a jackknife of N distances). Clipped at 0.
    "level" is what coverage measured in this regime supports (frechet_level). Cost: about 3-9 s for 200
    resamples at 512 x 64..2048 on one core.
    """
    from scipy.stats import norm

    if method not in ("normal-bc", "basic"):
        raise ValueError(f"frechet_ci: method {method!r} is not one of normal-bc, basic")
    run = "percentile" if method == "normal-bc" else method  # normal-bc needs only the resampled distances
    plugin, n1, n2, res = _frechet_boot(gen_features, ref_features, paired=paired, method=run,
                                        n_resamples=n_resamples, level=level, seed=seed, batch=batch)
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    value = 2 * plugin - float(dist.mean())
    if method == "normal-bc":
        half = float(norm.ppf(0.5 + level / 2)) * float(dist.std(ddof=1))
        low, high = value - half, value + half
    else:
        low, high = res.confidence_interval
    low, high, value = max(low, 0.0), max(high, 0.0), max(value, 0.0)
    lv = frechet_level(np.shape(gen_features)[1], n1, n2, paired, value, method, level)
    return _result(value, low, high, min(n1, n2), method, n_resamples, lv.pop("level"), n_gen=n1, n_ref=n2,
                   paired=bool(paired), plugin=plugin, bias=plugin - value, estimand="population Fréchet distance",
                   **lv)


##################################################################################################
# Seeds and curves
##################################################################################################


def seed_spread(values, seeds) -> dict:
    """Spread of one metric over independent training / sampling seeds (>= 3):
    {"mean", "std" (ddof 1), "min", "max", "seeds", "values"}."""
    v = _values(values, "seed values")
    seeds = [int(s) for s in seeds]
    if len(seeds) != v.size or v.size < 3:
        raise ValueError(f"need one value per seed and at least 3 seeds, got {v.size} values, {len(seeds)} seeds")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)), "min": float(v.min()), "max": float(v.max()),
            "seeds": seeds, "values": [float(x) for x in v]}


def steps_to_reach(curve, target: float) -> float | None:
    """The first evaluated training step whose FID is <= target, or None. curve: [(step, fid), ...]."""
    for step, fid in sorted(curve, key=lambda p: p[0]):
        if fid is not None and math.isfinite(fid) and fid <= target:
            return float(step)
    return None


def speedup_ci(fast_curve, slow_curve) -> dict:
    """How many times fewer training steps the `fast` latent needs to reach the `slow` latent's final FID.

    Curves: [(step, fid, ci_low, ci_high), ...] evaluated points. The slow run's final point sets the
    target [t_low, t_high]; the fast run reaches it at the first step where its FID is <= the target
    (point value: fid <= final fid), at the earliest where ci_low <= t_high (optimistic) and at the latest
    where ci_high <= t_low (pessimistic). Both runs are timed alike: the slow run's steps are its own first
    step at or below its final FID (a curve that plateaus early reached its final level there, not at its
    last step). ratio = slow steps / fast step; the interval comes from the two bounds. The resolution is
    that of the evaluated steps. A bound that is never reached within the fast curve is None ("not within
    the evaluated steps"). -> {"value", "ci_low", "ci_high", "n", "method", "level", "target", "steps",
    "steps_low", "steps_high", "slow_steps"}.
    """
    slow = sorted((list(p) for p in slow_curve), key=lambda p: p[0])
    fast = sorted((list(p) for p in fast_curve), key=lambda p: p[0])
    if not slow or not fast:
        raise ValueError("both curves need at least one evaluated point")
    _, s_fid, s_lo, s_hi = (float(v) for v in slow[-1][:4])
    s_step = steps_to_reach([(p[0], p[1]) for p in slow], s_fid)
    at = steps_to_reach([(p[0], p[1]) for p in fast], s_fid)
    early = steps_to_reach([(p[0], p[2]) for p in fast], s_hi)
    late = steps_to_reach([(p[0], p[3]) for p in fast], s_lo)

    def ratio(step):
        return None if step is None or step <= 0 else s_step / step

    return {"value": ratio(at), "ci_low": ratio(late), "ci_high": ratio(early), "n": len(fast),
            "method": "first evaluated step within the FID intervals", "level": LEVEL,
            "target": [s_fid, s_lo, s_hi], "steps": at, "steps_low": early, "steps_high": late,
            "slow_steps": s_step}


def ratio_ci(num: dict, den: dict) -> dict:
    """num / den for two positive interval dicts, with the conservative interval [lo_n / hi_d, hi_n / lo_d]
    (covers the true ratio whenever both intervals cover their truths)."""
    if den["ci_low"] <= 0 or num["ci_low"] < 0:
        raise ValueError("ratio_ci needs a positive denominator interval and a non-negative numerator")
    return {"value": num["value"] / den["value"], "ci_low": num["ci_low"] / den["ci_high"],
            "ci_high": num["ci_high"] / den["ci_low"], "n": min(num["n"], den["n"]),
            "method": f"ratio of intervals ({num['method']})", "level": min(num["level"], den["level"])}


##################################################################################################
# Two-sided training speed-up; paired few-step FID ratio
##################################################################################################


def _first_step(points, ok) -> float | None:
    """The first evaluated step of sorted [step, fid, ci_low, ci_high] points where ok(point) holds, or None."""
    return next((float(p[0]) for p in points if ok(p)), None)


def _grid(points) -> float | None:
    """The widest gap between evaluated steps (the first point's gap counts from step 0): the resolution at
    which a curve says when it reached a level."""
    steps = [0.0] + [float(p[0]) for p in points]
    return max(b - a for a, b in zip(steps, steps[1:])) if len(steps) > 1 else None


def speedup_two_sided(fast_curve, slow_curve) -> dict:
    """How many times fewer training steps the `fast` latent needs than the `slow` one to reach the slow
    latent's final FID, with both curves' uncertainty in the interval.

    Curves: [(step, fid, ci_low, ci_high), ...] evaluated points, each interval taken as a bound on the
    population FID at that step. The target is the slow curve's final population FID, inside [t_low, t_high]
    (its final interval). Each curve's step of reaching it is bounded: at the earliest the first step whose
    ci_low <= t_high (it may be there), at the latest the first step whose ci_high <= t_low (it must be
    there; for the slow curve at the latest its final step, where the target is its own value). The low end
    of the speed-up pairs the slow curve's earliest with the fast curve's latest step (the reading least
    favourable to "fast"), the high end the opposite; the point uses the point FIDs. All on the evaluated
    steps: `grid` is the widest gap between them. When the curves share their steps, a low end above 1
    still means a speed-up above 1 between grid points (the slow curve's first crossing lies after its
    previous evaluated step, which is at or after the fast curve's), but not how much above.
    A bound the fast curve never reaches is None. -> {"value", "ci_low", "ci_high", "n", "method", "level",
    "target", "fast_steps" [earliest, point, latest], "slow_steps" [earliest, point, latest], "grid"}.
    `level` is the per-point intervals' level; the interval's own coverage is measured in
    tests/test_findings.py (synthetic curves with a known crossing).
    """
    slow = sorted(([float(v) for v in p[:4]] for p in slow_curve), key=lambda p: p[0])
    fast = sorted(([float(v) for v in p[:4]] for p in fast_curve), key=lambda p: p[0])
    if not slow or not fast or any(len(p) < 4 for p in slow + fast):
        raise ValueError("both curves need evaluated points [step, fid, ci_low, ci_high]")
    _, t, t_lo, t_hi = slow[-1]
    s_late = _first_step(slow, lambda p: p[3] <= t_lo)
    s = [_first_step(slow, lambda p: p[2] <= t_hi), _first_step(slow, lambda p: p[1] <= t),
         slow[-1][0] if s_late is None else s_late]
    f = [_first_step(fast, lambda p: p[2] <= t_hi), _first_step(fast, lambda p: p[1] <= t),
         _first_step(fast, lambda p: p[3] <= t_lo)]

    def ratio(num, den):
        return None if num is None or den is None or den <= 0 else num / den

    grids = [g for g in (_grid(slow), _grid(fast)) if g is not None]
    return {"value": ratio(s[1], f[1]), "ci_low": ratio(s[0], f[2]), "ci_high": ratio(s[2], f[0]),
            "n": len(fast) + len(slow), "level": LEVEL, "target": [t, t_lo, t_hi], "fast_steps": f,
            "slow_steps": s, "grid": max(grids) if grids else None,
            "method": "two-sided: both curves' per-step intervals, least favourable pairing"}


# The nominal level of the paired log-ratio interval whose coverage is 95% in the sampling preset's regime
# (the judge's D = 256, n = 200 generated and 200 reference samples): a nominal 95% basic interval covered
# 90.0% of 200 synthetic trials there, a percentile one 84.5%, a nominal 98% basic one 95.0%
# (tests/test_findings.py re-measures it)
LOG_RATIO_NOMINAL = 0.98


def frechet_log_ratio_ci(gen_a, gen_b, ref_features, *, method: str = "basic", n_resamples: int = FD_RESAMPLES,
                         level: float = LOG_RATIO_NOMINAL, seed: int = 0, batch: int = 8) -> dict:
    """Interval of log(FD(a, ref) / FD(b, ref)) where row i of `gen_a` and of `gen_b` come from the same
    sample (the same noise sampled at two settings): one resample of generated rows serves both distances,
    and one resample of the reference rows, so what the two sets share cancels in the ratio.

    Basic (reverse-percentile) bootstrap on the log ratio; the point is the bootstrap's median-bias-corrected
    estimate 2 r - median(r*), the same estimand as the interval's (the population ratio) and always inside
    it. The plug-in log ratio is "plug_in". Its coverage in the sampling preset's regime (the judge's
    D = 256, n = 200 for each set) is measured in tests/test_findings.py; `level` is the nominal one
    (LOG_RATIO_NOMINAL: the one measured to cover 95% there).
    -> {"value", "ci_low", "ci_high" (log ratio), "ratio", "ratio_low", "ratio_high", "plug_in", "n",
    "method", "level"}.
    """
    from concurrent.futures import ThreadPoolExecutor

    from scipy.stats import bootstrap
    from threadpoolctl import threadpool_limits

    xa, xb, xr = (np.asarray(x, dtype=np.float64) for x in (gen_a, gen_b, ref_features))
    if xa.ndim != 2 or xa.shape != xb.shape or xr.ndim != 2 or xr.shape[1] != xa.shape[1] or min(len(xa), len(xr)) < 2:
        raise ValueError(f"need paired N x D generated features (same shape) and M x D reference features, got "
                         f"{xa.shape}, {xb.shape}, {xr.shape}")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all() and np.isfinite(xr).all()):
        raise ValueError("features contain NaN/inf")
    center = np.concatenate([xa, xb, xr]).mean(0)
    ta, tb, tr = xa - center, xb - center, xr - center
    n1, n2 = len(ta), len(tr)
    gram = xa.shape[1] > min(n1, n2)
    grams_a = (ta @ ta.T, tr @ tr.T, ta @ tr.T) if gram else None
    grams_b = (tb @ tb.T, grams_a[1], tb @ tr.T) if gram else None

    def log_ratio(w1, w2):
        fa = _fd_weighted(ta, tr, w1, w2, grams_a)
        fb = _fd_weighted(tb, tr, w1, w2, grams_b)
        return np.log(np.maximum(fa, 1e-300)) - np.log(np.maximum(fb, 1e-300))

    def stat(i1, i2, axis=-1):
        single = np.ndim(i1) == 1
        i1, i2 = np.atleast_2d(i1), np.atleast_2d(i2)
        w1 = np.stack([np.bincount(r, minlength=n1) for r in i1]).astype(np.float64)
        w2 = np.stack([np.bincount(r, minlength=n2) for r in i2]).astype(np.float64)
        h = (len(w1) + 1) // 2
        out = np.concatenate(list(pool.map(lambda s: log_ratio(w1[s], w2[s]), (slice(0, h), slice(h, None)))))
        return out[0] if single else out

    # many small eigenproblems: single-threaded BLAS, two halves of a batch on two threads (as frechet_ci)
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(2) as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = float(log_ratio(np.ones((1, n1)), np.ones((1, n2)))[0])
        res = bootstrap((np.arange(n1), np.arange(n2)), stat, vectorized=True, n_resamples=n_resamples,
                        confidence_level=level, method=method, rng=np.random.default_rng(seed), batch=batch)
    low, high = (float(v) for v in res.confidence_interval)
    # the basic interval corrects the plug-in's bias; its point does the same (median: always inside)
    value = 2 * r - float(np.median(res.bootstrap_distribution)) if method == "basic" else r
    return {"value": value, "ci_low": low, "ci_high": high, "ratio": math.exp(value), "ratio_low": math.exp(low),
            "ratio_high": math.exp(high), "plug_in": r, "n": n1, "n_ref": n2,
            "method": f"paired bootstrap-{method} x{n_resamples} on the log ratio (nominal {100 * level:.3g}%)",
            "level": float(level)}
