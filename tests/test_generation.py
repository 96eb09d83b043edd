"""Generation: judge-FID vs a direct Frechet distance, sample sets independent of batching and processes,
diffusion-training resume, and the task end to end with a tiny budget."""

import dataclasses
import json
import os
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.multiprocessing as mp

from svgbench.checkpoints import save_safetensors
from svgbench.data import DataConfig, build_dataset
from svgbench.encoders import create_encoder
from svgbench.metrics import judge as judge_mod
from svgbench.metrics.fidelity import fidelity_metrics
from svgbench.train.common import RunDir
from svgbench.diffusion.store import DiffusionConfig
from svgbench.train.diffusion import train_diffusion


@pytest.fixture
def judge_file(tmp_path, monkeypatch):
    torch.manual_seed(3)
    f = tmp_path / "judge.safetensors"
    save_safetensors(judge_mod.ShapesJudge().eval().state_dict(), f)
    monkeypatch.setattr(judge_mod, "EMBEDDED", f)
    return f


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_torch_fidelity_judge_fid_matches_direct_frechet(judge_file):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (300, 3, 64, 64), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 40).clamp(0, 255).to(torch.uint8)
    name = judge_mod.register_judge()
    ours = fidelity_metrics(real, fake, feature_extractor=name, fid=True)["frechet_inception_distance"]
    judge = judge_mod.load_judge(judge_file)
    with torch.no_grad():
        fr, ff = judge.features(real).double().numpy(), judge.features(fake).double().numpy()
    direct = frechet(ff, fr)
    assert direct > 0
    assert abs(ours - direct) / direct < 1e-3, (ours, direct)


def _tiny_setup():
    torch.manual_seed(0)
    enc = create_encoder("tiny-vae", weights="random")
    from svgbench.diffusion.transport import LatentStats
    from svgbench.diffusion.store import build_diffusion_model

    model = build_diffusion_model(DiffusionConfig(), (4, 8, 8), 10).eval()
    return enc, model, LatentStats(torch.zeros(4), torch.ones(4))


class _SlowCounted(torch.nn.Module):
    """The model, counting its forwards and taking at least `delay` seconds for each."""

    def __init__(self, model, delay):
        super().__init__()
        self.model, self.delay, self.calls = model, delay, 0
        self.in_channels, self.input_size, self.num_classes = model.in_channels, model.input_size, model.num_classes

    def forward(self, *args):
        import time

        self.calls += 1
        time.sleep(self.delay)
        return self.model(*args)


def test_samplers_on_one_noise_share_exact_evaluations_and_are_charged_for_them():
    """Euler and Heun at several step counts in one pass: every sample is bit-identical to sampling alone, the
    shared evaluations run once (the first of all five; Euler-2's second = Heun-2's first corrector), and each
    point's time still counts every evaluation it uses."""
    from svgbench.diffusion.generate import generate, sample_point_batches
    from svgbench.diffusion.samplers import ODESampler

    torch.set_num_threads(1)
    enc, model, stats = _tiny_setup()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # off the zero initialisation: velocities that depend on x and t
            p.normal_(0, 0.05)
    samplers = {(m, k): ODESampler(m, k, 0.15) for m, ks in (("euler", (1, 2, 4)), ("heun", (1, 2))) for k in ks}
    slow = _SlowCounted(model, 0.05).eval()
    got = {p: (x, ts) for _, p, x, ts, _ in sample_point_batches(slow, stats, enc, range(6), 10, samplers, seed=5,
                                                                 batch_size=6, device="cpu")}
    assert slow.calls == (1 + 2 + 4 + 2 + 4) - 4 - 1, slow.calls
    for p, sampler in samplers.items():
        alone, _ = generate(model, stats, enc, range(6), 10, sampler, seed=5, batch_size=6, device="cpu")
        assert torch.equal(got[p][0], alone), p
        assert got[p][1] >= 0.05 * sampler.nfe * 0.95, (p, got[p][1])  # reused evaluations are charged
    assert got[("heun", 1)][1] >= 0.095  # 2 evaluations, one of them reused from Euler-1


def test_samples_do_not_depend_on_batch_size():
    """Noise and labels are per index; only float rounding in batched kernels may move a pixel by one level."""
    from svgbench.diffusion.samplers import euler
    from svgbench.diffusion.generate import generate

    torch.set_num_threads(1)
    enc, model, stats = _tiny_setup()
    a, _ = generate(model, stats, enc, range(10), 10, euler(steps=2), seed=5, batch_size=10, device="cpu")
    b, _ = generate(model, stats, enc, range(10), 10, euler(steps=2), seed=5, batch_size=3, device="cpu")
    c, _ = generate(model, stats, enc, range(4, 10), 10, euler(steps=2), seed=5, batch_size=4, device="cpu")
    assert (a.int() - b.int()).abs().max() <= 1 and (a[4:].int() - c.int()).abs().max() <= 1
    d, _ = generate(model, stats, enc, range(10), 10, euler(steps=2), seed=5, batch_size=10, device="cpu")
    assert torch.equal(a, d)


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gen_worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from svgbench.diffusion.samplers import euler
    from svgbench.diffusion.generate import generate_all

    dist.init_process_group("gloo")
    enc, model, stats = _tiny_setup()
    imgs, _ = generate_all(model, stats, enc, 9, 10, euler(steps=2), seed=5, batch_size=5, device="cpu")
    if rank == 0:
        torch.save(imgs, out)
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_sample_the_same_set(tmp_path):
    from svgbench.diffusion.samplers import euler
    from svgbench.diffusion.generate import generate_all

    out = str(tmp_path / "two.pt")
    mp.spawn(_gen_worker, args=(2, _port(), out), nprocs=2, join=True)
    enc, model, stats = _tiny_setup()
    # one process, batches [0..4] [5..8]: the same batches as the two ranks' shards -> bit-identical, at the ranks'
    # thread count (a CPU GEMM's bits can depend on how many threads split it; that is not what is tested here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one, _ = generate_all(model, stats, enc, 9, 10, euler(steps=2), seed=5, batch_size=5, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.load(out, weights_only=True), one)


def test_diffusion_resume_reproduces_loss_curve(tmp_path):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lat, lab = torch.randn(64, 4, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    base = DiffusionConfig(steps=40, batch_size=8, ckpt_every=10, eval_every=0)
    train_diffusion(lat, lab, dataclasses.replace(base, out=str(tmp_path / "a")), num_classes=10, log=lambda s: None)

    def kill(step):
        if step == 27:
            raise KeyboardInterrupt

    b = dataclasses.replace(base, out=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(lat, lab, b, num_classes=10, log=lambda s: None, on_step=kill)
    assert RunDir(b.out).load()["step"] == 20
    train_diffusion(lat, lab, b, num_classes=10, log=lambda s: None)
    ca, cb = RunDir(tmp_path / "a").curve(), RunDir(tmp_path / "b").curve()
    assert [r["loss"] for r in ca] == [r["loss"] for r in cb] and len(ca) == 2
    sa, sb = RunDir(tmp_path / "a").load()["ema"], RunDir(tmp_path / "b").load()["ema"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _small_store(path, lat, lab, rows):
    from svgbench.store import ShardedStore, write_index, write_shard

    shards = [write_shard(path, i, s, lat[s:s + rows].numpy(), lab[s:s + rows].numpy())
              for i, s in enumerate(range(0, len(lat), rows))]
    write_index(path, {"test": 1}, tuple(lat.shape), True, rows, shards)
    return ShardedStore.open(path, verify=True)


def test_step_indices_share_epochs_over_ranks():
    from svgbench.train.diffusion import StepIndices

    one = StepIndices(40, 8, seed=3)
    first = torch.cat([one(s) for s in range(5)])
    assert sorted(first.tolist()) == list(range(40))  # an epoch visits every row once
    assert not torch.equal(torch.cat([one(s) for s in range(5, 10)]), first)  # the next epoch reshuffles
    assert torch.equal(StepIndices(40, 8, seed=3)(7), one(7))  # a function of (seed, step) alone
    a, b = StepIndices(40, 4, seed=3, rank=0, world=2), StepIndices(40, 4, seed=3, rank=1, world=2)
    ea, eb = torch.cat([a(s) for s in range(5)]), torch.cat([b(s) for s in range(5)])
    assert set(ea.tolist()).isdisjoint(eb.tolist()) and sorted(ea.tolist() + eb.tolist()) == list(range(40))
    odd = StepIndices(10, 4, seed=0)  # batches straddle epochs
    assert sorted(torch.cat([odd(s) for s in range(5)]).tolist()) == sorted(list(range(10)) * 2)


def test_diffusion_from_store_equals_in_memory(tmp_path):
    """Training from a sharded store streams statistics and batches, with the in-memory path's numbers."""
    from svgbench.store import channel_stats

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lat, lab = torch.randn(40, 4, 8, 8, generator=g) * 3 + 1, torch.randint(0, 10, (40,), generator=g)
    store = _small_store(tmp_path / "lat.npy", lat, lab, rows=16)
    assert store.num_shards == 3
    values = store.to_tensor()  # what the store holds (fp16-rounded when that is exact enough)
    sm, ss = channel_stats(store)
    tm, ts = channel_stats(values)
    assert torch.equal(sm, tm) and torch.equal(ss, ts)
    ref = values.double().transpose(0, 1).reshape(4, -1)  # independent: numpy-style float64 moments
    assert torch.allclose(sm, ref.mean(1), rtol=0, atol=1e-12)
    assert torch.allclose(ss, ref.std(1, unbiased=False), rtol=0, atol=1e-12)

    base = DiffusionConfig(steps=20, batch_size=8, ckpt_every=20, eval_every=0)
    a = train_diffusion(values, lab, dataclasses.replace(base, out=str(tmp_path / "a")), num_classes=10,
                        log=lambda s: None)
    b = train_diffusion(store, None, dataclasses.replace(base, out=str(tmp_path / "b")), num_classes=10,
                        log=lambda s: None)
    assert torch.equal(a.extra["stats"].mean, b.extra["stats"].mean)
    assert torch.equal(a.extra["stats"].std, b.extra["stats"].std)
    assert torch.equal(a.extra["stats"].mean, sm.float())
    ca, cb = RunDir(tmp_path / "a").curve(), RunDir(tmp_path / "b").curve()
    assert [r["loss"] for r in ca] == [r["loss"] for r in cb] and len(ca) == 1
    sa, sb = RunDir(tmp_path / "a").load(), RunDir(tmp_path / "b").load()
    for k in sa["ema"]:
        assert torch.equal(sa["ema"][k], sb["ema"][k]), k
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k


def test_streamed_reference_features_equal_stacked(judge_file):
    """The reference images stream in batches into the judge: the same features, hence the same FID."""
    from svgbench.metrics.generative import Scorer, feature_network, real_batches, real_images

    torch.set_num_threads(1)
    ds = build_dataset(DataConfig(size=70))
    ext, weights, _ = feature_network("shapes")
    stacked = Scorer(ext, weights, real_images(ds, 70), "cpu")
    streamed = Scorer(ext, weights, real_batches(ds, 70, 64), "cpu")
    assert [len(b) for b in real_batches(ds, 70, 64)] == [64, 6] and streamed.n == 70
    assert stacked.real.keys() == streamed.real.keys()
    for k in stacked.real:
        assert torch.equal(stacked.real[k], streamed.real[k]), k
    fake = real_images(build_dataset(DataConfig(size=70, split="test")), 70)
    a, b = stacked.score(stacked.features(fake), ci=False), streamed.score(streamed.features(fake), ci=False)
    assert a == b and a["fid"] > 0


def test_generation_task_end_to_end(tmp_path, judge_file, monkeypatch):
    from svgbench.tasks.generation import GenerationConfig, SamplingConfig, run_generation, run_sampling

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    enc = create_encoder("tiny-vae", weights="random")
    ds = build_dataset(DataConfig(size=24))
    cfg = GenerationConfig(train_size=64, eval_samples=24, curve_samples=16, train_steps=4, eval_every=2,
                           train_batch=8, batch_size=8, sample_steps=2, fid_targets=(1e9, -1.0), train=True,
                           samples_npz=str(tmp_path / "samples.npz"))
    assert "train-diffusion" in run_generation(enc, ds, dataclasses.replace(cfg, train=False))["unavailable"]["fid"]
    m = run_generation(enc, ds, cfg)
    assert m["feature_network"].startswith("judge") and m["num_samples"] == 24
    assert m["fid_plugin"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and m["kid"] is not None
    assert [p[0] for p in m["fid_curve"]] == [2, 4] and m["steps_to_fid"] == {"1e+09": 2, "-1": None}
    # curve points evaluated here carry their judge-FID interval: [step, fid, ci_low, ci_high]
    assert all(len(p) == 4 and 0 <= p[2] <= p[3] for p in m["fid_curve"])
    ci = m["ci"]
    assert set(ci) >= {"fid", "kid", "precision", "recall", "class_accuracy"}
    assert ci["fid"]["ci_low"] <= m["fid"] <= ci["fid"]["ci_high"] and ci["fid"]["n"] == 24
    assert m["fid"] == ci["fid"]["point"]  # the interval's own (bias-corrected) point, the plug-in beside it
    assert ci["kid"]["ci_low"] <= m["kid"] <= ci["kid"]["ci_high"]
    for k in ("precision", "recall"):
        assert 0 <= ci[k]["ci_low"] <= m[k] <= ci[k]["ci_high"] <= 1
    # class accuracy: the judge's top-1 against label i mod 10, from the per-sample hits kept in the record
    hits = m["per_item"]["class_accuracy"]
    assert len(hits) == 24 and set(hits) <= {0.0, 100.0} and m["class_accuracy"] == pytest.approx(np.mean(hits))
    assert ci["class_accuracy"]["ci_low"] <= m["class_accuracy"] <= ci["class_accuracy"]["ci_high"]
    assert np.load(tmp_path / "samples.npz")["arr_0"].shape == (24, 64, 64, 3)
    # the same run reused: the trained run directory is resumed, not retrained
    again = run_generation(enc, ds, cfg)
    assert again["fid"] == m["fid"]
    s = run_sampling(enc, ds, SamplingConfig(train_size=64, eval_samples=16, steps=(1, 2), methods=("euler", "heun"),
                                             batch_size=8, generation=cfg))
    assert [(r["method"], r["steps"], r["nfe"]) for r in s["curve"]] == [("euler", 1, 1), ("euler", 2, 2),
                                                                        ("heun", 1, 2), ("heun", 2, 4)]
    assert all(0 <= r["ci_low"] <= r["fid"] <= r["ci_high"] and r["n"] == 16 for r in s["curve"])
    # the scorecard's point as the config fixed it (euler, 4 steps: not run here, so named missing), and F5's
    # paired ratio FID(1) / FID(2) (no 25-step point: the most Euler steps run are the reference)
    assert "not among this run's sampler points" in s["headline"]["missing"]
    (r,) = s["few_step_ratios"]
    assert (r["method"], r["steps"], r["reference_steps"], r["n"]) == ("euler", 1, 2, 16)
    assert r["ratio_low"] <= r["ratio"] <= r["ratio_high"] and r["level"] == 0.98
    by = {(p["method"], p["steps"]): p["fid_plugin"] for p in s["curve"]}
    assert r["plug_in"] == pytest.approx(np.log(by["euler", 1] / by["euler", 2]), rel=1e-6, abs=1e-6)


def test_generation_without_judge_is_na(tmp_path, monkeypatch):
    from svgbench.tasks.generation import GenerationConfig, run_generation

    monkeypatch.setattr(judge_mod, "EMBEDDED", tmp_path / "missing.safetensors")
    m = run_generation(create_encoder("tiny-vae", weights="random"), build_dataset(DataConfig(size=8)),
                       GenerationConfig())
    assert m["fid"] is None and "judge" in m["unavailable"]["fid"]


def test_train_diffusion_export_ships_a_model_the_task_picks_up(tmp_path, judge_file, monkeypatch):
    """`svgbench train diffusion --export`: fp16 weights + stats + curve + card; the task then loads them."""
    import svgbench.diffusion.store as store
    import svgbench.train.cards as cards
    from svgbench.checkpoints import read_safetensors_metadata
    from svgbench.cli import main
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(store, "SHIPPED", tmp_path / "weights" / "diffusion")
    monkeypatch.setattr(cards, "WEIGHTS_DIR", tmp_path / "weights")
    main(["train", "diffusion", "--encoder", "tiny-vae", "--weights", "random", "--threads", "1", "--train-steps", "4",
          "--eval-every", "2", "--curve-samples", "16", "--eval-samples", "24", "--train-size", "64",
          "--batch-size", "8", "--train-batch", "8", "--sample-steps", "2", "--export"])
    f = tmp_path / "weights" / "diffusion" / "tiny-vae.safetensors"
    state, meta = load_file(f), read_safetensors_metadata(f)
    assert state["stats.mean"].dtype == torch.float32
    assert {v.dtype for k, v in state.items() if not k.startswith("stats.")} == {torch.float16}
    assert [r["step"] for r in json.loads(meta["curve"])] == [2, 4] and meta["step"] == "4"
    card = (tmp_path / "weights" / "diffusion" / "tiny-vae.md").read_text()
    assert "shipped fp16 weights" in card and "--export" in card
    assert (tmp_path / "weights" / "diffusion" / "tiny-vae.curve.png").stat().st_size > 0


def test_adm_npz_layout(tmp_path):
    from svgbench.diffusion.generate import save_adm_npz

    imgs = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    f = save_adm_npz(imgs, torch.arange(5) % 3, tmp_path / "samples.npz")
    z = np.load(f)
    assert z["arr_0"].shape == (5, 8, 8, 3) and z["arr_0"].dtype == np.uint8
    assert np.array_equal(z["arr_0"], imgs.permute(0, 2, 3, 1).numpy()) and list(z["arr_1"]) == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="uint8"):
        save_adm_npz(imgs.float(), torch.arange(5), tmp_path / "bad.npz")


def test_fd_dinov2_needs_local_weights(tmp_path, monkeypatch):
    from svgbench.metrics.fidelity import dinov2_available

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ok, why = dinov2_available()
    assert not ok and "dinov2_vitl14_pretrain.pth" in why


def _ddp_train_worker(rank, world, port, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from svgbench.diffusion.samplers import euler
    from svgbench.diffusion.generate import generate_all

    enc, _, _ = _tiny_setup()
    g = torch.Generator().manual_seed(0)
    lat, lab = torch.randn(64, 4, 8, 8, generator=g), torch.arange(64) % 10

    def evaluate(ema, stats, step):  # sharded sampling: every rank must take part
        imgs, _ = generate_all(ema, stats, enc, 6, 10, euler(steps=1), seed=1, batch_size=3, device="cpu")
        return {"n": len(imgs)}

    cfg = DiffusionConfig(steps=4, batch_size=4, eval_every=2, ckpt_every=2, out=out_dir)
    res = train_diffusion(lat, lab, cfg, num_classes=10, evaluate=evaluate, log=lambda s: None)
    torch.save(res.model.state_dict(), f"{out_dir}/ema-{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_diffusion_training_evaluates_on_every_rank(tmp_path):
    """Under torchrun the FID evaluation samples sharded over ranks; training neither hangs nor diverges."""
    from svgbench.train.common import RunDir

    mp.spawn(_ddp_train_worker, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    rows = [r for r in RunDir(tmp_path).curve() if "n" in r]
    assert [(r["step"], r["n"]) for r in rows] == [(2, 6), (4, 6)]
    a, b = (torch.load(tmp_path / f"ema-{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_metrics_from_features_equal_torch_fidelity_on_images(judge_file):
    """One feature pass serves every metric: the values equal torch-fidelity's own calculate_metrics."""
    from svgbench.metrics.fidelity import metrics_from_features, network_extractor, network_features

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (70, 3, 64, 64), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.6 + 50).clamp(0, 255).to(torch.uint8)
    name = judge_mod.register_judge()
    ref = fidelity_metrics(real, fake, feature_extractor=name, fid=True, kid=True, prc=True)
    ext, layer = network_extractor(name, logits=True)
    fr, ff = network_features(ext, real), network_features(ext, fake)
    assert layer == "judge" and ff["logits"].shape == (70, 10)
    ours = metrics_from_features(ff[layer], fr[layer], fid=True, kid=True, prc=True)
    assert {k: ours[k] for k in ref} == ref
    # the logits are the judge's own classification of the same images
    with torch.no_grad():
        direct = judge_mod.load_judge(judge_file)(fake).argmax(1)
    assert torch.equal(ff["logits"].argmax(1), direct)


def test_half_sample_jackknife_matches_the_standard_error_of_a_mean_difference():
    """Cross-check against the closed form: se(mean(a) - mean(b)) = sqrt(var a / n1 + var b / n2)."""
    from svgbench.metrics.fidelity import half_sample_jackknife

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 1, generator=g) * 2 + 1, torch.randn(400, 1, generator=g)

    def stat(x, y):
        return {"d": float(x.mean() - y.mean())}

    value = stat(a, b)
    got = half_sample_jackknife(a, b, stat, value, subsets=400, seed=0)["d"]
    se = float(np.sqrt(float(a.var()) / 600 + float(b.var()) / 400))
    assert abs(got["se"] - se) / se < 0.15, (got["se"], se)
    assert got["ci_low"] < value["d"] < got["ci_high"]
    assert got["ci_high"] - got["ci_low"] == pytest.approx(2 * 1.959964 * got["se"], rel=1e-5)


def test_progress_maps_work_onto_the_bar():
    from svgbench.tasks.generation import Progress

    seen = []
    bar = Progress(seen.append, 512, work=250 * (2 + 5))  # two points: 1 and 4 model evaluations, +1 each
    for _ in range(5):
        bar(50 * 1)  # point 1: five batches of 50 images x 1 evaluation
    bar(250)  # its decoding and scoring
    assert sum(seen) == int(512 * 500 / 1750) and len(seen) == 6
    for _ in range(5):
        bar(50 * 4)
    bar(250)
    assert sum(seen) == 512 and all(k > 0 for k in seen)


def test_progress_moves_with_every_model_evaluation():
    """A batch reports after each of its model evaluations; the reports of a batch sum to its images."""
    from svgbench.diffusion.generate import generate
    from svgbench.diffusion.samplers import euler

    torch.set_num_threads(1)
    enc, model, stats = _tiny_setup()
    seen = []
    a, _ = generate(model, stats, enc, range(10), 10, euler(steps=3), seed=5, batch_size=6, device="cpu",
                    progress=seen.append)
    assert len(seen) == 2 * (3 + 1) and sum(seen) == pytest.approx(10)
    b, _ = generate(model, stats, enc, range(10), 10, euler(steps=3), seed=5, batch_size=6, device="cpu")
    assert torch.equal(a, b)  # reporting does not touch the samples


def test_diffusion_checkpoints_by_wall_clock_too(tmp_path):
    """ckpt_minutes: a checkpoint when that much time passed, even between ckpt_every steps (only last.pt kept)."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lat, lab = torch.randn(32, 4, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    cfg = DiffusionConfig(steps=12, batch_size=8, ckpt_every=1000, ckpt_minutes=0.0, eval_every=0,
                          out=str(tmp_path / "run"))

    def kill(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_diffusion(lat, lab, cfg, num_classes=10, log=lambda s: None, on_step=kill)
    assert RunDir(cfg.out).load()["step"] == 5  # saved at every step (0 minutes), not only at 1000
    assert [p.name for p in (tmp_path / "run").glob("*.pt")] == ["last.pt"]


def test_no_diffusion_model_is_pending_so_a_later_export_is_picked_up(tmp_path, judge_file, monkeypatch):
    """No diffusion model for an encoder's weights: generation and sampling are n/a *pending*, so the runner
    recomputes the cells on a rerun (after `svgbench train diffusion --export`) instead of keeping the n/a."""
    import svgbench.diffusion.store as store
    from svgbench.tasks.generation import GenerationConfig, SamplingConfig, run_generation, run_sampling

    monkeypatch.setattr(store, "SHIPPED", tmp_path / "no-models")
    enc, ds = create_encoder("tiny-vae", weights="random"), build_dataset(DataConfig(size=8))
    g = run_generation(enc, ds, GenerationConfig())
    s = run_sampling(enc, ds, SamplingConfig())
    assert g["fid"] is None and "no shipped diffusion model" in g["pending"]["fid"]
    assert "no shipped diffusion model" in s["pending"]["fid"] and s["unavailable"]["fid"] == s["pending"]["fid"]
