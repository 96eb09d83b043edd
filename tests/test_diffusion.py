"""The diffusion transformer, the rectified flow and the samplers (fast: tiny models, small latents)."""

import math

import pytest
import torch

from svgbench.checkpoints import CheckpointError, save_safetensors
from svgbench.diffusion.models import MODELS, SIZES, DiffusionTransformer, build_model, load_official
from svgbench.diffusion.samplers import (Guidance, cfg_velocity, euler, heun, index_seed, noise_for_indices,
                                         sampling_times)
from svgbench.diffusion.transport import LatentStats, RectifiedFlow, rae_alpha, rae_shift, time_shift


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero weights everywhere (adaLN-Zero would make every output 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def tiny(**kw) -> DiffusionTransformer:
    kw = {"in_channels": 8, "input_size": 4, "patch_size": 1, "num_classes": 10, **kw}
    return build_model("tiny", **kw)


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,patch,channels,res", [("tiny", 1, 24, 8), ("tiny", 2, 4, 8),
                                                      ("S", 1, 392, 4), ("S", 2, 4, 8)])
def test_shapes(size, patch, channels, res):
    m = randomize(build_model(size, in_channels=channels, input_size=res, patch_size=patch, num_classes=10))
    x = torch.randn(2, channels, res, res)
    with torch.no_grad():
        v = m(x, torch.rand(2), torch.tensor([3, 10]))
    assert v.shape == x.shape
    assert m.pos_embed.shape == (1, (res // patch) ** 2, SIZES[size]["hidden_size"])
    with pytest.raises(ValueError, match="expected latents"):
        m(torch.randn(2, channels, res + patch, res + patch), torch.rand(2), torch.tensor([0, 1]))


def test_learn_sigma_keeps_layout_returns_velocity_only():
    m = tiny(learn_sigma=True)
    assert m.final_layer.linear.weight.shape == (2 * 8, 192)
    assert randomize(m)(torch.randn(2, 8, 4, 4), torch.rand(2), torch.tensor([0, 1])).shape == (2, 8, 4, 4)


def test_adaln_zero_init_outputs_zero():
    for m in (tiny(qk_norm=True), tiny(patch_size=2, in_channels=4, input_size=8, learn_sigma=True)):
        x = torch.randn(3, m.in_channels, m.input_size, m.input_size)
        with torch.no_grad():
            v = m.eval()(x, torch.rand(3), torch.tensor([0, 5, 10]))
        assert torch.count_nonzero(v) == 0


def test_sincos_positions_match_the_dit_convention():
    n = 3
    pe = build_model("tiny", in_channels=4, input_size=n).pos_embed[0]
    # DiT/MAE: first half of the channels encodes the column, second half the row; each half [sin, cos]
    row, col = 1, 2
    w = 1.0 / 10000 ** (torch.arange(192 // 4, dtype=torch.float64) / (192 / 4))
    expect = torch.cat([torch.sin(col * w), torch.cos(col * w), torch.sin(row * w), torch.cos(row * w)]).float()
    torch.testing.assert_close(pe[row * n + col], expect)


def test_label_dropout_and_forced_drop():
    m = randomize(tiny())
    x, t = torch.randn(2, 8, 4, 4), torch.rand(2)
    with torch.no_grad():
        null = m(x, t, torch.tensor([10, 10]))
        forced = m(x, t, torch.tensor([3, 4]), force_drop_ids=torch.tensor([1, 1]))
        kept = m(x, t, torch.tensor([3, 4]), force_drop_ids=torch.tensor([0, 0]))
        plain = m(x, t, torch.tensor([3, 4]))
    torch.testing.assert_close(forced, null, rtol=0, atol=0)
    torch.testing.assert_close(kept, plain, rtol=0, atol=0)
    assert m.y_embedder.embedding_table.weight.shape[0] == 11  # null class = num_classes


def test_sizes_dict():
    assert set(MODELS) == {"tiny", "S", "B", "L", "XL"}
    assert SIZES["XL"] == dict(depth=28, hidden_size=1152, num_heads=16)
    with pytest.raises(ValueError, match="unknown"):
        build_model("XXXL", in_channels=4)


def test_xl_parameter_count():
    with torch.device("meta"):
        svg = build_model("XL", in_channels=392, input_size=16, patch_size=1, qk_norm=True)
        svg_sigma = build_model("XL", in_channels=392, input_size=16, patch_size=1, qk_norm=True, learn_sigma=True)
        dit = build_model("XL", in_channels=4, input_size=32, patch_size=2, learn_sigma=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # DiT-XL/2 reports 675M parameters, its (frozen) pos_embed parameter included
    assert count(dit) + dit.pos_embed.numel() == 675_129_632
    # SVG-XL: the 392 -> 1152 linear stem and 392-channel output cost about as much as DiT's 2x2x4 conv
    assert count(svg) == 675_691_016
    assert count(svg_sigma) == 676_142_992
    assert abs(count(svg) / count(dit) - 1) < 0.01


# ---------------------------------------------------------------------------------------------
# official checkpoints
# ---------------------------------------------------------------------------------------------

OFFICIAL_KEYS = [  # models/models_SVG.py (shiml20/SVG): DiT names, with the linear stem `ln1` at patch 1
    "pos_embed", "ln1.weight", "ln1.bias", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.bias",
    "y_embedder.embedding_table.weight", "blocks.0.adaLN_modulation.1.weight", "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias", "blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.bias",
    "blocks.0.attn.proj.weight", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.bias",
    "blocks.3.adaLN_modulation.1.bias", "final_layer.linear.weight", "final_layer.adaLN_modulation.1.weight",
]


def test_official_key_layout():
    sd = tiny(qk_norm=True, learn_sigma=True).state_dict()
    missing = [k for k in OFFICIAL_KEYS if k not in sd]
    assert not missing, missing
    assert not any(k.startswith(("x_embedder", "blocks.4.")) for k in sd)
    assert sd["ln1.weight"].shape == (192, 8)
    assert sd["y_embedder.embedding_table.weight"].shape == (11, 192)
    # DiT / SiT names at patch 2
    sd2 = tiny(patch_size=2, in_channels=4, input_size=8).state_dict()
    assert sd2["x_embedder.proj.weight"].shape == (192, 4, 2, 2) and "ln1.weight" not in sd2
    assert "blocks.0.attn.q_norm.weight" not in sd2  # qk_norm off


@pytest.mark.parametrize("wrap", ["ema", "model", None])
def test_official_checkpoint_loads_with_identical_outputs(tmp_path, wrap):
    src = randomize(tiny(qk_norm=True, learn_sigma=True), seed=1)
    path = tmp_path / "ckpt.pt"
    sd = src.state_dict()
    torch.save({wrap: sd} if wrap else sd, path)
    m = load_official(path, "tiny", in_channels=8, input_size=4, num_classes=10, key=wrap)
    assert not m.training
    x, t, y = torch.randn(3, 8, 4, 4), torch.rand(3), torch.tensor([0, 7, 10])
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, y), src(x, t, y), rtol=0, atol=0)


def test_official_loader_names_mismatching_keys(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"ema": tiny(qk_norm=True, learn_sigma=False).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"final_layer\.linear\.weight"):  # learn_sigma=True expected
        load_official(path, "tiny", in_channels=8, input_size=4, num_classes=10)
    with pytest.raises(CheckpointError, match=r"ln1\.weight: checkpoint \(192, 8\) vs model \(192, 6\)"):
        load_official(path, "tiny", in_channels=6, input_size=4, num_classes=10, learn_sigma=False)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*q_norm"):
        load_official(path, "tiny", in_channels=8, input_size=4, num_classes=10, learn_sigma=False, qk_norm=False)
    with pytest.raises(CheckpointError, match="'model'"):
        load_official(path, "tiny", in_channels=8, input_size=4, num_classes=10, key="model")


# ---------------------------------------------------------------------------------------------
# rectified flow and time shifts
# ---------------------------------------------------------------------------------------------

def test_time_shift():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for s in (0.15, 0.4, 1.0, 3.0):
        ts = time_shift(t, s)
        assert ts[0] == 0 and ts[-1] == 1
        assert (ts[1:] > ts[:-1]).all()
    torch.testing.assert_close(time_shift(t, 1.0), t)
    assert time_shift(0.5, 0.4) == pytest.approx(0.4 * 0.5 / (1 + (0.4 - 1) * 0.5))
    assert (time_shift(t[1:-1], 0.4) < t[1:-1]).all()  # s < 1 spends more time near the noise (t = 0)
    with pytest.raises(ValueError):
        time_shift(t, 0.0)
    st = sampling_times(25, 0.15)
    assert st.shape == (26,) and st[0] == 0 and st[-1] == 1


def test_rae_shift():
    assert rae_alpha((768, 16, 16)) == pytest.approx(math.sqrt(256 * 768 / 4096))
    assert rae_alpha((256, 768)) == rae_alpha((768, 16, 16))
    # RAE shifts the noise level u = 1 - t by alpha; the same map on t is time_shift with s = 1/alpha
    a, t = rae_alpha((392, 16, 16)), torch.linspace(0, 1, 11, dtype=torch.float64)
    u = 1 - t
    torch.testing.assert_close(time_shift(t, rae_shift((392, 16, 16))), 1 - a * u / (1 + (a - 1) * u))


def test_flow_path_and_loss():
    flow = RectifiedFlow(shift=0.4)
    x, noise = torch.randn(4, 8, 4, 4), torch.randn(4, 8, 4, 4)
    torch.testing.assert_close(flow.interpolate(x, noise, torch.zeros(4)), noise)
    torch.testing.assert_close(flow.interpolate(x, noise, torch.ones(4)), x)
    torch.testing.assert_close(flow.target(x, noise), x - noise)

    m = tiny().train()  # adaLN-Zero: v = 0, so the loss is E|x - noise|^2
    out1 = flow.loss(m, x, torch.arange(4), generator=torch.Generator().manual_seed(3))
    out2 = flow.loss(m, x, torch.arange(4), generator=torch.Generator().manual_seed(3))
    assert out1["mse"].shape == (4,)
    torch.testing.assert_close(out1["loss"], out2["loss"], rtol=0, atol=0)
    g = torch.Generator().manual_seed(3)
    expect = ((x - torch.randn(x.shape, generator=g)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out1["mse"], expect)
    out1["loss"].backward()
    assert m.final_layer.linear.weight.grad.abs().sum() > 0

    t = flow.sample_t(10_000, generator=torch.Generator().manual_seed(0))
    assert 0 <= t.min() and t.max() <= 1 and t.mean() < 0.45  # shifted towards noise


def test_loss_class_dropout_is_drawn_from_the_generator():
    m = randomize(build_model("tiny", in_channels=8, input_size=4, num_classes=10, class_dropout_prob=1.0))
    m.train()
    x, y = torch.randn(2, 8, 4, 4), torch.tensor([1, 2])
    dropped = RectifiedFlow().loss(m, x, y, generator=torch.Generator().manual_seed(0))["loss"]
    nulls = RectifiedFlow().loss(m, x, torch.tensor([10, 10]), generator=torch.Generator().manual_seed(0))["loss"]
    torch.testing.assert_close(dropped, nulls, rtol=0, atol=0)


def test_latent_stats_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 5, 3, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0]).view(1, 5, 1, 1) + 4
    z[:, 4] = 7.0  # a constant channel must not blow up
    stats = LatentStats.from_latents(z)
    streamed = LatentStats.from_latents(iter([z[:2], z[2:5], z[5:]]))
    torch.testing.assert_close(streamed.mean, stats.mean)
    torch.testing.assert_close(streamed.std, stats.std)
    n = stats.normalize(z)
    torch.testing.assert_close(n[:, :4].mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(n[:, :4].std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-5, rtol=0)
    assert torch.isfinite(n).all() and (n[:, 4] == 0).all()
    torch.testing.assert_close(stats.denormalize(n), z, atol=1e-5, rtol=0)

    assert set(stats.state_dict()) == {"mean", "std"}
    save_safetensors(stats.state_dict(), tmp_path / "stats.safetensors")
    again = LatentStats.load(tmp_path / "stats.safetensors")
    torch.testing.assert_close(again.normalize(z), n)
    # the official SVG layout: (1, 1, C) tensors under dinov3_sp_mean / dinov3_sp_std
    torch.save({"dinov3_sp_mean": stats.mean.view(1, 1, 5), "dinov3_sp_std": stats.std.view(1, 1, 5)},
               tmp_path / "dinov3_sp_stats.pt")
    official = LatentStats.load(tmp_path / "dinov3_sp_stats.pt", mean_key="dinov3_sp_mean",
                                std_key="dinov3_sp_std")
    torch.testing.assert_close(official.normalize(z), n)
    with pytest.raises(ValueError, match="channels"):
        stats.normalize(torch.randn(2, 4, 3, 3))


# ---------------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------------

def test_noise_for_indices_does_not_depend_on_batching():
    shape = (3, 4, 4)
    whole = noise_for_indices(range(10), shape, seed=7)
    parts = torch.cat([noise_for_indices([0, 1, 2], shape, 7), noise_for_indices(range(3, 10), shape, 7)])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)
    # two ranks interleaving indices give the same rows
    rank0, rank1 = noise_for_indices(range(0, 10, 2), shape, 7), noise_for_indices(range(1, 10, 2), shape, 7)
    torch.testing.assert_close(whole[0::2], rank0, rtol=0, atol=0)
    torch.testing.assert_close(whole[1::2], rank1, rtol=0, atol=0)
    assert not torch.equal(whole[0], whole[1])
    other = noise_for_indices(range(10), shape, seed=8)
    assert not any(torch.equal(a, b) for a in whole for b in other)
    # torch's CPU generator keeps 32 bits of a seed: one seed's indices must still map to distinct ones
    seeds = {index_seed(i, s) for s in (0, 1, 2**31) for i in range(20_000)}
    assert len(seeds) == 60_000


class PointMass:
    """The exact velocity of a point-mass data distribution at `target`: (target - x) / (1 - t)."""

    training = False

    def __init__(self, target):
        self.target, self.calls = target, 0

    def __call__(self, x, t, y):
        self.calls += 1
        return (self.target - x) / (1 - t.view(-1, 1, 1, 1))


@pytest.mark.parametrize("steps", [1, 2, 7, 25])
def test_euler_lands_on_target_along_straight_paths(steps):
    target, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    model = PointMass(target)
    for shift in (1.0, 0.15):
        x = euler(steps, shift=shift)(model, noise, torch.zeros(3, dtype=torch.long))
        torch.testing.assert_close(x, target, atol=1e-5, rtol=0)
    # a constant field, noise -> target in a straight line (what the model learns: target - noise)
    const = lambda x, t, y: target - noise  # noqa: E731
    for method in (euler, heun):
        torch.testing.assert_close(method(steps, shift=0.15)(const, noise, None), target, atol=1e-5, rtol=0)
    model.calls = 0
    s = heun(steps, shift=0.15, heun_final_euler=True)
    torch.testing.assert_close(s(model, noise, torch.zeros(3, dtype=torch.long)), target, atol=1e-5, rtol=0)
    assert model.calls == s.nfe == 2 * steps - 1


def test_heun_is_exact_for_velocity_linear_in_time():
    # dx/dt = a + b t integrates to x0 + a + b/2 over [0, 1]: the trapezoid rule is exact, Euler is not
    a, b, x0 = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    field = lambda x, t, y: a + b * t.view(-1, 1, 1, 1)  # noqa: E731
    torch.testing.assert_close(heun(4, shift=0.4)(field, x0, None), x0 + a + b / 2, atol=1e-5, rtol=0)
    assert not torch.allclose(euler(4, shift=0.4)(field, x0, None), x0 + a + b / 2, atol=1e-3)


def test_cfg():
    m = randomize(tiny())
    x, t, y = torch.randn(3, 8, 4, 4), torch.rand(3), torch.tensor([1, 2, 3])
    with torch.no_grad():
        vc, vu = m(x, t, y), m(x, t, torch.full_like(y, 10))
        torch.testing.assert_close(cfg_velocity(m, x, t, y, 1.0, 10), vc, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cfg_velocity(m, x, t, y, 4.0, 10), vu + 4.0 * (vc - vu), atol=1e-5, rtol=1e-5)
    noise = noise_for_indices(range(3), (8, 4, 4), seed=0)
    plain = euler(3)(m, noise, y)
    torch.testing.assert_close(euler(3, guidance=Guidance(1.0))(m, noise, y), plain, rtol=0, atol=0)
    assert not torch.allclose(euler(3, guidance=Guidance(4.0))(m, noise, y), plain)
    with pytest.raises(ValueError, match="eval mode"):
        euler(3)(m.train(), noise, y)


class Recorder:
    """Velocity = label value (null = 0); records the batch size and times of every call."""

    training = False
    num_classes = 10

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], t[0].item()))
        return torch.where(y == 10, 0.0, y.float()).view(-1, 1, 1, 1).expand_as(x).clone()


def test_cfg_modes_batch_and_schedule():
    noise, y = torch.zeros(2, 1, 1, 1), torch.tensor([1, 1])
    # constant: one batched cond+uncond forward per step, v = vu + w (vc - vu) = w
    r = Recorder()
    x = euler(5, shift=1.0, guidance=Guidance(3.0))(r, noise, y)
    assert [b for b, _ in r.calls] == [4] * 5
    torch.testing.assert_close(x, torch.full_like(noise, 3.0))
    # window: guidance only for t in [0.4, 0.6] -> at t = 0.4 and 0.6 (dt 0.2 each), conditional elsewhere
    r = Recorder()
    x = euler(5, shift=1.0, guidance=Guidance(3.0, "window", (0.4, 0.6)))(r, noise, y)
    assert [b for b, _ in r.calls] == [2, 2, 4, 4, 2]
    torch.testing.assert_close(x, torch.full_like(noise, 0.6 * 1 + 0.4 * 3))
    # zero-init: no model call and zero velocity at the first step, guided afterwards
    r = Recorder()
    x = euler(5, shift=1.0, guidance=Guidance(3.0, "zero-init"))(r, noise, y)
    assert len(r.calls) == 4 and r.calls[0][1] == pytest.approx(0.2)
    torch.testing.assert_close(x, torch.full_like(noise, 0.8 * 3))
    with pytest.raises(ValueError):
        Guidance(2.0, "window")
    with pytest.raises(ValueError):
        Guidance(2.0, "cfg_star")


# ---------------------------------------------------------------------------------------------
# any published checkpoint, architecture read from its tensors
# ---------------------------------------------------------------------------------------------

def test_load_diffusion_checkpoint_svg_layout_with_official_stats(tmp_path):
    from svgbench.diffusion.official import load_diffusion_checkpoint

    src = randomize(tiny(qk_norm=True, learn_sigma=True), seed=4)
    torch.save({"ema": src.state_dict(), "opt": {"lr": torch.tensor(1e-4)}}, tmp_path / "0080000.pt")
    mean, std = torch.randn(1, 1, 8), torch.rand(1, 1, 8) + 0.5
    torch.save({"dinov3_sp_mean": mean, "dinov3_sp_std": std}, tmp_path / "dinov3_sp_stats.pt")
    model, stats, info = load_diffusion_checkpoint(tmp_path / "0080000.pt", tmp_path / "dinov3_sp_stats.pt",
                                                   latent_shape=(8, 4, 4), num_classes=10)
    assert info["layout"] == "svg" and info["entry"] == "ema" and info["latent_scale"] is None
    assert info["architecture"] == dict(size="tiny", in_channels=8, input_size=4, patch_size=1, learn_sigma=True,
                                        qk_norm=True, num_classes=10, class_dropout_prob=0.1)
    torch.testing.assert_close(stats.mean, mean.flatten())
    # LatentStats.load finds the official keys without being told
    torch.testing.assert_close(LatentStats.load(tmp_path / "dinov3_sp_stats.pt").std, std.flatten())
    x, t, y = torch.randn(2, 8, 4, 4), torch.rand(2), torch.tensor([1, 10])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), src(x, t, y), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"models latents \(8, 4, 4\).*produces \(392, 16, 16\)"):
        load_diffusion_checkpoint(tmp_path / "0080000.pt", tmp_path / "dinov3_sp_stats.pt", latent_shape=(392, 16, 16))
    with pytest.raises(CheckpointError, match="needs its latent statistics"):
        load_diffusion_checkpoint(tmp_path / "0080000.pt")
    torch.save({"dinov3_sp_mean": mean[..., :6], "dinov3_sp_std": std[..., :6]}, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match="6 channels, the model 8"):
        load_diffusion_checkpoint(tmp_path / "0080000.pt", tmp_path / "short.pt")


def test_load_diffusion_checkpoint_sit_layout_and_svgbench_export(tmp_path):
    from svgbench.diffusion.official import SD_VAE_SCALE, load_diffusion_checkpoint

    sit = randomize(tiny(patch_size=2, in_channels=4, input_size=8, learn_sigma=True), seed=5)
    torch.save(sit.state_dict(), tmp_path / "SiT-XL-2-256.pt")  # the released SiT file is a bare state dict
    # DiT and SiT share this layout: the kind is declared, never guessed
    with pytest.raises(CheckpointError, match="kind=dit or ENCODER=PATH,kind=sit"):
        load_diffusion_checkpoint(tmp_path / "SiT-XL-2-256.pt", latent_shape=(4, 8, 8))
    with pytest.raises(CheckpointError, match="not SVG's"):
        load_diffusion_checkpoint(tmp_path / "SiT-XL-2-256.pt", latent_shape=(4, 8, 8), kind="svg")
    model, stats, info = load_diffusion_checkpoint(tmp_path / "SiT-XL-2-256.pt", latent_shape=(4, 8, 8), kind="sit")
    assert info["layout"] == "sit-dit" and info["entry"] == "bare" and info["latent_scale"] == SD_VAE_SCALE == 0.18215
    assert info["kind"] == model.diffusion_kind == "sit"
    assert info["architecture"]["patch_size"] == 2 and not info["architecture"]["qk_norm"]
    z = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(stats.normalize(z), z)
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([0, 3])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), sit(x, t, y), rtol=0, atol=0)
    # a wrong tensor is named
    bad = dict(sit.state_dict())
    bad["blocks.1.mlp.fc1.weight"] = torch.zeros(10, 192)
    torch.save({"ema": bad}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        load_diffusion_checkpoint(tmp_path / "bad.pt")
    # svgbench's export: the statistics travel in the file
    own = randomize(tiny(), seed=6)
    st = LatentStats(torch.randn(8), torch.rand(8) + 0.1)
    save_safetensors({**own.state_dict(), "stats.mean": st.mean, "stats.std": st.std}, tmp_path / "own.safetensors",
                     metadata={"format": "svgbench.diffusion", "encoder": "tiny-svg"})
    m2, s2, info2 = load_diffusion_checkpoint(tmp_path / "own.safetensors")
    assert info2["layout"] == "svgbench" and not info2["architecture"]["learn_sigma"]
    torch.testing.assert_close(s2.std, st.std)


# ---------------------------------------------------------------------------------------------
# bf16 sampling
# ---------------------------------------------------------------------------------------------

def test_bf16_autocast_sampling_stays_close_to_fp32():
    """bf16 autocast (8-bit mantissa) on a 4-layer random model, 10 guided Euler steps: samples within 0.05
    absolute (values of order 1) of fp32, and far closer to them than to another seed's samples."""
    m = randomize(tiny(qk_norm=True), seed=2)
    noise, y = noise_for_indices(range(8), (8, 4, 4), seed=1), torch.arange(8)
    s32 = euler(10, guidance=Guidance(3.0))(m, noise, y)
    s16 = euler(10, guidance=Guidance(3.0), autocast=torch.bfloat16)(m, noise, y)
    assert s16.dtype == torch.float32
    err = (s16 - s32).abs().max().item()
    assert 0 < err < 0.05, err  # > 0: autocast really ran in bf16
    other = euler(10, guidance=Guidance(3.0))(m, noise_for_indices(range(8, 16), (8, 4, 4), seed=1), y)
    assert (s16 - s32).abs().mean() < 0.05 * (other - s32).abs().mean()


def test_embedded_preset_samples_shipped_models_in_bf16_where_the_cpu_has_it():
    """The tiny preset's bf16 sampling, on a shipped model (tiny-vae's, 16 samples, Euler 8 steps, decoded):
    on only where the CPU multiplies bf16 natively; deterministic run to run; its decoded images within a few
    grey levels of float32's (mean) and far closer to them than another noise's images."""
    from svgbench.diffusion.generate import generate
    from svgbench.diffusion.samplers import ODESampler
    from svgbench.diffusion.store import load_shipped
    from svgbench.encoders.registry import create_encoder
    from svgbench.presets import RUN_PRESETS, preset_bf16

    tasks = RUN_PRESETS["tiny"]["tasks"]
    assert tasks["generation"]["bf16"] is tasks["sampling"]["bf16"] is preset_bf16()
    enc = create_encoder("tiny-vae").eval()
    model, stats, _, _ = load_shipped(enc, "shapes", 10, "cpu")

    def images(autocast, seed=0):
        sampler = ODESampler("euler", 8, 0.15, autocast=autocast)
        return generate(model, stats, enc, range(16), 10, sampler, seed=seed, batch_size=16, device="cpu")[0]

    x32, x16 = images(None).float(), images(torch.bfloat16).float()
    assert torch.equal(images(torch.bfloat16).float(), x16)
    err = (x16 - x32).abs().mean().item()
    assert 0 < err < 4.0, err  # grey levels of 255; > 0: bf16 really ran
    assert err < 0.1 * (images(None, seed=1).float() - x32).abs().mean().item()


# ---------------------------------------------------------------------------------------------
# FLOPs and MFU
# ---------------------------------------------------------------------------------------------

def test_flops_are_counted_by_torch_and_mfu():
    from svgbench.diffusion.flops import count_flops, mfu, peak_flops

    m = randomize(tiny())
    x, t, y = torch.randn(2, 8, 4, 4), torch.rand(2), torch.tensor([0, 1])
    with torch.no_grad():
        f = count_flops(m, x, t, y)
    # cross-check: the linear layers alone, written out (2 flops a multiply-add), for 16 tokens x 2 samples
    d, n, depth = 192, 32, 4
    linears = n * (8 * d + depth * (3 * d * d + d * d + 8 * d * d) + d * 8) + 2 * (depth * 6 * d * d + 2 * d * d)
    attention = depth * 2 * (16 * 16 * d) * 2  # q k^T and attn v, per sample
    assert f == 2 * (linears + attention) + 2 * 2 * (256 * d + d * d)  # + the timestep MLP
    with torch.no_grad():
        assert count_flops(m, torch.randn(4, 8, 4, 4), torch.rand(4), torch.arange(4)) == 2 * f  # linear in batch
    assert peak_flops("cpu") is None and mfu(f, 1.0, "cpu") is None
    assert mfu(1e12, 2.0, "cpu", peak=1e12) == 0.5
