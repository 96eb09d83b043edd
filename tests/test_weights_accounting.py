"""Every tensor of a weights file is loaded, compared, named unused, or refused; a decoder-only checkpoint's
encoding cells are n/a with the reason.

Files are written here in the official layouts with random weights (see test_checkpoint_formats.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from svgbench.checkpoints import CheckpointError, check_and_load, rope_base
from svgbench.encoders import create_encoder
from test_checkpoint_formats import X64, meta_dinov3_state, meta_rope_periods, official_svg_checkpoint

# ----------------------------------------------------------------------------- the helper itself


class _WithComputed(torch.nn.Module):
    """A parameter, a persistent buffer, and a buffer the module computes itself (like timm's RoPE periods)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.register_buffer("stat", torch.zeros(2))
        self.register_buffer("periods", meta_rope_periods(16, 100.0).float(), persistent=False)


def test_helper_loads_compares_lists_and_refuses(caplog):
    m = _WithComputed()
    state = {"w": torch.ones(3), "stat": torch.full((2,), 2.0), "periods": meta_rope_periods(16, 100.0),
             "head.weight": torch.zeros(4)}
    with caplog.at_level(logging.DEBUG, logger="svgbench.checkpoints"):
        acc = check_and_load(m, state, source="f.pt", unused={"head.*": "a classifier head the features skip"})
    assert sorted(acc.loaded) == ["stat", "w"] and acc.compared == ["periods"]
    assert acc.provenance()["unused"] == {"a classifier head the features skip": ["head.weight"]}
    assert torch.equal(m.stat, torch.full((2,), 2.0))  # a persistent buffer is loaded
    lines = [r.getMessage() for r in caplog.records if "not read by the official forward" in r.getMessage()]
    assert len(lines) == 1 and "head.weight" in lines[0]  # listed once
    # the same unknown tensor without a reason: refused, named
    with pytest.raises(CheckpointError, match=r"unexpected keys.*\(1\): head\.weight"):
        check_and_load(_WithComputed(), state, source="f.pt")
    # a computed buffer from another configuration: refused with both values
    other = dict(state, periods=meta_rope_periods(16, 10_000.0))
    with pytest.raises(CheckpointError) as e:
        check_and_load(_WithComputed(), other, source="f.pt", unused={"head.*": "x"})
    assert "'periods'" in str(e.value) and "RoPE base 10000" in str(e.value) and "as RoPE base 100:" in str(e.value)


def test_rope_base_recovered_from_bf16_periods():
    for base in (100.0, 1000.0, 10_000.0):
        assert rope_base(meta_rope_periods(64, base)) == pytest.approx(base, rel=2e-2)
    assert rope_base(torch.tensor([0.3, 0.9, 0.1, 0.5])) is None  # not a geometric schedule: values are shown


# ----------------------------------------------------------------------------- DINO files


def _dinov3(tmp_path, **meta_kw):
    ref = create_encoder("dinov3-vits16plus", weights="random", depth=1, resolution=64)
    meta = meta_dinov3_state(ref.model.state_dict(), num_heads=6, **meta_kw)
    return ref, meta


def test_dinov3_file_with_other_rope_periods_refused_in_one_line(tmp_path):
    ref, meta = _dinov3(tmp_path, rope_base=10_000.0)
    path = tmp_path / "dinov3_other_rope.pth"
    torch.save(meta, path)
    with pytest.raises(CheckpointError) as e:
        create_encoder("dinov3-vits16plus", weights=str(path), depth=1, resolution=64)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert "'rope_embed.periods'" in msg and str(path) in msg
    assert "RoPE base 10000" in msg and "as RoPE base 100:" in msg  # the file's base and the model's


def test_dinov3_official_layout_unused_tensors_listed_not_refused(tmp_path):
    ref, meta = _dinov3(tmp_path)
    path = tmp_path / "dinov3.pth"
    torch.save(meta, path)
    enc = create_encoder("dinov3-vits16plus", weights=str(path), depth=1, resolution=64)
    assert enc.spec.extra["unused_tensors"] == {
        "DINO's mask token, read only by masked-image pretraining": ["mask_token"],
        "zero q/v biases: the model without q/v biases computes the same": ["blocks.0.attn.qkv.bias",
                                                                           "blocks.0.attn.qkv.bias_mask"]}
    assert enc.spec.extra["compared_tensors"] == ["rope_embed.periods"]  # bf16 in the file, equal to the model's
    assert "mask_token" in enc.spec.as_dict()["extra"]["unused_tensors"]["DINO's mask token, read only by " \
                                                                         "masked-image pretraining"]
    torch.testing.assert_close(enc.encode(X64[:1]), ref.encode(X64[:1]))


@pytest.mark.parametrize("layout", ["meta", "timm"])
def test_dino_file_with_an_unknown_tensor_refused(tmp_path, layout):
    ref, meta = _dinov3(tmp_path)
    state = meta if layout == "meta" else dict(ref.model.state_dict())
    state["blocks.0.attn.extra_scale"] = torch.ones(384)
    path = tmp_path / f"{layout}.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*blocks\.0\.attn\.extra_scale"):
        create_encoder("dinov3-vits16plus", weights=str(path), depth=1, resolution=64)


# ----------------------------------------------------------------------------- SVG, VAE and diffusion files


def test_svg_official_unused_listed_and_unknown_refused(tmp_path):
    ref = create_encoder("tiny-svg", weights="random")
    ckpt = official_svg_checkpoint(ref, ref.cfg)
    path = tmp_path / "svg.ckpt"
    torch.save(ckpt, path)
    enc = create_encoder("tiny-svg", weights=str(path))
    unused = enc.spec.extra["unused_tensors"]
    assert sorted(k for ks in unused.values() for k in ks) == [
        "loss.discriminator.main.0.weight", "loss.logvar", "norm_vit.bias", "norm_vit.weight"]
    assert enc.spec.abilities == ("encode", "decode", "features")
    ckpt["state_dict"]["decoder.up.0.block.0.extra.weight"] = torch.zeros(3)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*decoder\.up\.0\.block\.0\.extra\.weight"):
        create_encoder("tiny-svg", weights=str(path))


def test_vae_folder_with_an_unknown_tensor_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    ref = create_encoder("tiny-vae", weights="random")
    ref.vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    f = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    save_file(load_file(str(f)) | {"encoder.extra": torch.zeros(2)}, str(f))
    with pytest.raises(CheckpointError, match=r"unexpected keys.*encoder\.extra"):
        create_encoder("tiny-vae", weights=str(tmp_path / "vae"))


def test_diffusion_checkpoint_unknown_refused_training_state_listed(tmp_path):
    from svgbench.diffusion.models import build_model
    from svgbench.diffusion.official import load_diffusion_checkpoint

    dit = build_model("tiny", in_channels=8, input_size=4, patch_size=1, num_classes=10)
    stats = tmp_path / "stats.pt"
    torch.save({"dinov3_sp_mean": torch.zeros(1, 1, 8), "dinov3_sp_std": torch.ones(1, 1, 8)}, stats)
    torch.save({"ema": dit.state_dict(), "model": dit.state_dict(), "step": torch.tensor(5)}, tmp_path / "ok.pt")
    _, _, info = load_diffusion_checkpoint(tmp_path / "ok.pt", stats)
    assert sorted(k for ks in info["weights_account"]["unused"].values() for k in ks) == ["model", "step"]
    torch.save({"ema": dit.state_dict() | {"blocks.0.gate": torch.ones(1)}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys.*blocks\.0\.gate"):
        load_diffusion_checkpoint(tmp_path / "bad.pt", stats)


# ----------------------------------------------------------------------------- decoder-only SVG through the CLI


def _decoder_only_files(tmp_path: Path) -> tuple[Path, Path]:
    """A decoder-only tiny-svg `.ckpt` (official layout) and an svgbench diffusion export for its latents."""
    from svgbench.checkpoints import save_safetensors
    from svgbench.data.shapes import SHAPE_CLASSES
    from svgbench.diffusion.models import build_model

    torch.manual_seed(0)
    ref = create_encoder("tiny-svg", weights="random")
    sd = official_svg_checkpoint(ref, ref.cfg)["state_dict"]
    dec = tmp_path / "svg_decoder_only.ckpt"
    torch.save({"state_dict": {k: v for k, v in sd.items() if k.startswith("decoder.")}}, dec)
    c, h, _ = ref.spec.latent_shape(64)
    dit = build_model("tiny", in_channels=c, input_size=h, patch_size=1, num_classes=len(SHAPE_CLASSES),
                      class_dropout_prob=0.1, learn_sigma=False)
    diffusion = tmp_path / "dit.safetensors"
    save_safetensors(dit.state_dict() | {"stats.mean": torch.zeros(c), "stats.std": torch.ones(c)}, diffusion,
                     metadata={"format": "svgbench.diffusion", "encoder": "tiny-svg"})
    return dec, diffusion


def safetensors_keys(path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_decoder_only_svg_from_the_cli(tmp_path, monkeypatch, capsys):
    from svgbench.cli import main

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    dec, diffusion = _decoder_only_files(tmp_path)
    results = tmp_path / "results"
    rc = main(["run", "--encoders", "tiny-svg", "--tasks", "reconstruction,knn,generation", "--num-images", "8",
               "--weights", f"tiny-svg={dec}", "--diffusion", f"tiny-svg={diffusion}", "--results", str(results),
               "--device", "cpu", "--batch-size", "8", "--set", "generation.eval_samples=8",
               "--set", "generation.sample_steps=1", "--set", "generation.bf16=false",
               "--set", "knn.train_size=8"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    recs = {t: [json.loads(p.read_text()) for p in (results / "records" / t).glob("*.json")]
            for t in ("reconstruction", "knn", "generation")}
    assert all(len(r) == 1 for r in recs.values()), recs
    for task in ("reconstruction", "knn"):
        (rec,) = recs[task]
        reasons = set(rec["metrics"]["unavailable"].values())
        assert len(reasons) == 1
        why = reasons.pop()
        assert why.startswith("tiny-svg cannot ") and f"`{task}` needs it" in why
        assert "no residual encoder" in why and str(dec) in why
        table = (results / f"{task}.md").read_text()
        assert "n/a" in table and "no residual encoder" in table
        assert rec["spec"]["abilities"] == ["decode"]
    (gen,) = recs["generation"]
    assert gen["metrics"]["num_samples"] == 8 and gen["metrics"]["fid"] is not None
    assert gen["metrics"]["diffusion_layout"] == "svgbench"
    # the diffusion file's account travels into the record: every tensor loaded, nothing beside it unread
    account = gen["metrics"]["diffusion_weights_account"]
    assert account["loaded"] == len(safetensors_keys(diffusion)) - 2 and "unused" not in account  # - stats.mean/std
    assert "2 n/a" in out and "1 cells computed" in out


def test_hub_weights_go_through_the_same_accounting(tmp_path, monkeypatch):
    """A hub download is loaded as a local file is: its unused tensors listed, an unknown one refused."""
    import huggingface_hub

    ref, meta = _dinov3(tmp_path)
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in meta.items()}, str(path))
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: asked.append((repo, name)) or str(path))
    enc = create_encoder("dinov3-vits16plus", weights="hf-hub:timm/some-dinov3", depth=1, resolution=64)
    assert asked == [("timm/some-dinov3", "model.safetensors")]
    assert "mask_token" in str(enc.spec.extra["unused_tensors"])
    torch.testing.assert_close(enc.encode(X64[:1]), ref.encode(X64[:1]))
    save_file({k: v.contiguous() for k, v in meta.items()} | {"blocks.0.extra": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match=r"unexpected keys.*blocks\.0\.extra"):
        create_encoder("dinov3-vits16plus", weights="hf-hub:timm/some-dinov3", depth=1, resolution=64)
    # the VAE's hub folder
    vae = create_encoder("tiny-vae", weights="random")
    vae.vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, allow_patterns: str(tmp_path / "vae"))
    got = create_encoder("sd-vae-ft-ema", weights="hf-hub:org/vae", resolution=64)
    torch.testing.assert_close(got.encode(X64), vae.encode(X64))
