"""Checkpoints in each real format, written here with random weights, loaded through the public path.

Formats: timm state dicts (.pth / .safetensors), official Meta DINOv2/DINOv3 `.pth` key layouts,
diffusers AutoencoderKL folders, official SVG Lightning `.ckpt` (LDM decoder names, torchvision
`extra_vit.*`, `mask_token`, Meta `encoder.*`), and svgbench's own SVG safetensors.
"""

import re

import pytest
import torch
from safetensors.torch import save_file

from svgbench.checkpoints import CheckpointError, load_state_dict
from svgbench.encoders import create_encoder
from svgbench.encoders.svg import ENCODER_CONFIGS as SVG_CONFIGS
from svgbench.encoders.svg import SVGConfig, build_decoder, ldm_decoder_to_diffusers

X64 = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ----------------------------------------------------------------------------- DINO

def meta_rope_periods(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """DINOv3's RopePositionEmbedding periods (base ** (2 i / (head_dim / 2)), i < head_dim / 4), in bfloat16 as
    the released files keep them."""
    return (base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))).to(torch.bfloat16)


def meta_dinov3_state(timm_state: dict, num_heads: int, rope_base: float = 100.0) -> dict:
    """timm's DINOv3 names -> the official Meta `dinov3` repository's names (and its extra buffers)."""
    out = {}
    dim = timm_state["cls_token"].shape[-1]
    for k, v in timm_state.items():
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        k = k.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2").replace("mlp.fc2", "mlp.w3")
        out[k] = v
    out["mask_token"] = torch.zeros(1, dim)
    out["rope_embed.periods"] = meta_rope_periods(dim // num_heads, rope_base)
    for b in {m[1] for k in out if (m := re.match(r"blocks\.(\d+)\.", k))}:
        out[f"blocks.{b}.attn.qkv.bias"] = torch.zeros(3 * dim)
        out[f"blocks.{b}.attn.qkv.bias_mask"] = torch.ones(3 * dim)
    return out


def test_dinov3_official_meta_pth(tmp_path):
    ref = create_encoder("dinov3-vits16plus", weights="random", depth=2)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    path = tmp_path / "dinov3_vits16plus_pretrain_lvd1689m-test.pth"
    meta = meta_dinov3_state(ref.model.state_dict(), num_heads=6)
    assert "storage_tokens" in meta and "blocks.0.ls1.gamma" in meta and "blocks.1.mlp.w3.weight" in meta
    torch.save(meta, path)
    loaded = create_encoder("dinov3-vits16plus", weights=str(path), depth=2)
    assert loaded.spec.weights.startswith("file:")
    z_ref, z = ref.encode(x), loaded.encode(x)
    assert z.shape == (1, 384, 16, 16)
    torch.testing.assert_close(z, z_ref)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_dinov2_timm_state_dict(tmp_path, suffix):
    ref = create_encoder("dinov2-vits14", weights="random", depth=2)
    path = tmp_path / f"vit_small_patch14_dinov2{suffix}"
    sd = ref.model.state_dict()
    torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path))
    loaded = create_encoder("dinov2-vits14", weights=str(path), depth=2)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    torch.testing.assert_close(loaded.features(x)["patch"], ref.features(x)["patch"])
    assert loaded.features(x)["patch"].shape == (1, 256, 384)


def test_dinov2_official_meta_pth(tmp_path):
    ref = create_encoder("dinov2-vits14", weights="random", depth=2)
    sd = dict(ref.model.state_dict())
    sd["mask_token"] = torch.zeros(1, 384)  # the Meta file's extra entry
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(sd, path)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    torch.testing.assert_close(create_encoder("dinov2-vits14", weights=str(path), depth=2).encode(x), ref.encode(x))


def test_dino_wrong_shape_and_missing_key_named(tmp_path):
    ref = create_encoder("dinov2-vits14", weights="random", depth=2)
    sd = dict(ref.model.state_dict())
    sd["blocks.1.attn.qkv.weight"] = torch.zeros(10, 384)
    del sd["blocks.0.norm1.weight"]
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        create_encoder("dinov2-vits14", weights=str(path), depth=2)
    assert "blocks.1.attn.qkv.weight" in str(e.value) and "blocks.0.norm1.weight" in str(e.value)
    assert str(path) in str(e.value)


# ----------------------------------------------------------------------------- SD-VAE

def test_sdvae_diffusers_folder(tmp_path):
    ref = create_encoder("tiny-vae", weights="random")
    ref.vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").exists()
    for name in ("sd-vae-ft-ema", "tiny-vae"):
        enc = create_encoder(name, weights=str(tmp_path / "vae"), resolution=64)
        z = enc.encode(X64)
        assert z.shape == (2, 4, 8, 8)
        torch.testing.assert_close(z, ref.encode(X64))
        torch.testing.assert_close(enc.decode(z), ref.decode(z))


def test_sdvae_scaling_factor_applied(tmp_path):
    ref = create_encoder("tiny-vae", weights="random")
    ref.vae.register_to_config(scaling_factor=0.18215)
    ref.vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    enc = create_encoder("sd-vae-ft-mse", weights=str(tmp_path / "vae"), resolution=64)
    raw = ref.vae.encode(X64).latent_dist.mean
    torch.testing.assert_close(enc.encode(X64), raw * 0.18215)
    # (z * s) / s differs from z in the last bits: compare with a float tolerance
    torch.testing.assert_close(enc.decode(enc.encode(X64)), ref.vae.decode(raw).sample.clamp(-1, 1),
                               atol=1e-4, rtol=1e-4)


def test_sdvae_folder_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such local folder"):
        create_encoder("sd-vae-ft-ema", weights=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        create_encoder("sd-vae-ft-ema", weights=str(tmp_path / "empty"))
    ref = create_encoder("tiny-vae", weights="random")
    ref.vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    f = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        create_encoder("sd-vae-ft-ema", weights=str(tmp_path / "vae"))


# ----------------------------------------------------------------------------- SVG: official Lightning layout

def ldm_decoder_layout(cfg: SVGConfig, z_channels: int) -> dict[str, tuple]:
    """Key -> shape of an LDM `Decoder` (taming/ldm `diffusionmodules/model.py`) for `cfg`."""
    ch, mult, nrb = cfg.decoder_ch, cfg.decoder_ch_mult, cfg.decoder_res_blocks
    n = len(mult)
    shapes = {}

    def norm(p, c):
        shapes[f"{p}.weight"] = (c,)
        shapes[f"{p}.bias"] = (c,)

    def conv(p, o, i, k):
        shapes[f"{p}.weight"] = (o, i, k, k)
        shapes[f"{p}.bias"] = (o,)

    def resblock(p, cin, cout):
        norm(f"{p}.norm1", cin)
        conv(f"{p}.conv1", cout, cin, 3)
        norm(f"{p}.norm2", cout)
        conv(f"{p}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{p}.nin_shortcut", cout, cin, 1)

    def attn(p, c):
        norm(f"{p}.norm", c)
        for q in ("q", "k", "v", "proj_out"):
            conv(f"{p}.{q}", c, c, 1)

    block_in = ch * mult[-1]
    res = cfg.resolution // 2 ** (n - 1)
    conv("conv_in", block_in, z_channels, 3)
    resblock("mid.block_1", block_in, block_in)
    attn("mid.attn_1", block_in)
    resblock("mid.block_2", block_in, block_in)
    for level in reversed(range(n)):
        block_out = ch * mult[level]
        for j in range(nrb + 1):
            resblock(f"up.{level}.block.{j}", block_in, block_out)
            block_in = block_out
            if res in cfg.decoder_attn_resolutions:
                attn(f"up.{level}.attn.{j}", block_in)
        if level != 0:
            conv(f"up.{level}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("norm_out", block_in)
    conv("conv_out", 3, block_in, 3)
    return shapes


def test_published_svg_decoder_layout_converts_exactly():
    """The published config's LDM decoder keys and shapes map 1:1 onto svgbench's decoder."""
    cfg = SVG_CONFIGS["svg-dinov3-vits16plus"][0]
    layout = ldm_decoder_layout(cfg, 392)
    assert "up.4.attn.2.q.weight" in layout and "up.3.attn.0.q.weight" not in layout  # attention at 16 px only
    ldm = {k: torch.zeros(s) for k, s in layout.items()}
    converted = ldm_decoder_to_diffusers(ldm, len(cfg.decoder_ch_mult))
    own = build_decoder(cfg, 392).state_dict()
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)


def official_svg_checkpoint(model, cfg: SVGConfig) -> dict:
    """An SVG Lightning `.ckpt` dict with the official key layout, holding `model`'s weights."""
    own = model.state_dict()
    layout = ldm_decoder_layout(cfg, model.spec.latent_channels)
    n = len(cfg.decoder_ch_mult)
    sd = {}
    for ldm_key in layout:
        (diff_key, v), = ldm_decoder_to_diffusers({ldm_key: torch.zeros(1)}, n).items()
        t = own[f"decoder.{diff_key}"]
        sd[f"decoder.{ldm_key}"] = t.reshape(layout[ldm_key]).clone()
    for k, v in own.items():
        if k.startswith("extra_vit.") or k == "mask_token":
            sd[k] = v.clone()
        if k.startswith("encoder."):
            sd[k] = v.clone()  # the frozen encoder as the Lightning module holds it
    c = model.spec.latent_channels
    sd["norm_vit.weight"], sd["norm_vit.bias"] = torch.ones(c), torch.zeros(c)
    sd["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    sd["loss.logvar"] = torch.zeros(())
    return {"state_dict": sd, "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0"}


def test_svg_official_lightning_ckpt(tmp_path):
    ref = create_encoder("tiny-svg", weights="random")
    cfg = ref.cfg
    ckpt = official_svg_checkpoint(ref, cfg)
    assert "decoder.up.0.block.0.conv1.weight" in ckpt["state_dict"] and "extra_vit.heads.2.weight" in ckpt["state_dict"]
    assert "extra_vit.encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in ckpt["state_dict"]
    path = tmp_path / "svg_autoencoder.ckpt"
    torch.save(ckpt, path)
    loaded = create_encoder("tiny-svg", weights=str(path))
    z = loaded.encode(X64)
    assert z.shape == (2, 136, 8, 8)
    torch.testing.assert_close(z, ref.encode(X64))
    torch.testing.assert_close(loaded.decode(z), ref.decode(z))
    # a value lands where the LDM layout puts it: LDM up.0 is the full-resolution level
    torch.testing.assert_close(loaded.decoder.up_blocks[-1].resnets[0].conv1.weight,
                               ckpt["state_dict"]["decoder.up.0.block.0.conv1.weight"])


def test_svg_ckpt_without_encoder_needs_dino_weights(tmp_path, monkeypatch):
    import svgbench.encoders.dino as dino_mod

    monkeypatch.setattr(dino_mod, "EMBEDDED_WEIGHTS", tmp_path / "no-embedded-weights")
    ref = create_encoder("tiny-svg", weights="random")
    sd = official_svg_checkpoint(ref, ref.cfg)["state_dict"]
    sd = {k: v for k, v in sd.items() if not k.startswith("encoder.")}
    path = tmp_path / "no_encoder.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match="no DINO weights"):
        create_encoder("tiny-svg", weights=str(path))
    dino_file = tmp_path / "dino.safetensors"
    save_file(ref.encoder.state_dict(), str(dino_file))
    loaded = create_encoder("tiny-svg", weights=str(path), dino_weights=str(dino_file))
    torch.testing.assert_close(loaded.encode(X64), ref.encode(X64))


def test_svg_ckpt_wrong_shape_names_key(tmp_path):
    ref = create_encoder("tiny-svg", weights="random")
    ckpt = official_svg_checkpoint(ref, ref.cfg)
    ckpt["state_dict"]["extra_vit.heads.2.weight"] = torch.zeros(4, 128)
    del ckpt["state_dict"]["mask_token"]
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as e:
        create_encoder("tiny-svg", weights=str(path))
    assert "extra_vit.heads.2.weight" in str(e.value) and "mask_token" in str(e.value)


def test_svg_own_safetensors_roundtrip_and_arch_mismatch(tmp_path):
    ref = create_encoder("tiny-svg", weights="random")
    path = tmp_path / "tiny-svg.safetensors"
    ref.save(path)
    loaded = create_encoder("tiny-svg", weights=str(path))
    torch.testing.assert_close(loaded.decode(loaded.encode(X64)), ref.decode(ref.encode(X64)))
    with pytest.raises(CheckpointError, match="residual_channels: file 8 vs requested 4"):
        create_encoder("tiny-svg", weights=str(path), residual_channels=4)


def test_svg_residual_masking_and_alignment():
    enc = create_encoder("tiny-svg", weights="random")
    lat = enc.latent(X64)
    res = lat[:, 128:].flatten(2)
    dino = lat[:, :128].flatten(2)
    # aligned residual: same scalar mean / mean per-channel std as the DINO tokens, per sample
    torch.testing.assert_close(res.mean(dim=(1, 2)), dino.mean(dim=(1, 2)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res.std(dim=2).mean(1), dino.std(dim=2).mean(1), atol=1e-4, rtol=1e-3)
    # 'sample' alignment: a latent does not depend on its batch-mates
    torch.testing.assert_close(enc.encode(X64[:1]), enc.encode(X64)[:1], atol=1e-5, rtol=1e-5)
    # masking with p=1 replaces every residual map by the (aligned) mask token: constant over tokens
    masked = enc.latent(X64, mask_prob=1.0)[:, 128:].flatten(2)
    assert torch.allclose(masked, masked[..., :1].expand_as(masked), atol=1e-5)


def test_batch_alignment_as_published():
    from svgbench.encoders.svg import align_distribution

    h, r = torch.randn(4, 16, 10) * 3 + 1, torch.randn(4, 2, 10) * 0.1 - 5
    out = align_distribution(h, r, "batch")
    torch.testing.assert_close(out.mean(dim=(0, 2)).mean(), h.mean(dim=(0, 2)).mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.std(dim=(0, 2)).mean(), h.std(dim=(0, 2)).mean(), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- bad files

def test_missing_truncated_and_pickled_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_encoder("tiny-svg", weights=str(tmp_path / "nope.ckpt"))
    ref = create_encoder("tiny-svg", weights="random")
    path = tmp_path / "t.ckpt"
    torch.save(official_svg_checkpoint(ref, ref.cfg), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        create_encoder("tiny-svg", weights=str(path))
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(empty)
    evil = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"cfg": Opaque()}}, evil)
    with pytest.raises(CheckpointError, match="will not unpickle"):
        load_state_dict(evil)


class Opaque:
    pass


# ----------------------------------------------------------------------------- DINOv3 q/v biases, decoder-only SVG

def meta_state_with_biases(seed: int = 0, k_part: float = 0.0) -> tuple[dict, dict]:
    """(timm-layout state of a 2-block DINOv3 with non-zero q/v biases, the same weights in Meta layout)."""
    from svgbench.encoders.dino import ENCODER_CONFIGS, build_timm_dino

    ref = build_timm_dino(ENCODER_CONFIGS["dinov3-vits16plus"], 64, depth=2, qkv_bias=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.endswith(("q_bias", "v_bias")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            if "gamma_" in n:  # layer scale 1e-5 at init would hide what the attention branch does
                p.fill_(1.0)
    meta = meta_dinov3_state({k: v for k, v in ref.state_dict().items() if not k.endswith(("q_bias", "v_bias"))},
                             num_heads=6)
    for b in range(2):
        q, v = ref.state_dict()[f"blocks.{b}.attn.q_bias"], ref.state_dict()[f"blocks.{b}.attn.v_bias"]
        meta[f"blocks.{b}.attn.qkv.bias"] = torch.cat([q, torch.full_like(q, k_part), v])
        mask = torch.ones(3 * 384)
        mask[384:768] = 0  # DINOv3's LinearKMaskedBias: the k third is masked out
        meta[f"blocks.{b}.attn.qkv.bias_mask"] = mask
    return ref, meta


def test_dinov3_nonzero_qv_biases_are_loaded_not_dropped(tmp_path):
    from svgbench.encoders.dino import ENCODER_CONFIGS, build_timm_dino, load_dino_weights

    ref, meta = meta_state_with_biases(k_part=0.7)  # masked k bias: ignored, as DINOv3 does
    path = tmp_path / "dinov3_qkvb.pth"
    torch.save(meta, path)
    enc = create_encoder("dinov3-vits16plus", weights=str(path), depth=2, resolution=64)
    assert enc.model.blocks[1].attn.q_bias.abs().sum() > 0
    x = X64[:1]
    with torch.no_grad():
        want = ref.forward_features(((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                                    / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))[:, ref.num_prefix_tokens:]
    torch.testing.assert_close(enc.features(x)["patch"], want)
    # the same weights without the biases give other latents: the biases matter, and were not dropped
    no_bias = {k: v for k, v in meta.items() if "qkv.bias" not in k}
    torch.save(no_bias, tmp_path / "no_bias.pth")
    other = create_encoder("dinov3-vits16plus", weights=str(tmp_path / "no_bias.pth"), depth=2, resolution=64)
    assert (other.encode(x) - enc.encode(x)).abs().max() > 1e-3
    # a model without q/v biases refuses them, naming the key
    plain = build_timm_dino(ENCODER_CONFIGS["dinov3-vits16plus"], 64, depth=2)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.bias holds non-zero q/v biases"):
        load_dino_weights(plain, path)
    # an unmasked non-zero k bias is not DINOv3's layout
    bad = {k: v for k, v in meta.items() if not k.endswith("bias_mask")}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="non-zero k part"):
        create_encoder("dinov3-vits16plus", weights=str(tmp_path / "bad.pth"), depth=2, resolution=64)


def small_dinov3_svg_config() -> SVGConfig:
    return SVGConfig(dino_overrides={"depth": 2}, resolution=64, residual_layers=1, residual_heads=2,
                     residual_width=32, residual_mlp=64, decoder_ch=8, decoder_res_blocks=1,
                     decoder_attn_resolutions=(), decoder_groups=4)


def test_svg_ckpt_with_dinov3_qv_biases(tmp_path):
    from svgbench.encoders.svg import create_svg

    cfg = small_dinov3_svg_config()
    ref_dino, meta = meta_state_with_biases(seed=1)
    base = create_svg("svg-dinov3-vits16plus", weights="random", config=cfg)
    ckpt = official_svg_checkpoint(base, cfg)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("encoder.")}
    ckpt["state_dict"].update({f"encoder.{k}": v for k, v in meta.items()})
    torch.save(ckpt, tmp_path / "svg.ckpt")
    loaded = create_svg("svg-dinov3-vits16plus", weights=str(tmp_path / "svg.ckpt"), config=cfg)
    torch.testing.assert_close(loaded.encoder.blocks[0].attn.v_bias, ref_dino.blocks[0].attn.v_bias)
    z = loaded.encode(X64)
    assert z.shape == (2, 392, 4, 4)
    with torch.no_grad():
        want = ref_dino.forward_features(((X64 + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                                         / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))[:, 5:]
    torch.testing.assert_close(z[:, :384].flatten(2).transpose(1, 2), want)
    assert loaded.spec.extra["batch_dependent"] is True  # align="batch", as published


def test_svg_decoder_only_checkpoint_decodes_and_refuses_to_encode(tmp_path, monkeypatch):
    import svgbench.encoders.dino as dino_mod

    monkeypatch.setattr(dino_mod, "EMBEDDED_WEIGHTS", tmp_path / "no-embedded-weights")
    ref = create_encoder("tiny-svg", weights="random")
    assert ref.spec.extra["batch_dependent"] is False  # tiny-svg aligns per sample
    sd = official_svg_checkpoint(ref, ref.cfg)["state_dict"]
    path = tmp_path / "decoder_only.ckpt"
    torch.save({"state_dict": {k: v for k, v in sd.items() if k.startswith("decoder.")}}, path)
    dec = create_encoder("tiny-svg", weights=str(path))
    z = ref.encode(X64)
    torch.testing.assert_close(dec.decode(z), ref.decode(z))
    with pytest.raises(CheckpointError, match=r"can decode but not encode.*no residual encoder.*dino_weights"):
        dec.encode(X64)
    assert "decoder-only" in dec.spec.extra["decode_only"]
    assert dec.weights_hash() == create_encoder("tiny-svg", weights=str(path)).weights_hash()  # deterministic
    dino_file = tmp_path / "dino.safetensors"
    save_file(ref.encoder.state_dict(), str(dino_file))
    with_dino = create_encoder("tiny-svg", weights=str(path), dino_weights=str(dino_file))
    with pytest.raises(CheckpointError, match="no residual encoder") as e:
        with_dino.features(X64)
    assert "dino_weights" not in str(e.value)
