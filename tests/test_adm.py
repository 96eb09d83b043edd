"""The ADM evaluation protocol: FID / IS / precision / recall against a reference-batch .npz equal torch-fidelity's
own computation on the same images; the streamed .npz reader and writer; unsafe Inception files refused.

The Inception network is torch-fidelity's inception-v3-compat with random weights, saved as the plain tensor
file torch-fidelity loads (its BatchNorm statistics calibrated on noise so that features neither vanish nor
explode through 94 layers); svgbench reads it with weights_only=True first.
"""

import numpy as np
import pytest
import torch

from svgbench.checkpoints import CheckpointError
from svgbench.metrics import fidelity as fm


def random_inception_file(path, seed: int = 0):
    """A random-weight inception-v3-compat state dict at `path` (torch.save of tensors only)."""
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    torch.manual_seed(seed)
    cls = inc.FeatureExtractorInceptionV3
    orig_url, orig_load = inc.load_state_dict_from_url, cls.load_state_dict
    inc.load_state_dict_from_url = lambda *a, **k: {}
    cls.load_state_dict = lambda self, state, *a, **k: None  # keep the random initialisation
    try:
        net = cls("inception-v3-compat", ["2048"])
    finally:
        inc.load_state_dict_from_url, cls.load_state_dict = orig_url, orig_load
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)))
    net.eval()
    with torch.no_grad():  # pool features are O(10) here: keep the random logits O(1), as a trained network's
        net.fc.weight.mul_(0.03)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return random_inception_file(tmp_path_factory.mktemp("inception") / "inception.pth")


def _images(n, seed, shift=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 200 + shift
    noise = torch.rand(n, 3, 32, 32, generator=g) * 60
    return (base + noise).clamp(0, 255).to(torch.uint8)


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def test_npz_writer_reader_roundtrip(tmp_path):
    imgs = _images(7, 1)
    w = fm.AdmNpzWriter(tmp_path / "x.npz", 7, 32, 32)
    w.write(imgs[:3])
    w.write(imgs[3:])
    w.close(arr_1=np.arange(7))
    with np.load(tmp_path / "x.npz") as z:  # numpy reads what was streamed
        assert np.array_equal(z["arr_0"], imgs.permute(0, 2, 3, 1).numpy()) and list(z["arr_1"]) == list(range(7))
    back = torch.cat(list(fm.iter_npz_images(tmp_path / "x.npz", batch_size=3)))
    assert torch.equal(back, imgs) and fm.npz_image_count(tmp_path / "x.npz") == 7
    np.savez_compressed(tmp_path / "c.npz", imgs.permute(0, 2, 3, 1).numpy())  # deflated members stream too
    assert torch.equal(torch.cat(list(fm.iter_npz_images(tmp_path / "c.npz", 4))), imgs)
    short = fm.AdmNpzWriter(tmp_path / "short.npz", 5, 32, 32)
    short.write(imgs[:2])
    with pytest.raises(ValueError, match="2 images written, 5 announced"):
        short.close()
    assert not (tmp_path / "short.npz").exists()


def test_feature_moments_equal_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g) * 3 + 1
    m = fm.FeatureMoments()
    for part in x.split(7):
        m.add(part)
    mu, sigma = m.result()
    np.testing.assert_allclose(mu, x.double().numpy().mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False), rtol=1e-9, atol=1e-12)


@pytest.mark.slow  # ~40 Inception forwards at 299 px: 30-90 s on two shared cores
def test_adm_metrics_equal_torch_fidelity(tmp_path, inception):
    """Ours (features once, mu/sigma from the .npz) == torch_fidelity.calculate_metrics on the same images."""
    import torch_fidelity

    torch.set_num_threads(2)
    real, fake = _images(6, 2), _images(6, 3, shift=30)
    ext = fm.inception_extractor(inception)
    ref_path = fm.write_reference_npz(real.split(4), len(real), tmp_path / "ref.npz", extractor=ext)
    with np.load(ref_path) as z:
        assert {"arr_0", "mu", "sigma"} <= set(z.files) and z["mu"].dtype == np.float64
    ref = fm.reference_features(ref_path, ext, inception)
    assert "(mu, sigma)" in ref["stats_source"]
    sf = fm.extract_features(ext, fake, batch_size=4)
    ours = fm.adm_metrics(sf, ref, splits=2)
    direct = torch_fidelity.calculate_metrics(
        input1=fm.UInt8Images(fake), input2=fm.UInt8Images(real), fid=True, isc=True, prc=True, isc_splits=2,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception), cuda=False,
        verbose=False, cache=False, save_cpu_ram=True, batch_size=6)
    assert direct["frechet_inception_distance"] > 0 and direct["inception_score_mean"] > 1.001
    assert _rel(ours["fid"], direct["frechet_inception_distance"]) < 1e-3
    assert _rel(ours["inception_score"], direct["inception_score_mean"]) < 1e-3
    assert ours["precision"] == direct["precision"] and ours["recall"] == direct["recall"]
    # an .npz without mu / sigma: the statistics come from its images' features, the same FID
    np.savez(tmp_path / "bare.npz", real.permute(0, 2, 3, 1).numpy())
    bare = fm.reference_features(tmp_path / "bare.npz", ext, inception)
    assert "arr_0 features" in bare["stats_source"]
    assert _rel(fm.adm_metrics(sf, bare, splits=2)["fid"], ours["fid"]) < 1e-6


def test_inception_extractor_features(inception, tmp_path):
    ext = fm.inception_extractor(inception)
    seen = {}
    # the input of Mixed_6d, caught independently of svgbench's tap: its 1x1 branch is recomputed from it below
    handle = ext.Mixed_6d.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone()))
    imgs = _images(2, 5)
    try:
        f = fm.extract_features(ext, imgs)
    finally:
        handle.remove()
    assert f[fm.POOL].shape == (2, 2048) and f[fm.LOGITS].shape == (2, 1008)
    assert torch.isfinite(f[fm.POOL]).all() and f[fm.POOL].std() > 0
    # sFID features: ADM's mixed_6/conv (post-ReLU), first 7 channels, 17 x 17 x 7 flattened in NHWC order
    assert f[fm.SPATIAL].shape == (2, 17 * 17 * 7) and (f[fm.SPATIAL] >= 0).all() and f[fm.SPATIAL].std() > 0
    b = ext.Mixed_6d.branch1x1
    with torch.no_grad():
        y = torch.relu(torch.nn.functional.batch_norm(b.conv(seen["x"]), b.bn.running_mean, b.bn.running_var,
                                                      b.bn.weight, b.bn.bias, False, 0.0, b.bn.eps))
    expect = y.numpy()[:, :7].transpose(0, 2, 3, 1).reshape(2, -1)  # NCHW -> NHWC [..., :7] -> N x 2023
    np.testing.assert_allclose(f[fm.SPATIAL].numpy(), expect, rtol=1e-5, atol=1e-5)
    # a reference batch's own mu_s / sigma_s are used as ADM's evaluator reads them (not recomputed)
    mu_s, sigma_s = np.full(2023, 0.5), np.eye(2023) * 2.0
    path = tmp_path / "ref.npz"
    np.savez(path, imgs.permute(0, 2, 3, 1).numpy(), mu=np.zeros(2048), sigma=np.eye(2048), mu_s=mu_s,
             sigma_s=sigma_s)
    ref = fm.reference_features(path, ext, inception)
    assert np.array_equal(ref["mu_s"], mu_s) and np.array_equal(ref["sigma_s"], sigma_s)
    assert "(mu_s, sigma_s)" in ref["stats_source"] and fm.SPATIAL not in ref


def adm_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """guided-diffusion evaluations/evaluator.py FIDStatistics.frechet_distance, restated (scipy sqrtm)."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))  # the evaluator passes disp=False: same matrix, no printout
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def test_sfid_equals_adm_evaluator_formula():
    """sFID from the spatial features equals the evaluator's compute_statistics (np.mean, np.cov) +
    frechet_distance on the same features, with the reference's statistics from its features or given."""
    g = np.random.default_rng(0)
    n, d = 400, 60
    a = g.normal(size=(d, d)) / np.sqrt(d)
    ref_sp = g.normal(size=(n, d)) @ a + 1.0
    smp_sp = g.normal(size=(n, d)) @ (a * 1.3) + 0.8
    pool = torch.from_numpy(g.normal(size=(n, 16))).float()
    samples = {fm.POOL: pool, fm.LOGITS: torch.randn(n, 10), fm.SPATIAL: torch.from_numpy(smp_sp)}
    p = pool.double().numpy()
    mu_s, sigma_s = ref_sp.mean(0), np.cov(ref_sp, rowvar=False)
    reference = {fm.POOL: pool + 0.1, "mu": p.mean(0) + 0.1, "sigma": np.cov(p, rowvar=False), "mu_s": mu_s,
                 "sigma_s": sigma_s}
    got = fm.adm_metrics(samples, reference, splits=2)
    expect = adm_frechet_distance(smp_sp.mean(0), np.cov(smp_sp, rowvar=False), mu_s, sigma_s)
    assert expect > 1.0
    assert _rel(got["sfid"], expect) < 1e-8, (got["sfid"], expect)
    # the streamed float64 moments are np.mean / np.cov's
    mu, sigma = fm.moments_of(torch.from_numpy(smp_sp), chunk=7)
    np.testing.assert_allclose(mu, smp_sp.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(smp_sp, rowvar=False), rtol=1e-9, atol=1e-12)
    # without spatial features on either side: None, never another number
    assert fm.adm_metrics({k: v for k, v in samples.items() if k != fm.SPATIAL}, reference, splits=2)["sfid"] is None
    assert fm.adm_metrics(samples, reference | {"mu_s": None}, splits=2)["sfid"] is None


def test_pickled_inception_file_is_refused(tmp_path, inception):
    from fractions import Fraction

    state = torch.load(inception, weights_only=True)
    torch.save(state | {"note": Fraction(1, 3)}, tmp_path / "evil.pth")  # any object beyond tensors
    with pytest.raises(CheckpointError, match="unpickle"):
        fm.inception_extractor(tmp_path / "evil.pth")
