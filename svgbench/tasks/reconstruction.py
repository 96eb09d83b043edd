"""Reconstruction: encode -> decode over a dataset; PSNR, SSIM, and LPIPS / rFID where available.

judge-rFID: on the embedded shapes data, the Fréchet distance between the shapes judge's features
(svgbench.metrics.judge, the network of judge-FID) of the originals and of their reconstructions. It is
the embedded counterpart of the papers' rFID, never called rFID: Inception-rFID stays `rfid`.
"""

from __future__ import annotations
# a change here that can move a number bumps VERSIONS["reconstruction"] in svgbench/tasks/builtin.py

import time
from dataclasses import dataclass

import torch

from ..encoders.base import LatentEncoder
from ..metrics.recon import SSIM, inception_weights_path, lpips_metric, psnr_per_image, quantize


@dataclass(frozen=True)
class ReconConfig:
    batch_size: int = 32
    num_images: int | None = None  # None: the whole dataset
    lpips_net: str = "vgg"
    rfid: bool = True
    judge_rfid: bool = True  # judge-rFID on shapes data (the judge was trained on shapes only)
    fd_resamples: int = 200  # bootstrap resamples for judge-rFID's interval (one eigendecomposition pair each)
    ci_resamples: int = 1000  # bootstrap resamples for the intervals over images
    seed: int = 0  # bootstrap seed


def _batches(dataset, batch_size, limit):
    n = len(dataset) if limit is None else min(limit, len(dataset))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size,
                                         shuffle=False, num_workers=0)
    for batch in loader:
        yield batch["image"]


def run_reconstruction(encoder: LatentEncoder, dataset, cfg: ReconConfig = ReconConfig(), device: str = "cpu",
                       progress=None) -> dict:
    """-> {psnr, ssim, lpips, rfid, judge_rfid, num_images, encode_ips, decode_ips, unavailable, pending, ci,
    per_item, stats_s}.

    PSNR/SSIM are per-image means on uint8-quantised images; `unavailable` says why a metric is None
    (`pending` too when the reason is weights missing on this machine: the runner recomputes the cell).
    per_item: psnr, ssim (and lpips when measured) per image in dataset order; a PSNR of an identical
    reconstruction (inf dB) is None there and left out of the mean and its interval, as in `psnr`.
    ci: bootstrap interval over images for each of them (svgbench.metrics.stats.mean_ci), and for
    judge_rfid (svgbench.metrics.stats.frechet_ci: each original and its reconstruction resampled together).
    judge_rfid: Fréchet distance of the shapes judge's 256-d features, reconstructions vs originals, both
    uint8-quantised (shapes data only), bias-corrected like its interval; judge_rfid_plugin: the plug-in value
    (the same number torch-fidelity gives with the judge as extractor).
    """
    if not encoder.spec.has_decoder:
        raise ValueError(f"encoder {encoder.spec.name!r} has no decoder: reconstruction does not apply")
    encoder = encoder.to(device).eval()
    ssim = SSIM()
    lpips_fn, lpips_why = lpips_metric(cfg.lpips_net)
    unavailable, pending = {}, {}
    if lpips_fn is None:
        unavailable["lpips"] = lpips_why
    judge = _judge(dataset, cfg, unavailable, pending)
    if judge is not None:
        judge = judge.to(device)
    judge_real, judge_fake = [], []  # N x 256 float64 features: what the Fréchet distance and its CI need
    psnrs, ssims, lpipss, reals, fakes = [], [], [], [], []
    t_enc = t_dec = 0.0
    n = 0
    for images in _batches(dataset, cfg.batch_size, cfg.num_images):
        images = images.to(device)
        t0 = time.perf_counter()
        z = encoder.encode(images)
        _sync(device)
        t1 = time.perf_counter()
        rec = encoder.decode(z)
        _sync(device)
        t_enc += t1 - t0
        t_dec += time.perf_counter() - t1
        x, y = quantize(images).cpu(), quantize(rec).cpu()
        psnrs.append(psnr_per_image(x, y))
        ssims.append(ssim.per_image(x, y))
        if lpips_fn is not None:
            lpipss.append(lpips_fn(x, y))
        x8, y8 = (x * 255).round().to(torch.uint8), (y * 255).round().to(torch.uint8)
        if cfg.rfid:
            reals.append(x8)
            fakes.append(y8)
        if judge is not None:
            with torch.no_grad():
                judge_real.append(judge.features(x8.to(device)).double().cpu())
                judge_fake.append(judge.features(y8.to(device)).double().cpu())
        n += images.shape[0]
        if progress is not None:
            progress(images.shape[0])
    if n == 0:
        raise ValueError("reconstruction: the dataset is empty")
    psnr = torch.cat(psnrs)
    exact = int((~torch.isfinite(psnr)).sum())
    out = {
        "psnr": float(psnr[torch.isfinite(psnr)].mean()) if torch.isfinite(psnr).any() else None,
        "ssim": float(torch.cat(ssims).mean()),
        "lpips": float(torch.cat(lpipss).mean()) if lpipss else None,
        "rfid": None,
        "judge_rfid": None,
        "num_images": n,
        "encode_ips": n / t_enc if t_enc > 0 else None,
        "decode_ips": n / t_dec if t_dec > 0 else None,
    }
    if cfg.rfid:
        weights = inception_weights_path()
        if weights is None:
            unavailable["rfid"] = "rFID needs torch-fidelity's inception-v3-compat weights (set SVGBENCH_INCEPTION_WEIGHTS)"
        elif n < 2:
            unavailable["rfid"] = "rFID needs at least 2 images"
        else:
            from ..metrics.fidelity import fidelity_metrics

            m = fidelity_metrics(torch.cat(reals), torch.cat(fakes), weights_path=weights, device=device)
            out["rfid"] = m["frechet_inception_distance"]
    if out["psnr"] is None:
        unavailable["psnr"] = f"every reconstruction is identical to its original after uint8 quantisation " \
                              f"({exact} of {n} images): PSNR is infinite"
    out["unavailable"] = unavailable
    if pending:
        out["pending"] = pending
    t0 = time.perf_counter()
    _item_intervals(out, {"psnr": psnr, "ssim": torch.cat(ssims), "lpips": torch.cat(lpipss) if lpipss else None},
                    cfg)
    if judge is not None:
        _judge_rfid(out, torch.cat(judge_fake), torch.cat(judge_real), cfg)
    out["stats_s"] = time.perf_counter() - t0
    return out


def _judge(dataset, cfg: ReconConfig, unavailable: dict, pending: dict):
    """The shapes judge when judge-rFID applies here, else None with the reason put in `unavailable`."""
    from ..metrics.judge import EMBEDDED, judge_available, load_judge

    if not cfg.judge_rfid:
        unavailable["judge_rfid"] = "judge_rfid=False in the task config"
        return None
    data = getattr(dataset, "data_config", None)
    if data is None or data.spec().feature_network != "judge":
        unavailable["judge_rfid"] = ("judge-rFID is defined on the embedded shapes data only (the shapes judge "
                                     "was trained on shapes); see rFID for other data")
        return None
    if not judge_available():
        why = f"judge-rFID needs the shapes judge's weights {EMBEDDED} (svgbench train judge)"
        unavailable["judge_rfid"] = pending["judge_rfid"] = why
        return None
    return load_judge()


def _judge_rfid(out: dict, fake: torch.Tensor, real: torch.Tensor, cfg: ReconConfig) -> None:
    """out["judge_rfid"] and out["ci"]["judge_rfid"] from N x D judge features of reconstructions and originals."""
    from ..metrics.stats import ci_entry, frechet_ci

    if len(real) < 2:
        out["unavailable"]["judge_rfid"] = "judge-rFID needs at least 2 images"
        return
    # row i of both sets is image i and its reconstruction: resampled together, as the items they are
    res = frechet_ci(fake.numpy(), real.numpy(), paired=True, n_resamples=cfg.fd_resamples, seed=cfg.seed)
    # the point of the interval's estimand (bias-corrected); the plug-in value, torch-fidelity's, beside it
    out["judge_rfid"], out["judge_rfid_plugin"] = res["value"], res["plugin"]
    out["ci"]["judge_rfid"] = ci_entry(res)


def _item_intervals(out: dict, per_image: dict, cfg: ReconConfig) -> None:
    from ..metrics.stats import ci_entry, mean_ci

    out["per_item"], out["ci"] = {}, {}
    for key, values in per_image.items():
        if values is None:
            continue
        values = values.double()
        finite = torch.isfinite(values)
        out["per_item"][key] = [float(v) if ok else None for v, ok in zip(values.tolist(), finite.tolist())]
        if int(finite.sum()) < 2:
            out["unavailable"][f"ci.{key}"] = "an interval needs at least 2 images with a finite value"
            continue
        out["ci"][key] = ci_entry(mean_ci(values[finite].numpy(), n_resamples=cfg.ci_resamples, seed=cfg.seed))


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
