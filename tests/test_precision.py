"""The generation / sampling tasks' arithmetic: the precision plan per device (bf16 autocast + TF32 on CUDA for
`auto`, fp32 elsewhere), TF32 switched on only inside a sampler call, torch.compile as an option, each stated in the
record; and the bf16-vs-fp32 difference of FID on a small model, bounded."""

import dataclasses

import pytest
import torch

from svgbench.diffusion.task_sampler import make_sampler, precision_fields, precision_plan, tf32_matmuls
from svgbench.tasks.generation import GenerationConfig, SamplingConfig


def test_precision_plans():
    auto = GenerationConfig(precision="auto")
    assert precision_plan(auto, "cuda") == (torch.bfloat16, True)
    assert precision_plan(auto, "cpu") == (None, False)
    assert precision_plan(GenerationConfig(), "cuda") == (None, False)
    assert precision_plan(GenerationConfig(precision="tf32"), "cuda") == (None, True)
    assert precision_plan(GenerationConfig(precision="tf32"), "cpu") == (None, False)
    assert precision_plan(SamplingConfig(precision="bf16"), "cpu") == (torch.bfloat16, False)
    assert precision_plan(GenerationConfig(bf16=True), "cpu") == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="precision 'half'"):
        make_sampler(GenerationConfig(precision="half"))


def test_tf32_only_inside_the_block():
    before = torch.backends.cuda.matmul.allow_tf32
    with tf32_matmuls(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before


class _Velocity(torch.nn.Module):
    """A small conditional velocity field that records the autocast state of its forwards."""

    in_channels, input_size, num_classes = 4, 4, 3

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(4 * 16 + 1, 4 * 16)
        self.emb = torch.nn.Embedding(4, 4 * 16)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        self.seen = []

    def forward(self, x, t, y):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        h = torch.cat([x.flatten(1), t[:, None].to(x.dtype)], 1)
        return (self.lin(h) + self.emb(y)).view_as(x)


def test_sampler_runs_its_plan_and_the_record_says_so(monkeypatch):
    model, noise, y = _Velocity().eval(), torch.randn(6, 4, 4, 4), torch.arange(6) % 3
    fp32 = make_sampler(GenerationConfig(sample_steps=3))
    out32 = fp32(model, noise, y)
    assert model.seen and not any(model.seen) and out32.dtype == torch.float32
    assert precision_fields(GenerationConfig(), fp32) == {"autocast": None, "numeric_precision": "fp32",
                                                          "compiled": False, "labels": "balanced"}
    model.seen.clear()
    bf = make_sampler(GenerationConfig(sample_steps=3, precision="bf16"))
    out16 = bf(model, noise, y)
    assert all(model.seen) and out16.dtype == torch.float32  # the ODE state stays float32
    assert 0 < (out16 - out32).abs().max() < 0.1
    assert precision_fields(GenerationConfig(precision="bf16"), bf)["numeric_precision"] == "bf16-autocast"
    # auto on a CPU: the fp32 path, bit for bit
    assert torch.equal(make_sampler(GenerationConfig(sample_steps=3, precision="auto"))(model, noise, y), out32)
    # compile: the model's forward is compiled once, whatever wrapper the generator puts around it
    calls, compiled_calls = [], []

    def fake_compile(fn):
        calls.append(fn)
        return lambda *a: compiled_calls.append(1) or fn(*a)

    monkeypatch.setattr(torch, "compile", fake_compile)
    comp = make_sampler(GenerationConfig(sample_steps=3, compile=True))
    assert torch.equal(comp(model, noise, y), out32)
    comp(model, noise, y)
    assert len(calls) == 1 and len(compiled_calls) == 6  # compiled once, every evaluation through it
    assert precision_fields(GenerationConfig(compile=True), comp)["compiled"] is True
    assert list(model.state_dict()) == ["lin.weight", "lin.bias", "emb.weight"]
    # the FLOP count runs the eager forward (a compiled one would recompile for the counting batch)
    from svgbench.diffusion.flops import forward_flops

    n = len(compiled_calls)
    assert forward_flops(model, 2, "cpu") > 0 and len(compiled_calls) == n


def test_bf16_moves_fid_by_little_on_a_small_model():
    """bf16 autocast vs fp32 through the task's sampler on a small random transformer (guided Euler, 4 steps,
    256 samples of 4 x 4 x 4): the samples differ (bf16 did run), their Fréchet distance to one fp32 reference set
    (the samples themselves as features, D = 64) moves by far less than the distance's own seed-to-seed
    spread. Measured on this CPU: FID 9.16974 (fp32) vs 9.16994 (bf16), relative 2.1e-5, 0.2% of the
    seed-to-seed spread (0.114); samples differ by at most 5.1e-3. Asserted: relative < 1e-3 and < 5% of the
    spread."""
    from svgbench.diffusion.models import build_model
    from svgbench.diffusion.samplers import noise_for_indices
    from svgbench.metrics.fidelity import metrics_from_features

    torch.manual_seed(0)
    model = build_model("tiny", in_channels=4, input_size=4, patch_size=2, learn_sigma=False, num_classes=10).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # off the zero-initialised output layer: a velocity field with structure
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    n, y = 256, torch.arange(256) % 10

    def samples(precision, first):
        noise = noise_for_indices(range(first, first + n), (4, 4, 4), seed=0)
        cfg = GenerationConfig(sample_steps=4, precision=precision, guidance=1.5)
        with torch.no_grad():
            return make_sampler(cfg)(model, noise, y).flatten(1)

    def fid(a, b):
        return metrics_from_features(a, b)["frechet_inception_distance"]

    ref = samples("fp32", n)
    fp32, bf16, other_seed = samples("fp32", 0), samples("bf16", 0), samples("fp32", 2 * n)
    assert (fp32 - bf16).abs().max() > 1e-4  # the bf16 path ran
    f32, f16 = fid(fp32, ref), fid(bf16, ref)
    spread = abs(fid(other_seed, ref) - f32)
    assert abs(f16 - f32) / f32 < 1e-3, (f32, f16)
    assert abs(f16 - f32) < 0.05 * spread, (f32, f16, spread)
