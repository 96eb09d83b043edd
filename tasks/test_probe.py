"""Linear probe (DINOv2 grid protocol, with a scikit-learn cross-check) for each encoder."""

import pytest

from svgbench.cache import cached_features
from svgbench.data import build_dataset
from svgbench.encoders import create_encoder
from svgbench.metrics.probe import linear_probe
from svgbench.runner import RunConfig, resolve_device, run_matrix
from svgbench.tasks.understanding import ProbeConfig

from .conftest import selected_encoders, wants_task

QUICK = {"train_size": 512, "test_size": 256, "epochs": 30}


def test_probe(encoder_name, run_options, full, feature_cache, tmp_path, request):
    if not wants_task(request.config, "probe"):
        pytest.skip("task not selected (--tasks)")
    cfg = RunConfig(encoders=(encoder_name,), tasks=("probe",), data=run_options["data"],
                    device=run_options["device"], results_dir=run_options["results_dir"] or str(tmp_path),
                    task_overrides={"probe": run_options["tasks"].get("probe", {}) if full else QUICK})
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    m = summary.records[0].metrics
    sizes = run_options["tasks"].get("probe", {}) if full else QUICK
    assert m["num_train"] == sizes.get("train_size", ProbeConfig().train_size)
    for key in ("probe_top1", "probe_top5", "probe_top1_sklearn"):
        assert (m[key] is None) == (key in m["unavailable"]), (key, m)
        assert m[key] is None or 0.0 <= m[key] <= 100.0
    if m["probe_top1"] is not None:
        assert m["probe_fit_s"] > 0 and m["probe_top5"] >= m["probe_top1"]


def test_probe_cost(benchmark, run_options, feature_cache, request):
    """Wall time of the torch grid fit (21 heads) over cached pooled features of the first selected encoder."""
    if not wants_task(request.config, "probe"):
        pytest.skip("task not selected (--tasks)")
    name = selected_encoders(request.config)[0]
    device = resolve_device(run_options["device"])
    encoder = create_encoder(name)
    test_cfg = run_options["data"].replace(size=QUICK["test_size"])
    train_cfg = test_cfg.replace(split="train", size=QUICK["train_size"])
    train = cached_features(encoder, build_dataset(train_cfg), device=device)
    test = cached_features(encoder, build_dataset(test_cfg), device=device)
    kwargs = dict(epochs=QUICK["epochs"], device=device)
    result = benchmark.pedantic(linear_probe, args=(train.features, train.labels, test.features, test.labels),
                                kwargs=kwargs, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(encoder=name, train=len(train.labels), test=len(test.labels),
                                dim=int(train.features.shape[1]), heads=len(result.grid), epochs=QUICK["epochs"],
                                device=device, top1=result.top1)
    assert 0.0 <= result.top1 <= 100.0
