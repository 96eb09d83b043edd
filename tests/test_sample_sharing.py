"""Samples shared between the generation and sampling cells (diffusion.generate.SampleCache): a cached batch is
bit-identical to recomputing it, and each cell's record is the same whether or not the other cell ran first."""

import dataclasses

import pytest
import torch

from svgbench.checkpoints import save_safetensors
from svgbench.data import DataConfig, build_dataset
from svgbench.diffusion.generate import SampleCache, generate, sample_point_batches
from svgbench.diffusion.samplers import ODESampler
from svgbench.encoders import create_encoder
from svgbench.metrics import judge as judge_mod


def _setup():
    from svgbench.diffusion.store import DiffusionConfig, build_diffusion_model
    from svgbench.diffusion.transport import LatentStats

    torch.manual_seed(0)
    enc = create_encoder("tiny-vae", weights="random").eval()
    model = build_diffusion_model(DiffusionConfig(), (4, 8, 8), 10).eval()
    with torch.no_grad():
        for p in model.parameters():  # off the zero initialisation: velocities that depend on x and t
            p.normal_(0, 0.05)
    return enc, model, LatentStats(torch.zeros(4), torch.ones(4))


def test_cached_batches_are_bit_identical_and_skip_the_model(tmp_path):
    """The generation's batches (range(12) by 8) fill the cache; a sampling pass over range(5) whose Euler-3
    point is sampled in those batches (blocks) reads the first one without a model call, and gets the bits it
    computes itself on a cold cache or without any cache."""
    torch.set_num_threads(1)
    enc, model, stats = _setup()
    euler3 = ODESampler("euler", 3, 0.15)
    points = {("euler", 1): ODESampler("euler", 1, 0.15), ("euler", 3): euler3,
              ("heun", 1): ODESampler("heun", 1, 0.15)}

    def sampling_pass(cache):
        calls = []
        hook = model.register_forward_hook(lambda *a: calls.append(1))
        got = {p: x for _, p, x, _, _ in sample_point_batches(model, stats, enc, range(5), 10, points, seed=3,
                                                              batch_size=5, device="cpu", cache=cache,
                                                              blocks={("euler", 3): 8})}
        hook.remove()
        return got, len(calls)

    plain, calls_plain = sampling_pass(None)
    cold, calls_cold = sampling_pass(SampleCache(tmp_path / "a"))
    assert calls_cold == calls_plain == 1 + 3 + 1  # Euler-3 on its own block: it shares no evaluation
    gen, _ = generate(model, stats, enc, range(12), 10, euler3, seed=3, batch_size=8, device="cpu",
                      cache=SampleCache(tmp_path / "b"))
    assert len(list((tmp_path / "b").glob("*.safetensors"))) == 2
    warm, calls_warm = sampling_pass(SampleCache(tmp_path / "b"))
    assert calls_warm == calls_plain - 3  # Euler-3's batch came from the generation's cache
    for p in points:
        assert torch.equal(plain[p], cold[p]) and torch.equal(plain[p], warm[p]), p
    assert torch.equal(warm[("euler", 3)], gen[:5])
    # the sampling pass's own entry serves the generation in turn, bit for bit
    again, _ = generate(model, stats, enc, range(12), 10, euler3, seed=3, batch_size=8, device="cpu",
                        cache=SampleCache(tmp_path / "a"))
    assert torch.equal(again, gen)


def test_cache_key_moves_with_what_moves_the_samples(tmp_path):
    enc, model, stats = _setup()
    cache = SampleCache(tmp_path)
    noise, labels = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(4)
    base = cache.key(model, stats, enc, ODESampler("euler", 3, 0.15), noise, labels, "cpu")
    assert base == SampleCache(tmp_path).key(model, stats, enc, ODESampler("euler", 3, 0.15), noise, labels, "cpu")
    other = dict(model=model, stats=stats, sampler=ODESampler("euler", 3, 0.15), noise=noise, labels=labels)
    changes = [dict(sampler=ODESampler("euler", 4, 0.15)), dict(sampler=ODESampler("euler", 3, 0.3)),
               dict(sampler=ODESampler("euler", 3, 0.15, autocast=torch.bfloat16)),
               dict(noise=noise + 1e-6), dict(labels=labels.flip(0))]
    for ch in changes:
        a = other | ch
        assert SampleCache(tmp_path).key(a["model"], a["stats"], enc, a["sampler"], a["noise"], a["labels"],
                                         "cpu") != base, ch
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert SampleCache(tmp_path).key(model, stats, enc, ODESampler("euler", 3, 0.15), noise, labels, "cpu") != base
    from svgbench.diffusion.samplers import AdaptiveODESampler

    assert cache.key(model, stats, enc, AdaptiveODESampler(), noise, labels, "cpu") is None  # its steps vary


def test_cache_keeps_the_recently_used_entries_within_its_bound(tmp_path):
    """Writing past `max_bytes` removes the least recently used entries (a hit renews one), never the one just
    written; what stays reads back bit for bit."""
    import os

    images = {k: torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i, k in enumerate("abcd")}
    probe = SampleCache(tmp_path / "size")
    probe.put("x", images["a"], 1.0, 0.5)
    entry = (tmp_path / "size" / "x.safetensors").stat().st_size
    cache = SampleCache(tmp_path / "c", max_bytes=3 * entry)  # room for three entries
    for t, k in enumerate("abc"):
        cache.put(k, images[k], 1.0, 0.5)
        os.utime(tmp_path / "c" / f"{k}.safetensors", (1000 + t, 1000 + t))  # a, b, c: oldest use first
    assert cache.get("a") is not None  # used now: b is the least recently used
    cache.put("d", images["d"], 2.0, 0.25)
    assert sorted(p.stem for p in (tmp_path / "c").glob("*.safetensors")) == ["a", "c", "d"]
    got, sample_s, decode_s = cache.get("d")
    assert torch.equal(got, images["d"]) and (sample_s, decode_s) == (2.0, 0.25)
    tiny = SampleCache(tmp_path / "t", max_bytes=1)  # smaller than one entry: the newest still stays
    tiny.put("a", images["a"], 1.0, 0.5)
    tiny.put("b", images["b"], 1.0, 0.5)
    assert [p.stem for p in (tmp_path / "t").glob("*.safetensors")] == ["b"]


def _untimed(x):
    """A record without its wall-clock measures (seconds, MFU), which vary from run to run."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items()
                if not (k.endswith("_s") or k.endswith("_s_per_image") or "mfu" in k)}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def test_records_are_the_same_whichever_cell_runs_first(tmp_path, monkeypatch):
    """generation then sampling (the sampling cell reads the generation's first batch) and sampling then
    generation (the other way round): the same two records, and the cell that reads the cache runs fewer model
    forwards (ForwardClock, the cost model's counter)."""
    import svgbench.tasks.generation as gen_mod
    from svgbench.diffusion.flops import ForwardClock, diffusion_model_types
    from svgbench.tasks.generation import GenerationConfig, SamplingConfig, run_generation, run_sampling

    torch.set_num_threads(1)
    torch.manual_seed(3)
    f = tmp_path / "judge.safetensors"
    save_safetensors(judge_mod.ShapesJudge().eval().state_dict(), f)
    monkeypatch.setattr(judge_mod, "EMBEDDED", f)
    enc, model, stats = _setup()
    monkeypatch.setattr(gen_mod, "diffusion_for", lambda *a, **k: (model, stats, [], {"diffusion_weights": "test"}))
    ds = build_dataset(DataConfig(size=24))
    gcfg = GenerationConfig(eval_samples=24, sample_steps=3, sample_batch_size=16)
    scfg = SamplingConfig(eval_samples=12, steps=(1, 3), methods=("euler",), sample_batch_size=16,
                          ratio_steps=(1,), ratio_reference=3, generation=gcfg)

    def run(order, where):
        monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / where))
        out = {}
        for task in order:
            with ForwardClock(diffusion_model_types) as clock:
                out[task] = (run_generation(enc, ds, gcfg) if task == "generation" else run_sampling(enc, ds, scfg))
            out[task + "_forwards"] = clock.summary()["forwards"]
        return out

    a = run(("sampling", "generation"), "a")
    b = run(("generation", "sampling"), "b")
    assert _untimed(a["sampling"]) == _untimed(b["sampling"])
    assert _untimed(a["generation"]) == _untimed(b["generation"])
    # the shared point's 3 evaluations of batch [0, 16) run in whichever cell comes first
    assert a["sampling_forwards"] - b["sampling_forwards"] == 3
    assert b["generation_forwards"] - a["generation_forwards"] == 3
    assert [(r["method"], r["steps"]) for r in b["sampling"]["curve"]] == [("euler", 1), ("euler", 3)]
    assert b["sampling"]["curve"][1]["sample_s_per_image"] > 0  # the cached batch keeps its computation's cost


def test_cpu_sampling_evaluates_the_model_in_chunks_on_its_explicit_attention_path(monkeypatch):
    """On a CPU the model sees MODEL_CHUNK samples a call with timm's unfused attention, restored afterwards;
    the samples are those of whole-batch fused calls up to float rounding (one level of 255 at most)."""
    import svgbench.diffusion.generate as gen

    torch.set_num_threads(1)
    enc, model, stats = _setup()
    sampler = ODESampler("euler", 2, 0.15)
    seen = []
    hook = model.register_forward_hook(lambda m, args, out: seen.append(
        (len(args[0]), [a.fused_attn for a in m.modules() if hasattr(a, "fused_attn")])))
    monkeypatch.setattr(gen, "MODEL_CHUNK", 4)
    chunked, _ = generate(model, stats, enc, range(10), 10, sampler, seed=5, batch_size=10, device="cpu")
    assert [b for b, _ in seen] == [4, 4, 2] * 2 and all(f and not any(f) for _, f in seen)
    assert all(a.fused_attn for a in model.modules() if hasattr(a, "fused_attn"))  # restored
    hook.remove()
    monkeypatch.setattr(gen, "MODEL_CHUNK", 10**6)
    monkeypatch.setattr(gen, "_unfused_attention", lambda m: __import__("contextlib").nullcontext())
    whole, _ = generate(model, stats, enc, range(10), 10, sampler, seed=5, batch_size=10, device="cpu")
    assert (chunked.int() - whole.int()).abs().max() <= 1
