"""Scoring generated images: the feature network of a dataset, its reference images streamed, and
FID / KID / precision-recall / the judge's class accuracy with their intervals from one featurisation
(`Scorer`); the ADM protocol's feature extractor and reference batch (`adm_scorer`).

Feature network: torch-fidelity's inception-v3-compat where its weights are on the machine and the data is not
the embedded shapes; on shapes, svgbench's shapes judge (labelled `judge-FID` in every table).
"""

from __future__ import annotations
# a change here that can move a number bumps VERSIONS["generation"] / ["sampling"] in svgbench/tasks/builtin.py

import time
from pathlib import Path

import torch

FEATURE_BATCH = 64  # torch-fidelity's default batch, with which the scores were always computed
NO_JUDGE = "no classifier of these classes among the feature networks (the shapes judge knows shapes only)"


def feature_network(data_name: str) -> tuple[str | None, str | None, str]:
    """-> (torch-fidelity extractor name or None, weights path or None, label / reason)."""
    from ..data import dataset_spec
    from .judge import JUDGE_NAME, judge_available, register_judge
    from .recon import inception_weights_path

    if dataset_spec(data_name).feature_network == "judge":
        if judge_available():
            register_judge()
            return JUDGE_NAME, None, "judge (svgbench shapes judge; not Inception)"
        return None, None, "the shapes judge's weights are not shipped yet (svgbench train judge)"
    w = inception_weights_path()
    if w is not None:
        return "inception-v3-compat", str(w), "inception-v3-compat"
    return None, None, "Inception weights are not on this machine (set SVGBENCH_INCEPTION_WEIGHTS)"


def real_images(dataset, n: int) -> torch.Tensor:
    """The first min(n, len(dataset)) images, uint8 N x 3 x H x W, stacked: for small sets only."""
    return torch.cat(list(real_batches(dataset, n)))


def real_batches(dataset, n: int, batch_size: int = 64):
    """The first min(n, len(dataset)) images as uint8 B x 3 x H x W batches of `batch_size` (the last
    shorter): only one batch is held, so reference features stream at any evaluation size."""
    n = min(n, len(dataset))
    for s in range(0, n, batch_size):
        imgs = torch.stack([dataset[i]["image"] for i in range(s, min(n, s + batch_size))])
        yield ((imgs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def streamed_features(ext, batches, device: str) -> dict:
    """{output name: N x D} of a feature network over uint8 image batches of FEATURE_BATCH (the last
    shorter): the same batches as network_features forms from the stacked images, so the same features."""
    from .fidelity import network_features

    out: dict[str, list] = {}
    for b in batches:
        for k, v in network_features(ext, b, device, FEATURE_BATCH).items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


class Scorer:
    """A cell's feature network with the reference images' features computed once: every set of generated
    images is featurised once, and FID / KID / precision-recall, their intervals and the judge's class
    accuracy all come from those features.

    extractor / weights: as `feature_network` returns them; real: the reference images, uint8
    N x 3 x H x W, or an iterable of such batches of FEATURE_BATCH (`real_batches`), streamed.
    """

    def __init__(self, extractor: str, weights: str | None, real, device: str):
        from .fidelity import network_extractor

        self.ext, self.layer = network_extractor(extractor, weights, device, logits=True)
        self.device = device
        self.real = self.features(real) if isinstance(real, torch.Tensor) else streamed_features(self.ext, real, device)
        self.n = len(self.real[self.layer])
        self.stats_s = 0.0  # seconds spent on intervals (bootstrap, jackknife): the statistics' cost

    def features(self, images: torch.Tensor) -> dict:
        from .fidelity import network_features

        return network_features(self.ext, images, self.device, FEATURE_BATCH)

    def score(self, fake: dict, kid=True, prc=True, ci=True, seed: int = 0) -> dict:
        """fake: features of the generated images. -> {"fid", ["kid", "precision", "recall"], "ci": {...}}."""
        from . import stats
        from .fidelity import half_sample_jackknife, metrics_from_features

        f, r = fake[self.layer], self.real[self.layer]
        m = metrics_from_features(f, r, fid=True, kid=kid, prc=prc)
        out = {"fid": m["frechet_inception_distance"]}
        if kid:
            out["kid"] = m["kernel_inception_distance_mean"]
        if prc:
            out["precision"], out["recall"] = m["precision"], m["recall"]
        out["fid_plugin"] = out["fid"]
        if not ci:
            return out
        t0 = time.perf_counter()
        fd = stats.frechet_ci(f.double().numpy(), r.double().numpy(), seed=seed)
        # the point of the interval's estimand (the population distance, bias-corrected); the plug-in stays as
        # fid_plugin (torch-fidelity's number)
        out["fid"], out["ci"] = fd["value"], {"fid": stats.ci_entry(fd)}
        rest = {k: out[k] for k in ("kid", "precision", "recall") if k in out}
        if rest:
            def stat(a, b):
                # one unbiased MMD^2 per half subset (KID's own 100 subsets would each be the whole half)
                got = metrics_from_features(a, b, fid=False, kid=kid, prc=prc, kid_subsets=1)
                return {"kid": got.get("kernel_inception_distance_mean"), "precision": got.get("precision"),
                        "recall": got.get("recall")}

            for k, e in half_sample_jackknife(f, r, stat, rest, seed=seed).items():
                if k != "kid":  # a rate: its interval stays within [0, 1]
                    e["ci_low"], e["ci_high"] = max(0.0, e["ci_low"]), min(1.0, e["ci_high"])
                out["ci"][k] = e
        self.stats_s += time.perf_counter() - t0
        return out

    def class_accuracy(self, fake: dict, labels: torch.Tensor, num_classes: int) -> dict | str:
        """The judge's top-1 (%) on generated images against the class they were conditioned on, with its
        interval -> {"value", "per_item" (0 / 100 per sample), "ci"}; or the reason it is not measured."""
        from . import stats

        logits = fake.get("logits")
        if logits is None:
            return NO_JUDGE
        if logits.shape[1] != num_classes:
            return f"the judge knows {logits.shape[1]} classes, the diffusion model {num_classes}"
        hit = (logits.argmax(1) == labels).double() * 100.0
        t0 = time.perf_counter()
        ci = stats.ci_entry(stats.mean_ci(hit.numpy()))
        self.stats_s += time.perf_counter() - t0
        return {"value": float(hit.mean()), "per_item": hit.tolist(), "ci": ci}


def score(real: torch.Tensor, fake: torch.Tensor, extractor: str, weights: str | None, device: str,
          kid=True, prc=True) -> dict:
    from .fidelity import fidelity_metrics

    m = fidelity_metrics(real, fake, feature_extractor=extractor, weights_path=weights, fid=True, kid=kid, prc=prc,
                         device=device)
    out = {"fid": m["frechet_inception_distance"]}
    if kid:
        out["kid"] = m["kernel_inception_distance_mean"]
    if prc:
        out["precision"], out["recall"] = m["precision"], m["recall"]
    return out


NO_REFERENCE = ("no ADM reference batch: pass --reference VIRTUAL_imagenet256_labeled.npz (or --set "
                "{task}.reference_npz=PATH); this preset scores FID against the published reference only")


def adm_scorer(reference_npz: str | None, batch_size: int, device: str, task: str):
    """-> (features(images) -> dict, reference dict, label) for the ADM protocol, or (None, None, reason): no
    reference batch (`task` names the config in the reason), or no Inception weights."""
    from .fidelity import extract_features, inception_extractor, reference_features
    from .recon import inception_weights_path

    if not reference_npz:
        return None, None, NO_REFERENCE.format(task=task)
    weights = inception_weights_path()
    if weights is None:
        return None, None, "Inception weights are not on this machine (set SVGBENCH_INCEPTION_WEIGHTS)"
    ext = inception_extractor(weights, device)
    ref = reference_features(reference_npz, ext, weights, device, batch_size=batch_size)
    return (lambda x: extract_features(ext, x, device, batch_size)), ref, \
        f"inception-v3-compat (ADM reference {Path(reference_npz).name})"


def adm_reference_fields(reference_npz: str, ref: dict) -> dict:
    """The record's reference: the ADM batch scored against and where its statistics came from."""
    return {"reference": Path(reference_npz).name, "reference_stats": ref["stats_source"]}
