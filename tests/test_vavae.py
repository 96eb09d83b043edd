"""VA-VAE (hustvl/LightningDiT) / LDM-layout KL checkpoints converted to diffusers AutoencoderKL (`ldm:FILE`).

The reference below is an independent implementation of the official LDM autoencoder (LightningDiT's
tokenizer/autoencoder.py, itself the CompVis ldm/modules/diffusionmodules/model.py): ResnetBlock, AttnBlock with
1 x 1 convolution projections, Downsample with the asymmetric (0, 1, 0, 1) pad, nearest Upsample, the decoder's
levels numbered from the highest resolution. It is shrunk (ch 32, ch_mult (1, 2, 2), 64 px, z 8) but keeps what the
f16d32 release has: attention at the 16-cell level in both encoder and decoder, 2 blocks a level, double_z, the
quant convolutions. Random weights, saved as the release is ({"state_dict": ...} with the training-only tensors
beside the model's), loaded through svgbench and compared output for output.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svgbench.checkpoints import CheckpointError
from svgbench.encoders import create_encoder, encoder_spec

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("diffusers")

CH, CH_MULT, BLOCKS, ATTN_RES, RES, Z = 32, (1, 2, 2), 2, (16,), 64, 8


def gn(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class Res(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = gn(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2).transpose(1, 2)  # b, hw, c
        k = self.k(h).flatten(2)  # b, c, hw
        v = self.v(h).flatten(2)
        w = torch.softmax(q @ k / c ** 0.5, dim=-1)  # b, hw_q, hw_k
        out = (v @ w.transpose(1, 2)).view(b, c, hh, ww)
        return x + self.proj_out(out)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(c):
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = Res(c, c), Attn(c), Res(c, c)
    return m


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(3, CH, 3, padding=1)
        self.down, res, cin = nn.ModuleList(), RES, CH
        for i, mult in enumerate(CH_MULT):
            lvl = nn.Module()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(BLOCKS):
                lvl.block.append(Res(cin, CH * mult))
                cin = CH * mult
                if res in ATTN_RES:
                    lvl.attn.append(Attn(cin))
            if i < len(CH_MULT) - 1:
                lvl.downsample, res = Down(cin), res // 2
            self.down.append(lvl)
        self.mid, self.norm_out, self.conv_out = _mid(cin), gn(cin), nn.Conv2d(cin, 2 * Z, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            h = _blocks(lvl, h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


def _blocks(lvl, h):
    """A level's residual blocks, each followed by its attention where the level has it."""
    for j, blk in enumerate(lvl.block):
        h = blk(h)
        if len(lvl.attn):
            h = lvl.attn[j](h)
    return h


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        cin, res = CH * CH_MULT[-1], RES // 2 ** (len(CH_MULT) - 1)
        self.conv_in, self.mid = nn.Conv2d(Z, cin, 3, padding=1), _mid(cin)
        ups = []
        for i in reversed(range(len(CH_MULT))):
            lvl = nn.Module()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(BLOCKS + 1):
                lvl.block.append(Res(cin, CH * CH_MULT[i]))
                cin = CH * CH_MULT[i]
                if res in ATTN_RES:
                    lvl.attn.append(Attn(cin))
            if i != 0:
                lvl.upsample, res = Up(cin), res * 2
            ups.insert(0, lvl)
        self.up = nn.ModuleList(ups)
        self.norm_out, self.conv_out = gn(cin), nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(len(self.up))):
            lvl = self.up[i]
            h = _blocks(lvl, h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LDMAutoencoderKL(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = Encoder(), Decoder()
        self.quant_conv, self.post_quant_conv = nn.Conv2d(2 * Z, 2 * Z, 1), nn.Conv2d(Z, Z, 1)

    def posterior_mean(self, x):
        return self.quant_conv(self.encoder(x)).chunk(2, dim=1)[0]

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# training-only tensors a VA-VAE Lightning checkpoint holds beside the autoencoder
TRAINING_ONLY = {"loss.logvar": (), "loss.discriminator.main.0.weight": (8, 3, 4, 4),
                 "loss.perceptual_loss.net.slice1.0.weight": (8, 3, 3, 3),
                 "foundation_model.model.cls_token": (1, 1, 16), "linear_proj.weight": (16, Z, 1, 1)}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """-> (reference model, checkpoint path, stats) in the release's layout, random weights."""
    torch.manual_seed(0)
    ref = LDMAutoencoderKL().eval()
    with torch.no_grad():  # every tensor away from its init, so a swapped norm or bias cannot go unseen
        for p in ref.parameters():
            p.add_(0.2 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("vavae")
    state = dict(ref.state_dict())
    state |= {k: torch.randn(s) for k, s in TRAINING_ONLY.items()}
    torch.save({"state_dict": state}, folder / "vavae-test-f4d8.pt")
    stats = {"mean": torch.randn(1, Z, 1, 1), "std": torch.rand(1, Z, 1, 1) + 0.5}
    torch.save(stats, folder / "latents_stats.pt")
    return ref, folder / "vavae-test-f4d8.pt", stats


def test_conversion_matches_the_official_architecture(release, images64):
    ref, path, stats = release
    enc = create_encoder(f"ldm:{path}")
    cfg = enc.spec.extra["ldm_config"]
    assert cfg["block_out_channels"] == [32, 64, 64] and cfg["layers_per_block"] == BLOCKS
    assert cfg["down_block_types"] == ["DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"]
    assert cfg["up_block_types"][0] == "AttnUpDecoderBlock2D" and cfg["latent_channels"] == Z
    with torch.no_grad():
        mean = ref.posterior_mean(images64)
        want = (mean - stats["mean"]) / stats["std"]  # LightningDiT's latent_norm with latent_multiplier 1.0
        got = enc.encode(images64)
        assert got.shape == (2, Z, 16, 16)
        enc_err = (got - want).abs().max().item()
        want_img = ref.decode(want * stats["std"] + stats["mean"]).clamp(-1, 1)
        dec_err = (enc.decode(want) - want_img).abs().max().item()
    print(f"VA-VAE conversion parity: encode max|diff| {enc_err:.2e}, decode max|diff| {dec_err:.2e}")
    assert enc_err < 1e-4 and dec_err < 1e-4, (enc_err, dec_err)
    assert want.abs().max() > 0.5 and want_img.std() > 0.05  # outputs that are not flat
    # every file tensor accounted for: the training-only ones by reason, the rest loaded
    unused = enc.spec.extra["unused_tensors"]
    assert sorted(k for ks in unused.values() for k in ks) == sorted(TRAINING_ONLY)


def test_a_tensor_the_conversion_does_not_know_is_refused_by_its_file_name(release, tmp_path):
    ref, _, _ = release
    state = dict(ref.state_dict())
    torch.save({"state_dict": state | {"encoder.down.0.block.0.temb_proj.weight": torch.zeros(4, 4)}},
               tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys.*encoder\.down\.0\.block\.0\.temb_proj\.weight"):
        create_encoder(f"ldm:{tmp_path / 'extra.pt'}")
    del state["decoder.up.2.attn.1.q.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys.*up_blocks\.0\.attentions\.1\.to_q\.weight"):
        create_encoder(f"ldm:{tmp_path / 'missing.pt'}")
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an LDM KL autoencoder"):
        create_encoder(f"ldm:{tmp_path / 'other.pt'}")


def test_latent_statistics_of_another_checkpoint_are_refused(release, tmp_path):
    ref, _, _ = release
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "m.pt")
    torch.save({"mean": torch.zeros(1, 4, 1, 1), "std": torch.ones(1, 4, 1, 1)}, tmp_path / "latents_stats.pt")
    with pytest.raises(CheckpointError, match="4 channels; the checkpoint's latent has 8"):
        create_encoder(f"ldm:{tmp_path / 'm.pt'}")


def test_zoo_entry_loads_the_release_file_from_a_path_and_names_the_hub_offline(release, images64, monkeypatch):
    _, path, _ = release
    spec = encoder_spec("va-vae-f16d32")
    assert (spec.latent_channels, spec.downsample, spec.family) == (32, 16, "ldm")
    assert "hustvl/vavae-imagenet256-f16d32-dinov2" in spec.extra["zoo"]
    enc = create_encoder("va-vae-f16d32", weights=str(path.parent))
    assert enc.spec.name == "va-vae-f16d32" and enc.encode(images64).shape == (2, Z, 16, 16)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"hustvl/vavae-imagenet256-f16d32-dinov2.*va-vae-f16d32=PATH"):
        create_encoder("va-vae-f16d32")


def test_the_spec_of_an_ldm_name_comes_from_the_tensor_shapes_without_loading(release, monkeypatch):
    """The pre-run check and `svgbench list` describe an ldm: file from its shapes (memory-mapped, no model built):
    the same latent, family and convention as the loaded encoder's spec."""
    import svgbench.encoders.vavae as vavae

    _, path, _ = release
    loaded = create_encoder(f"ldm:{path}").spec
    monkeypatch.setattr(vavae, "load_ldm", lambda *a, **k: pytest.fail("the spec loaded the weights"))
    spec = encoder_spec(f"ldm:{path}")
    assert spec.latent_shape(64) == loaded.latent_shape(64) == (Z, 16, 16)
    assert (spec.family, spec.notes) == (loaded.family, loaded.notes)
    assert spec.extra["ldm_config"] == loaded.extra["ldm_config"]
