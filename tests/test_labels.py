"""Class labels of generated samples: balanced (i mod C, the default) or random (uniform, as DiT's and SiT's
sample_ddp.py draw them), per sample index, so the set does not depend on batch size or processes; the sampling
path conditions on the labels the config names, and the record says which."""

import pytest
import torch

from svgbench.diffusion.generate import sample_batches, sample_labels
from svgbench.diffusion.task_sampler import make_sampler, precision_fields
from svgbench.tasks.generation import GenerationConfig


def test_balanced_and_random_labels():
    assert sample_labels(range(7), 3, 0).tolist() == [0, 1, 2, 0, 1, 2, 0]
    full = sample_labels(range(3000), 10, 5, "random")
    assert sample_labels(range(1000, 1500), 10, 5, "random").tolist() == full[1000:1500].tolist()  # any split
    assert sample_labels([2999, 4], 10, 5, "random").tolist() == [full[2999], full[4]]
    assert not torch.equal(full, sample_labels(range(3000), 10, 6, "random"))  # the seed decides
    counts = torch.bincount(full, minlength=10).double()
    chi2 = float(((counts - 300) ** 2 / 300).sum())
    assert set(full.tolist()) == set(range(10)) and chi2 < 27.9  # uniform: chi-square, 9 dof, p = 0.001
    assert counts.std() > 0  # not balanced
    with pytest.raises(ValueError, match="labels 'sorted'"):
        sample_labels(range(3), 3, 0, "sorted")
    with pytest.raises(ValueError, match="labels 'sorted'"):
        make_sampler(GenerationConfig(labels="sorted"))


class _Recorder(torch.nn.Module):
    in_channels, input_size, num_classes = 2, 2, 5

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, y):
        self.seen.append(y.clone())
        return torch.zeros_like(x)


class _Identity:
    def denormalize(self, z):
        return z

    def decode(self, z):
        return z[:, :1].expand(-1, 3, -1, -1)


def test_sampling_conditions_on_the_configured_labels():
    for policy in ("balanced", "random"):
        model = _Recorder().eval()
        cfg = GenerationConfig(sample_steps=1, labels=policy)
        sampler = make_sampler(cfg)
        list(sample_batches(model, _Identity(), _Identity(), range(12), 5, sampler, seed=3, batch_size=5,
                            device="cpu"))
        assert torch.cat(model.seen).tolist() == sample_labels(range(12), 5, 3, policy).tolist()
        assert precision_fields(cfg, sampler)["labels"] == policy
