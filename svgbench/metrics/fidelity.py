"""FID / KID / precision-recall through torch-fidelity, on in-memory uint8 images.

torch-fidelity takes Datasets of bare uint8 tensors (3 x H x W). Feature extractors are its own
(`inception-v3-compat` with a local weights file) or any registered through its
`register_feature_extractor` (svgbench's judge network for the embedded default).
"""

from __future__ import annotations

import torch


class UInt8Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W uint8 images, got {tuple(images.shape)} {images.dtype}")
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


def fidelity_metrics(real: torch.Tensor, fake: torch.Tensor, *, feature_extractor: str = "inception-v3-compat",
                     weights_path: str | None = None, fid: bool = True, kid: bool = False, prc: bool = False,
                     device: str = "cpu", batch_size: int = 64) -> dict[str, float]:
    import torch_fidelity

    kw = {}
    if weights_path is not None:
        kw["feature_extractor_weights_path"] = str(weights_path)
    if kid:
        kw["kid_subset_size"] = min(1000, len(real), len(fake))
    out = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake), input2=UInt8Images(real), fid=fid, kid=kid, prc=prc,
        feature_extractor=feature_extractor, cuda=str(device).startswith("cuda"), batch_size=batch_size,
        verbose=False, save_cpu_ram=True, cache=False, **kw)
    return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# metrics from features: each image set goes through the network once, however many metrics and
# intervals are computed from it
# ---------------------------------------------------------------------------------------------

def network_extractor(name: str, weights_path=None, device: str = "cpu", logits: bool = False):
    """torch-fidelity's registered extractor `name` computing its default FID/KID/precision-recall layer, plus
    "logits" when asked for and the network provides them (the shapes judge). -> (extractor, layer name).

    A weights file is first read with torch.load(weights_only=True) (svgbench.checkpoints.load_state_dict),
    so a file holding anything but tensors is refused before torch-fidelity unpickles it.
    """
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    layers = {cls.get_default_feature_layer_for_metric(m) for m in ("fid", "kid", "prc")}
    if len(layers) != 1:
        raise ValueError(f"{name}: FID, KID and precision-recall use different layers {sorted(layers)}")
    layer = layers.pop()
    wanted = [layer] + (["logits"] if logits and "logits" in cls.get_provided_features_list() else [])
    kw = {}
    if weights_path is not None:
        from ..checkpoints import load_state_dict

        load_state_dict(weights_path)
        kw["feature_extractor_weights_path"] = str(weights_path)
    ext = create_feature_extractor(name, wanted, cuda=False, verbose=False, **kw)
    return ext.to(device), layer


@torch.no_grad()
def network_features(extractor, images: torch.Tensor, device: str = "cpu", batch_size: int = 64) -> dict:
    """uint8 N x 3 x H x W -> {output name: N x D CPU tensor}, in consecutive batches of `batch_size` as
    torch-fidelity's calculate_metrics forms them (so the features, and the metrics, equal its own)."""
    out: dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        got = extractor.convert_features_tuple_to_dict(extractor(images[i:i + batch_size].to(device)))
        for k, v in got.items():
            out.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def _tf_kwargs(**over) -> dict:
    from torch_fidelity.defaults import DEFAULTS

    return dict(DEFAULTS) | {"verbose": False, "save_cpu_ram": True, "cuda": False} | over


def metrics_from_features(fake: torch.Tensor, real: torch.Tensor, *, fid: bool = True, kid: bool = False,
                          prc: bool = False, kid_subsets: int | None = None) -> dict[str, float]:
    """torch-fidelity's FID / KID / precision-recall from N x D features of generated (`fake`) and reference
    (`real`) images: the same keys and values as `fidelity_metrics` on the images (its functions, its
    defaults, KID subsets of min(1000, N) as there). kid_subsets: None = torch-fidelity's 100; 1 with
    N <= 1000 = the unbiased MMD^2 of the whole sets once."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    out = {}
    if fid:
        out |= fid_statistics_to_metric(fid_features_to_statistics(fake), fid_features_to_statistics(real), False)
    if kid:
        kw = _tf_kwargs(kid_subset_size=min(1000, len(real), len(fake)))
        out |= kid_features_to_metric(fake, real, **(kw | ({"kid_subsets": kid_subsets} if kid_subsets else {})))
    if prc:
        out |= prc_features_to_metric(fake, real, **_tf_kwargs())
    return {k: float(v) for k, v in out.items()}


def half_sample_jackknife(fake: torch.Tensor, real: torch.Tensor, statistic, values: dict, *, subsets: int = 50,
                          level: float = 0.95, seed: int = 0) -> dict:
    """Normal intervals value +- z * se for the two-sample statistics statistic(fake, real) -> {name: float},
    with se from the delete-d jackknife at d = N/2 (Shao & Wu 1989): the statistic on `subsets` random
    half-size subsets of each set (drawn without replacement), var = m / (N - m) * mean((theta_s - mean)^2)
    with m = N // 2 (about 1). Subsets, not bootstrap resamples: a resample with duplicated rows puts
    points at zero distance from themselves, which biases k-NN radii (precision / recall) and the
    diagonal-free kernel sums of KID. values: {name: the statistic on all rows}.
    -> {name: {"ci_low", "ci_high", "se", "n", "method", "n_resamples" (subsets), "level", "nominal_level",
    "level_measured" (None), "level_measured_by"}}.
    """
    import numpy as np
    from scipy.stats import norm

    n1, n2 = len(fake), len(real)
    m1, m2 = n1 // 2, n2 // 2
    if min(m1, m2) < 2:
        raise ValueError(f"half-sample jackknife needs >= 4 rows per set, got {n1}, {n2}")
    rng = np.random.default_rng(seed)
    draws = [statistic(fake[torch.from_numpy(rng.choice(n1, m1, replace=False))],
                       real[torch.from_numpy(rng.choice(n2, m2, replace=False))]) for _ in range(subsets)]
    z = float(norm.ppf(0.5 + level / 2))
    out = {}
    for k, v in values.items():
        th = np.array([d[k] for d in draws], dtype=np.float64)
        se = float(np.sqrt(m1 / (n1 - m1) * np.mean((th - th.mean()) ** 2)))
        # the level is the normal approximation's nominal one: no coverage test measures it in these regimes
        out[k] = {"ci_low": float(v - z * se), "ci_high": float(v + z * se), "se": se, "n": min(n1, n2),
                  "method": f"half-sample delete-d jackknife x{subsets}, normal", "n_resamples": subsets,
                  "level": level, "nominal_level": level, "level_measured": None,
                  "level_measured_by": "not measured: the nominal level of a normal interval"}
    return out


DINOV2_EXTRACTOR = "dinov2-vit-l-14"  # FD_DINOv2 (Stein et al., 2023): ViT-L/14 CLS features at 224 px
DINOV2_FILES = ("facebookresearch_dinov2_main", "checkpoints/dinov2_vitl14_pretrain.pth")


def dinov2_available() -> tuple[bool, str]:
    """torch-fidelity's DINOv2 extractor loads through torch.hub: usable offline once its repo and weights
    are in the hub cache ($TORCH_HOME/hub). -> (available, reason when not)."""
    from pathlib import Path

    hub = Path(torch.hub.get_dir())
    missing = [str(hub / f) for f in DINOV2_FILES if not (hub / f).exists()]
    if missing:
        return False, f"FD_DINOv2 needs DINOv2 ViT-L/14 in the torch hub cache (missing: {', '.join(missing)})"
    return True, ""


# ---------------------------------------------------------------------------------------------
# ADM evaluation protocol (guided-diffusion evaluations/evaluator.py): FID, sFID, IS, precision, recall of
# generated samples against a reference batch .npz (arr_0: N x H x W x 3 uint8; optional mu, sigma, mu_s, sigma_s)
# ---------------------------------------------------------------------------------------------

INCEPTION = "inception-v3-compat"
POOL, LOGITS = "2048", "logits_unbiased"  # FID / precision-recall features, Inception Score logits
SPATIAL = "spatial"  # sFID features
# ADM's evaluator reads the TF graph's "mixed_6/conv:0" and keeps channels [..., :7] of it, flattened in NHWC
# order (17 x 17 x 7 = 2023). In torch-fidelity's port of that graph, mixed_6 is Mixed_6d (mixed_3 is the
# 6a reduction) and its "conv" is the 1x1 branch; the TF tensor named "mixed_6/conv" is the ReLU after the
# branch's batchnorm ("mixed_6/conv/batchnorm" is the BN), which BasicConv2d returns.
SPATIAL_MODULE, SPATIAL_CHANNELS = "Mixed_6d.branch1x1", 7


def inception_extractor(weights_path, device: str = "cpu"):
    """torch-fidelity's inception-v3-compat with pool (2048) and unbiased-logit (1008) outputs, from a local file.

    torch-fidelity reads the file with torch.load(weights_only=False); svgbench reads it first with
    weights_only=True (svgbench.checkpoints.load_state_dict), so a file holding anything but tensors is
    refused (CheckpointError) before torch-fidelity unpickles it.
    """
    from torch_fidelity.utils import create_feature_extractor

    from ..checkpoints import load_state_dict

    load_state_dict(weights_path)
    ext = create_feature_extractor(INCEPTION, [POOL, LOGITS], cuda=False, verbose=False,
                                   feature_extractor_weights_path=str(weights_path))
    return attach_spatial(ext.to(device))


def attach_spatial(extractor):
    """Taps ADM's sFID features off `extractor` (a forward hook on SPATIAL_MODULE): extract_features then also
    returns SPATIAL, N x (H x W x SPATIAL_CHANNELS) in NHWC order. An extractor without that module is returned
    as it is (its features have no SPATIAL; sFID is then n/a)."""
    if getattr(extractor, "_sfid_taps", None) is not None:
        return extractor
    try:
        module = extractor.get_submodule(SPATIAL_MODULE)
    except AttributeError:
        return extractor
    taps: list = []

    def tap(_module, _inputs, out):
        taps.append(out[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(out), -1).float().cpu())

    module.register_forward_hook(tap)
    extractor._sfid_taps = taps
    return extractor


@torch.no_grad()
def extract_features(extractor, images: torch.Tensor, device: str = "cpu", batch_size: int = 64) -> dict:
    """uint8 N x 3 x H x W -> {POOL: N x 2048, LOGITS: N x 1008[, SPATIAL: N x 2023]} float32 on the CPU
    (SPATIAL where `attach_spatial` found the module)."""
    taps = getattr(extractor, "_sfid_taps", None)
    out = {POOL: [], LOGITS: []} | ({SPATIAL: []} if taps is not None else {})
    for i in range(0, len(images), batch_size):
        if taps is not None:
            taps.clear()
        pool, logits = extractor(images[i:i + batch_size].to(device))
        out[POOL].append(pool.float().cpu())
        out[LOGITS].append(logits.float().cpu())
        if taps is not None:
            out[SPATIAL].append(taps.pop())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}


def cat_features(parts: list[dict]) -> dict:
    parts = [p for p in parts if p and len(p[POOL])]
    keys = (POOL, LOGITS) + ((SPATIAL,) if parts and all(SPATIAL in p for p in parts) else ())
    return {k: torch.cat([p[k] for p in parts]) for k in keys}


def iter_npz_images(path, batch_size: int = 256):
    """Batches of arr_0 of an .npz as uint8 B x 3 x H x W tensors, read from the zip member in pieces.

    numpy's np.load reads a whole member into memory (an ImageNet reference batch is gigabytes), so the
    .npy header is parsed here and the images are read batch by batch (stored or deflated members).
    """
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran:
            raise ValueError(f"{path}: arr_0 must be N x H x W x 3 uint8 (C order), got {shape} {dtype}")
        per = shape[1] * shape[2] * 3
        for start in range(0, shape[0], batch_size):
            b = min(batch_size, shape[0] - start)
            buf = f.read(b * per)
            if len(buf) != b * per:
                raise ValueError(f"{path}: arr_0 is truncated at image {start}")
            x = torch.frombuffer(bytearray(buf), dtype=torch.uint8).view(b, shape[1], shape[2], 3)
            yield x.permute(0, 3, 1, 2).contiguous()


def npz_image_count(path) -> int:
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        shape = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                 else np.lib.format.read_array_header_2_0(f))[0]
    return int(shape[0])


class AdmNpzWriter:
    """Streams uint8 images into an .npz in np.savez's layout (arr_0: N x H x W x 3, then arr_1..., mu, sigma),
    written to a temporary file and renamed on close; images are never all in memory.

    np.savez needs the whole array; a stored zip member opened for writing takes it piece by piece.
    """

    def __init__(self, path, n: int, height: int, width: int):
        import os
        import zipfile

        import numpy as np

        self.path, self.n, self.hw, self.written = str(path), n, (height, width), 0
        self.tmp = f"{self.path}.tmp{os.getpid()}"
        self.zf = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.f = self.zf.open("arr_0.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_1_0(self.f, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (n, height, width, 3)})

    def write(self, images: torch.Tensor) -> None:
        """images: uint8 B x 3 x H x W, in sample order."""
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, *self.hw):
            raise ValueError(f"expected uint8 B x 3 x {self.hw[0]} x {self.hw[1]}, got {tuple(images.shape)} "
                             f"{images.dtype}")
        if self.written + len(images) > self.n:
            raise ValueError(f"{self.path}: more than the {self.n} images announced")
        self.f.write(images.permute(0, 2, 3, 1).contiguous().numpy().tobytes())
        self.written += len(images)

    def close(self, **arrays) -> str:
        """Finish arr_0 and add the named arrays (e.g. arr_1=labels, mu=..., sigma=...); -> the path."""
        import os

        import numpy as np

        self.f.close()
        if self.written != self.n:
            self.zf.close()
            os.remove(self.tmp)
            raise ValueError(f"{self.path}: {self.written} images written, {self.n} announced")
        for name, arr in arrays.items():
            with self.zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
        self.zf.close()
        os.replace(self.tmp, self.path)
        return self.path


class FeatureMoments:
    """mean and covariance (unbiased, float64) of feature rows accumulated in one pass, as np.cov computes
    them: the ADM reference batch's mu / sigma without keeping its features."""

    def __init__(self):
        self.n, self.s, self.ss = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        x = x.double()
        if self.s is None:
            self.s, self.ss = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], x.shape[1],
                                                                                        dtype=torch.float64)
        # centred on the running mean estimate would be more stable; features are O(1), float64 suffices
        self.n += len(x)
        self.s += x.sum(0)
        self.ss += x.T @ x

    def result(self):
        mu = self.s / self.n
        sigma = (self.ss - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), sigma.numpy()


def write_reference_npz(batches, n: int, path, *, extractor=None, device: str = "cpu", labels=None) -> str:
    """An ADM reference batch from a stream of uint8 B x 3 x H x W batches (n images in all): arr_0, and with an
    extractor also mu / sigma of its Inception pool features and, where it has the sFID tap, mu_s / sigma_s of
    its spatial features (float64, one pass; the keys of ADM's reference batches). -> the path."""
    writer, moments, spatial = None, FeatureMoments(), FeatureMoments()
    for x in batches:
        if writer is None:
            writer = AdmNpzWriter(path, n, x.shape[2], x.shape[3])
        writer.write(x)
        if extractor is not None:
            f = extract_features(extractor, x, device)
            moments.add(f[POOL])
            if SPATIAL in f:
                spatial.add(f[SPATIAL])
    if writer is None:
        raise ValueError("write_reference_npz: no images")
    extra = {}
    if labels is not None:
        extra["arr_1"] = labels
    if extractor is not None:
        extra["mu"], extra["sigma"] = moments.result()
        if spatial.n:
            extra["mu_s"], extra["sigma_s"] = spatial.result()
    return writer.close(**extra)


_REFERENCE_MEMO: dict = {}


def reference_features(path, extractor, weights_path, device: str = "cpu", batch_size: int = 64) -> dict:
    """{POOL, LOGITS, "mu", "sigma", "mu_s", "sigma_s", "stats_source"} of a reference .npz: features of its arr_0
    (needed by precision/recall), mu / sigma (and the sFID's mu_s / sigma_s) from the file when it has them
    (float64), as ADM's evaluator reads them, else from the features (mu_s / sigma_s None where the extractor
    has no sFID tap). The spatial features themselves are not kept.

    Memoised per process on (file, size, mtime, weights file): a run scores several cells against one
    reference.
    """
    import os
    import zipfile

    import numpy as np

    st, wst = os.stat(path), os.stat(weights_path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, os.path.realpath(weights_path), wst.st_mtime_ns)
    if key in _REFERENCE_MEMO:
        return _REFERENCE_MEMO[key]
    feats = cat_features([extract_features(extractor, x, device, batch_size)
                          for x in iter_npz_images(path, batch_size)])
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    if {"mu.npy", "sigma.npy"} <= names:
        with np.load(path) as z:
            mu, sigma, src = z["mu"].astype(np.float64), z["sigma"].astype(np.float64), f"{path} (mu, sigma)"
        if mu.shape != (feats[POOL].shape[1],) or sigma.shape != (len(mu), len(mu)):
            raise ValueError(f"{path}: mu {mu.shape} / sigma {sigma.shape} do not match {feats[POOL].shape[1]}-d "
                             f"Inception pool features")
    else:
        f = feats[POOL].double().numpy()
        mu, sigma, src = f.mean(0), np.cov(f, rowvar=False), f"{path} (arr_0 features)"
    spatial = feats.pop(SPATIAL, None)
    if {"mu_s.npy", "sigma_s.npy"} <= names:
        with np.load(path) as z:
            mu_s, sigma_s = z["mu_s"].astype(np.float64), z["sigma_s"].astype(np.float64)
        if spatial is not None and (mu_s.shape != (spatial.shape[1],) or sigma_s.shape != (len(mu_s), len(mu_s))):
            raise ValueError(f"{path}: mu_s {mu_s.shape} / sigma_s {sigma_s.shape} do not match "
                             f"{spatial.shape[1]}-d spatial (sFID) features")
        src += " (mu_s, sigma_s)"
    elif spatial is not None:
        mu_s, sigma_s = moments_of(spatial)
    else:
        mu_s = sigma_s = None
    out = feats | {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s, "stats_source": src}
    _REFERENCE_MEMO.clear()  # one reference at a time: its features are the size of the reference batch
    _REFERENCE_MEMO[key] = out
    return out


def moments_of(x: torch.Tensor, chunk: int = 4096):
    """(mu, sigma) of N x D feature rows as np.mean / np.cov compute them, in float64 chunks (a 50,000 x 2023
    float64 copy is not needed)."""
    m = FeatureMoments()
    for part in x.split(chunk):
        m.add(part)
    return m.result()


SFID_NA = "the feature network has no sFID tap (Inception's Mixed_6d 1x1 branch)"


def adm_metrics(samples: dict, reference: dict, *, splits: int = 10, k: int = 3) -> dict:
    """FID (against the reference's mu / sigma), sFID (ADM's spatial features against mu_s / sigma_s), Inception
    Score (splits, on the samples' unbiased logits) and precision / recall (k-NN radius k) through
    torch-fidelity's own functions. samples: {POOL, LOGITS[, SPATIAL]}; sFID None (its reason: SFID_NA) where
    either side lacks the spatial features."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    import numpy as np

    f = samples[POOL].double().numpy()
    fid = fid_statistics_to_metric({"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)},
                                   {"mu": reference["mu"], "sigma": reference["sigma"]}, verbose=False)
    isc = isc_features_to_metric(samples[LOGITS], splits=min(splits, len(f)))
    prc = prc_features_to_metric(samples[POOL], reference[POOL], prc_neighborhood=k, prc_batch_size=10000,
                                 save_cpu_ram=True, verbose=False)
    out = {"fid": fid["frechet_inception_distance"], "inception_score": isc["inception_score_mean"],
           "inception_score_std": isc["inception_score_std"], "precision": prc["precision"],
           "recall": prc["recall"]}
    if SPATIAL in samples and reference.get("mu_s") is not None:
        mu_s, sigma_s = moments_of(samples[SPATIAL])
        out["sfid"] = float(fid_statistics_to_metric({"mu": mu_s, "sigma": sigma_s},
                                                     {"mu": reference["mu_s"], "sigma": reference["sigma_s"]},
                                                     verbose=False)["frechet_inception_distance"])
    else:
        out["sfid"] = None  # the reason: SFID_NA
    return out
