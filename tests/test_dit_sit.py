"""DiT sampled by its own DDPM process and SiT by its adaptive ODE, each against the official code restated.

The DiT reference is written from facebookresearch/DiT `diffusion/gaussian_diffusion.py`, `respace.py`,
`__init__.py` (`create_diffusion`) and `models.py` (`forward_with_cfg`): numpy float64 schedules, the [z, z]
batch with the cond and null labels, `p_sample` with learned-range variance. The SiT reference is
willisma/SiT `transport/integrators.py` `ode.sample`: torchdiffeq `odeint` over linspace(0, 1, num_steps)
with `forward_with_cfg` as the drift on [z, z].
"""

import math

import numpy as np
import pytest
import torch

from svgbench.diffusion.dit import DiTSampler, space_timesteps
from svgbench.diffusion.models import build_model
from svgbench.diffusion.protocols import build_sampler, check_kind
from svgbench.diffusion.samplers import AdaptiveODESampler, Guidance, ODESampler, noise_for_indices

pytestmark = pytest.mark.usefixtures("one_thread")
NULL = 10


def random_model(seed=0, kind="dit"):
    m = build_model("tiny", in_channels=4, input_size=8, patch_size=2, num_classes=10, qk_norm=False, learn_sigma=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    m.diffusion_kind = kind
    return m.eval()


# ---------------------------------------------------------------------------------------------
# DiT, restated
# ---------------------------------------------------------------------------------------------

def dit_reference(model, z, y, cfg_scale, num_sampling_steps, step_noise):
    """DiT's sample_ddp.py loop, restated. step_noise(k): the 2B x C x H x W noise p_sample draws at loop k."""
    # create_diffusion(str(num_sampling_steps)): linear betas over 1000 steps, respaced
    betas = np.linspace(0.0001, 0.02, 1000, dtype=np.float64)
    frac_stride = (1000 - 1) / (num_sampling_steps - 1)
    cur, taken = 0.0, []
    for _ in range(num_sampling_steps):
        taken.append(round(cur))
        cur += frac_stride
    use = set(taken)
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    last, new_betas, tmap = 1.0, [], []
    for i, ac in enumerate(alphas_cumprod):
        if i in use:
            new_betas.append(1 - ac / last)
            last = ac
            tmap.append(i)
    betas = np.array(new_betas, dtype=np.float64)
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
    posterior_log_variance_clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
    coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
    coef2 = (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)
    sqrt_recip, sqrt_recipm1 = np.sqrt(1.0 / ac), np.sqrt(1.0 / ac - 1)

    def extract(arr, t, shape):
        res = torch.from_numpy(arr)[t].float()
        return res.view(-1, *([1] * (len(shape) - 1))).expand(shape)

    n = z.shape[0]
    x = torch.cat([z, z]) if cfg_scale > 1 else z
    yy = torch.cat([y, torch.full_like(y, NULL)]) if cfg_scale > 1 else y

    def forward_with_cfg(x, t):
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = model(combined, t, yy, learned_sigma=True)
        eps, rest = model_out[:, :3], model_out[:, 3:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)

    for k, i in enumerate(list(range(num_sampling_steps))[::-1]):
        t = torch.tensor([i] * x.shape[0])
        mt = torch.tensor(tmap)[t]  # _WrappedModel: the original step index, not rescaled
        out = forward_with_cfg(x, mt) if cfg_scale > 1 else model(x, mt, yy, learned_sigma=True)
        C = x.shape[1]
        model_output, model_var_values = torch.split(out, C, dim=1)
        min_log = extract(posterior_log_variance_clipped, t, x.shape)
        max_log = extract(np.log(betas), t, x.shape)
        frac = (model_var_values + 1) / 2
        model_log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = extract(sqrt_recip, t, x.shape) * x - extract(sqrt_recipm1, t, x.shape) * model_output
        model_mean = extract(coef1, t, x.shape) * pred_xstart + extract(coef2, t, x.shape) * x
        noise = step_noise(k)[: x.shape[0]]
        nonzero_mask = (t != 0).float().view(-1, 1, 1, 1)
        x = model_mean + nonzero_mask * torch.exp(0.5 * model_log_variance) * noise
    return x[:n]


def test_space_timesteps_is_dits():
    assert space_timesteps(1000, 250)[:4] == [0, 4, 8, 12] and space_timesteps(1000, 250)[-1] == 999
    assert len(space_timesteps(1000, 250)) == 250 and space_timesteps(1000, 1000) == list(range(1000))


@pytest.mark.parametrize("scale", [1.0, 1.5, 4.0])
def test_dit_ddpm_matches_dits_gaussian_diffusion(scale):
    """svgbench's DiT sampler against DiT's loop restated, 25 respaced steps, on a random learn_sigma model.
    Measured max |difference| of the samples: below 1e-5 (float32 rounding of the batched forwards)."""
    model = random_model()
    b, steps = 3, 25
    z, y = noise_for_indices(range(b), (4, 8, 8), seed=1), torch.tensor([0, 4, 9])
    noises = [torch.randn(2 * b, 4, 8, 8, generator=torch.Generator().manual_seed(100 + k)) for k in range(steps)]
    sampler = build_sampler("dit-paper", steps=steps, scale=scale)
    with torch.no_grad():
        ours = sampler(model, z, y, step_noise=lambda k: noises[k][:b])
        ref = dit_reference(model, z, y, scale, steps, lambda k: noises[k])
    err = (ours - ref).abs().max().item()
    print(f"dit ddpm scale {scale}: max |ours - reference| = {err:.2e}")
    assert err < 1e-5, err
    assert ours.abs().max() > 0.5 and torch.isfinite(ours).all()
    if scale != 1.0:  # the 4th channel is the conditional model's, guidance reaches only 3
        with torch.no_grad():
            full = DiTSampler(steps, Guidance(scale))(model, z, y, step_noise=lambda k: noises[k][:b])
        assert (full - ours)[:, :3].abs().max() > 1e-4 and (full - ours)[:, 3].abs().max() > 1e-4


def test_dit_sampler_refuses_a_flow_model_and_flow_samplers_refuse_dit():
    flow, dit = random_model(kind="sit"), random_model(kind="dit")
    z, y = torch.zeros(1, 4, 8, 8), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="kind=dit"):
        build_sampler("dit-paper", steps=2)(flow, z, y)
    with pytest.raises(ValueError, match="dit-paper"):
        ODESampler("euler", 2)(dit, z, y)
    with pytest.raises(ValueError, match="dit-paper"):
        build_sampler("sit-paper")(dit, z, y)
    with pytest.raises(ValueError, match="dit-paper"):
        check_kind("sit-paper", "dit")
    with pytest.raises(ValueError, match="flow protocol"):
        check_kind("dit-paper", "sit")
    with pytest.raises(ValueError, match="DDPM"):
        build_sampler("dit-paper", method="euler")


class _Identity:
    """A decoder that shows the latent's first three channels: enough for sample_point_batches."""

    def decode(self, z):
        return z[:, :3].clamp(-1, 1)


class _Stats:
    def denormalize(self, z):
        return z


def test_dit_samples_do_not_depend_on_the_batch():
    """Step noise is drawn per sample index (generate.py): sample 2 is the same alone or in a batch of 3."""
    from svgbench.diffusion.generate import sample_point_batches

    model = random_model()
    s = build_sampler("dit-paper", steps=6)
    run = lambda idx, bs: torch.cat([x for _, _, x, _, _ in sample_point_batches(  # noqa: E731
        model, _Stats(), _Identity(), idx, 10, {0: s}, seed=5, batch_size=bs, device="cpu")])
    together, alone = run([0, 1, 2], 3), run([2], 1)
    assert torch.equal(together[2], alone[0])


# ---------------------------------------------------------------------------------------------
# SiT's dopri5, restated
# ---------------------------------------------------------------------------------------------

def sit_reference(model, z, y, cfg_scale, num_steps=250, atol=1e-6, rtol=1e-3):
    """SiT's sample_ddp.py ODE path: odeint(dopri5) over linspace(0, 1, num_steps), forward_with_cfg drift."""
    from torchdiffeq import odeint

    n = z.shape[0]
    using_cfg = cfg_scale > 1.0
    if using_cfg:
        z = torch.cat([z, z], 0)
        y = torch.cat([y, torch.tensor([NULL] * n)], 0)

    def model_fn(x, t):
        if not using_cfg:
            return model(x, t, y)
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = model(combined, t, y)
        eps, rest = model_out[:, :3], model_out[:, 3:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)

    nfe = [0]

    def _fn(t, x):
        nfe[0] += 1
        t = torch.ones(x.size(0)) * t
        return model_fn(x, t)

    t = torch.linspace(0, 1, num_steps)
    samples = odeint(_fn, z, t, method="dopri5", atol=atol, rtol=rtol)
    return samples[-1][:n], nfe[0]


@pytest.mark.parametrize("name,scale", [("sit-paper", 1.5), ("sit-paper-nocfg", 1.0)])
def test_sit_dopri5_matches_sits_ode(name, scale):
    """Measured: identical samples (max |difference| 0) and the same number of function evaluations."""
    model = random_model(kind="sit")
    z, y = noise_for_indices(range(3), (4, 8, 8), seed=2), torch.tensor([1, 5, 8])
    s = build_sampler(name)
    assert isinstance(s, AdaptiveODESampler) and (s.atol, s.rtol) == (1e-6, 1e-3)
    with torch.no_grad():
        ours = s(model, z, y)
        ref, nfe = sit_reference(model, z, y, scale)
    err = (ours - ref).abs().max().item()
    print(f"{name}: max |ours - reference| = {err:.2e}, nfe {s.nfe} (reference {nfe})")
    assert err < 1e-6, err
    assert s.nfe == nfe and nfe > 6 and s.forward_batches() == nfe * (2 if scale != 1 else 1)
    assert ours.abs().max() > 0.5
    with torch.no_grad():  # the fixed-step alternative is a different integrator of the same ODE: close, not equal
        heun = build_sampler(name, method="heun", steps=20)(model, z, y)
    assert 0 < (heun - ours).abs().max().item() < 0.05


def test_progress_of_dit_and_dopri5_batches_sums_to_the_images():
    """generate.py reports each batch's images once, whatever the evaluations an adaptive solver takes."""
    from svgbench.diffusion.generate import sample_point_batches

    for kind, sampler in (("sit", build_sampler("sit-paper-nocfg")), ("dit", build_sampler("dit-paper", steps=4))):
        model, done = random_model(kind=kind), []
        list(sample_point_batches(model, _Stats(), _Identity(), range(5), 10, {0: sampler}, seed=0, batch_size=3,
                                  device="cpu", progress=lambda p, k: done.append(k)))
        assert sum(done) == pytest.approx(5) and min(done) >= 0
    assert sampler.forward_batches() == 8  # DiT: 4 steps, cond + uncond each
