"""Classifier-free guidance as the official samplers do it, checked against an independent re-implementation.

The reference below is written from shiml20/SVG `rectified_flow/rectified_flow.py` (`RectifiedFlow.sample`)
and willisma/SiT `models.py` (`forward_with_cfg`): a plain loop, separate conditional and unconditional
forwards, time sequence in float32 as `prepare_t_seq` builds it, string cfg modes. svgbench's sampler batches
the two forwards and keeps times in float64, so the two agree to float rounding, not bit for bit.
"""

import pytest
import torch

from svgbench.diffusion.models import build_model
from svgbench.diffusion.protocols import PROTOCOLS, build_sampler, get_protocol
from svgbench.diffusion.samplers import Guidance, ODESampler, noise_for_indices

pytestmark = pytest.mark.usefixtures("one_thread")

NULL = 10


def random_model(seed=0, **kw):
    kw = {"in_channels": 8, "input_size": 4, "patch_size": 1, "num_classes": 10, "qk_norm": True,
          "learn_sigma": True, **kw}
    m = build_model("tiny", **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m.eval()


def reference_sample(model, z, y, *, steps, shift, cfg, mode="euler", cfg_mode="constant", guided_channels=None,
                     cfg_interval=2, use_s_star=False):
    """The official SVG loop, restated from `diffusion/rectified_flow_ori_ablation_guidance.py` @ 7b4662d (and
    the release's `early-r`); cfg_mode None: no unconditional model (the script's path at cfg-scale 1)."""
    base = torch.linspace(0, 1, steps + 1)
    t_seq = torch.tensor([shift * t.item() / (1 + (shift - 1) * t.item()) for t in base])
    dt_seq = t_seq[1:] - t_seq[:-1]
    y_null = torch.full_like(y, NULL)

    def v(z, t, i):
        tt = torch.full((z.shape[0],), float(t))
        vc = model(z, tt, y)
        if cfg_mode is None:
            return vc
        vu = model(z, tt, y_null)
        w = cfg
        if cfg_mode == "interval":
            w = cfg if i % cfg_interval == 0 else 1.0
        elif cfg_mode == "late":
            w = cfg if (i + 1) / steps > 0.5 else 1.0
        elif cfg_mode == "early":
            w = cfg if (i + 1) / steps < 0.5 else 1.0
        elif cfg_mode == "linear":
            w = 1.0 + (cfg - 1.0) * (i + 1) / steps
        elif cfg_mode.startswith("early-"):
            w = cfg if float(t) > float(cfg_mode.split("-")[1]) else 1.0
        elif cfg_mode.startswith("cfg_star-"):
            _, skip, ratio = cfg_mode.split("-")
            if i < int(skip):
                return -vu * float(ratio)
            if use_s_star:  # the line commented out at 7b4662d: CFG-Zero*'s optimised scale
                b = vc.shape[0]
                dot = torch.sum(vc.reshape(b, -1) * vu.reshape(b, -1), dim=1, keepdim=True)
                s_star = (dot / (torch.sum(vu.reshape(b, -1) ** 2, dim=1, keepdim=True) + 1e-8)).view(b, 1, 1, 1)
                return (1 - w) * s_star * vu + w * vc
            return (1 - w) * vu + w * vc
        if guided_channels is not None:  # SiT's forward_with_cfg: guidance on the first k channels only
            k = guided_channels
            return torch.cat([vu[:, :k] + w * (vc[:, :k] - vu[:, :k]), vc[:, k:]], dim=1)
        return vu + w * (vc - vu)

    for i in range(steps):
        d = dt_seq[i]
        v0 = v(z, t_seq[i], i)
        if mode == "euler":
            z = z + d * v0
        else:
            v1 = v(z + d * v0, t_seq[i + 1], i)
            z = z + 0.5 * d * (v0 + v1)
    return z


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = random_model()
    noise = noise_for_indices(range(4), (8, 4, 4), seed=3)
    labels = torch.tensor([0, 3, 7, 9])
    return model, noise, labels


CASES = [  # (svgbench guidance, official cfg_mode, reference kwargs)
    (Guidance(4.0), "constant", {}),
    (Guidance(2.5, "interval"), "interval", {}),
    (Guidance(2.5, "interval", every=3), "interval", {"cfg_interval": 3}),
    (Guidance(3.0, "late"), "late", {}),
    (Guidance(3.0, "early"), "early", {}),
    (Guidance(3.0, "linear"), "linear", {}),
    (Guidance(1.25, "cfg-star", zero_init_steps=1, zero_ratio=0.0), "cfg_star-1-0", {}),
    (Guidance(3.0, "cfg-star", zero_init_steps=2, zero_ratio=0.5), "cfg_star-2-0.5", {}),
    (Guidance(3.0, "cfg-star", zero_init_steps=1, zero_ratio=0.3, optimized_scale=True), "cfg_star-1-0.3",
     {"use_s_star": True}),
    (Guidance(2.5, "window", (0.3, 1.0)), "early-0.3", {}),
    (Guidance(4.0, "zero-init", zero_init_steps=1), "cfg_star-1-0", {}),
    (Guidance(3.0, "zero-init", zero_init_steps=2), "cfg_star-2-0", {}),
]
PARITY = {}  # (method, case) -> max |svgbench - reference| over the samples


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_guided_sampling_matches_the_reference_loop(setup, method, case):
    """Every guidance mode of SVG's FID sampler against the official loop restated: the max abs difference of
    the samples is float rounding (measured: at most ~1e-6 on this model, see PARITY), and every mode moves
    the samples away from plain constant guidance where its schedule differs."""
    model, noise, labels = setup
    guidance, cfg_mode, kw = CASES[case]
    with torch.no_grad():
        ours = ODESampler(method, 6, 0.15, guidance)(model, noise, labels)
        ref = reference_sample(model, noise, labels, steps=6, shift=0.15, cfg=guidance.scale, mode=method,
                               cfg_mode=cfg_mode, **kw)
    err = (ours - ref).abs().max().item()
    PARITY[(method, case)] = err
    print(f"{guidance.mode} ({cfg_mode}) {method}: max |ours - reference| = {err:.2e}")
    assert err < 5e-6, err  # float32 rounding: the time grid, and batched vs separate forwards
    assert ours.abs().max() > 0.5  # a non-trivial trajectory: the comparison means something
    if guidance.mode != "constant":
        with torch.no_grad():
            const = ODESampler(method, 6, 0.15, Guidance(guidance.scale))(model, noise, labels)
        assert (ours - const).abs().max() > 1e-3  # the schedule is really applied


def test_cfg_star_at_scale_one_negates_the_conditional_velocity(setup):
    """At cfg-scale 1 SVG's script has no unconditional model: cfg_star-K-r's first K steps are -r * vc."""
    model, noise, labels = setup
    with torch.no_grad():
        ours = ODESampler("euler", 5, 0.15, Guidance(1.0, "cfg-star", zero_init_steps=2, zero_ratio=0.5))(
            model, noise, labels)
        t = ODESampler("euler", 5, 0.15).times.float().tolist()
        z = noise.clone()
        for i in range(5):
            vc = model(z, torch.full((4,), t[i]), labels)
            z = z + (t[i + 1] - t[i]) * (-vc * 0.5 if i < 2 else vc)
    assert (ours - z).abs().max().item() < 5e-6


def test_forward_counts_follow_the_schedule(setup):
    model, noise, labels = setup
    for g in (Guidance(2.0, "interval"), Guidance(2.0, "late"), Guidance(2.0, "early"), Guidance(2.0, "linear"),
              Guidance(2.0, "cfg-star", zero_init_steps=2, zero_ratio=0.5), Guidance(2.0, "zero-init")):
        batches = []
        hook = model.t_embedder.register_forward_hook(lambda m, i, o: batches.append(i[0].shape[0]))
        s = ODESampler("euler", 6, 0.15, g)
        with torch.no_grad():
            s(model, noise, labels)
        hook.remove()
        assert sum(batches) / 4 == s.forward_batches(), g


def test_interval_refuses_a_time_window():
    with pytest.raises(ValueError, match="window"):
        Guidance(2.0, "interval", (0.2, 0.5))


def test_guided_channels_match_sit_forward_with_cfg():
    model = random_model(seed=1, in_channels=4, patch_size=2, input_size=8, qk_norm=False)
    noise, labels = noise_for_indices(range(3), (4, 8, 8), seed=0), torch.tensor([1, 2, 3])
    with torch.no_grad():
        ours = ODESampler("heun", 4, 1.0, Guidance(1.5, guided_channels=3))(model, noise, labels)
        ref = reference_sample(model, noise, labels, steps=4, shift=1.0, cfg=1.5, mode="heun", guided_channels=3)
        full = ODESampler("heun", 4, 1.0, Guidance(1.5))(model, noise, labels)
    assert (ours - ref).abs().max().item() < 5e-6
    assert not torch.allclose(ours[:, 3], full[:, 3], atol=1e-4)  # the 4th channel is really left unguided


def test_the_scale_is_used(setup):
    model, noise, labels = setup
    with torch.no_grad():
        cond_only = ODESampler("euler", 5, 0.15)(model, noise, labels)
        w1 = ODESampler("euler", 5, 0.15, Guidance(1.0))(model, noise, labels)
        ref_cond = reference_sample(model, noise, labels, steps=5, shift=0.15, cfg=1.0, cfg_mode=None)
        w2 = ODESampler("euler", 5, 0.15, Guidance(2.0))(model, noise, labels)
        w4 = ODESampler("euler", 5, 0.15, Guidance(4.0))(model, noise, labels)
    torch.testing.assert_close(w1, cond_only, rtol=0, atol=0)
    assert (cond_only - ref_cond).abs().max() < 5e-6
    # guidance moves samples, and further with a larger scale
    d2, d4 = (w2 - w1).abs().mean().item(), (w4 - w1).abs().mean().item()
    assert d2 > 1e-3 and d4 > 1.5 * d2
    # an interval that no evaluation falls in is no guidance at all
    with torch.no_grad():
        empty = ODESampler("euler", 5, 1.0, Guidance(4.0, "window", (0.41, 0.59)))(model, noise, labels)
        plain = ODESampler("euler", 5, 1.0)(model, noise, labels)
    torch.testing.assert_close(empty, plain, rtol=0, atol=0)


def test_cond_and_uncond_share_one_forward(setup):
    model, noise, labels = setup
    batches = []
    hook = model.t_embedder.register_forward_hook(lambda m, i, o: batches.append(i[0].shape[0]))
    with torch.no_grad():
        ODESampler("euler", 3, 0.15, Guidance(4.0, "window", (0.5, 1.0)))(model, noise, labels)
    hook.remove()
    ts = ODESampler("euler", 3, 0.15).times.tolist()[:3]
    assert batches == [8 if t >= 0.5 else 4 for t in ts]


def test_protocols():
    p = get_protocol("svg-paper-cfg")
    s = p.sampler()
    # scripts/fid_abaltion_v3.sh @ 7b4662d: cfg-scale 1.25, shift 0.15, euler; the mode is a stated assumption
    assert (s.method, s.steps, s.shift, s.guidance.scale, s.guidance.mode) == ("euler", 25, 0.15, 1.25, "constant")
    assert "7b4662d" in p.source and "fid_abaltion_v3.sh" in p.source and "constant" in p.assumption
    demo = build_sampler("svg-demo")
    assert (demo.guidance.scale, demo.guidance.mode) == (4.0, "constant") and "sample_svg.py" in PROTOCOLS["svg-demo"].source
    for name, mode in (("svg-paper-cfg-star", "cfg-star"), ("svg-paper-cfg-linear", "linear"),
                       ("svg-paper-cfg-interval", "interval"), ("svg-paper-cfg-late", "late")):
        alt = build_sampler(name)
        assert (alt.guidance.mode, alt.guidance.scale, alt.shift, alt.steps) == (mode, 1.25, 0.15, 25)
    assert build_sampler("svg-paper-nocfg").guidance.scale == 1.0
    sit = build_sampler("sit-paper")
    assert (sit.method, sit.atol, sit.rtol, sit.shift) == ("dopri5", 1e-6, 1e-3, 1.0)
    assert sit.guidance.guided_channels == 3 and sit.guidance.scale == 1.5
    heun = build_sampler("sit-paper-heun")
    assert heun.nfe == 250 and heun.guidance.guided_channels == 3
    dit = build_sampler("dit-paper")
    assert (dit.method, dit.steps, dit.guidance.scale, dit.guidance.guided_channels) == ("ddpm", 250, 1.5, 3)
    few = build_sampler("svg-paper-cfg", steps=5, scale=2.0, autocast=torch.bfloat16)
    assert (few.steps, few.guidance.scale, few.autocast, few.shift) == (5, 2.0, torch.bfloat16, 0.15)
    assert all(p.source for p in PROTOCOLS.values())
    with pytest.raises(KeyError, match="known"):
        get_protocol("svg-paper")
    with pytest.raises(ValueError, match="unknown overrides"):
        build_sampler("svg-paper-cfg", stepz=5)
