"""Training recipes: a few real steps each, exact resume, two-process gloo DDP, export to the registry formats."""

import dataclasses
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from svgbench.checkpoints import CheckpointError, save_safetensors
from svgbench.encoders import create_encoder
from svgbench.train.autoencoder import AEConfig, export, train_autoencoder
from svgbench.train.common import RunDir
from svgbench.train.ssl import DinoConfig, export_backbone, train_dino

QUIET = dict(log=lambda s: None)


def interrupt_at(step):
    def hook(done):
        if done == step:
            raise KeyboardInterrupt

    return hook


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path


def ssl_cfg(out, **kw):
    base = DinoConfig(steps=4, batch_size=4, warmup=1, out=str(out), probe_every=0, ckpt_every=2,
                      freeze_last_layer=1, out_dim=64, head_hidden=32, head_bottleneck=16, data_workers=0)
    return dataclasses.replace(base, **kw)


@pytest.mark.parametrize("objective", ["dino", "simclr"])
def test_ssl_steps_and_export(in_tmp, objective):
    cfg = ssl_cfg(in_tmp / "run", objective=objective)
    last = train_dino(cfg, **QUIET).last
    assert last["step"] == 4 and torch.isfinite(torch.tensor(last["loss"]))
    export_backbone(cfg.out, in_tmp / "tiny-ssl.safetensors")
    enc = create_encoder("tiny-ssl", weights=str(in_tmp / "tiny-ssl.safetensors"))
    state = RunDir(cfg.out).load()["teacher"]
    torch.testing.assert_close(enc.model.net[0].weight, state["backbone.net.0.weight"])


def test_ssl_resume_matches_uninterrupted(in_tmp):
    full = ssl_cfg(in_tmp / "full", steps=4)
    train_dino(full, **QUIET)
    part = ssl_cfg(in_tmp / "part", steps=4)
    with pytest.raises(KeyboardInterrupt):
        train_dino(part, on_step=interrupt_at(3), **QUIET)  # killed after step 3; last checkpoint: step 2
    assert RunDir(part.out).load()["step"] == 2
    train_dino(part, **QUIET)  # resumes at step 2
    a, b = RunDir(full.out).load(), RunDir(part.out).load()
    assert a["step"] == b["step"] == 4
    for k in a["student"]:
        torch.testing.assert_close(a["student"][k], b["student"][k], msg=k)


def test_resume_refuses_other_config(in_tmp):
    cfg = ssl_cfg(in_tmp / "run", steps=2)
    train_dino(cfg, **QUIET)
    with pytest.raises(ValueError, match="differs in: lr"):
        train_dino(dataclasses.replace(cfg, lr=0.5), **QUIET)


def ae_cfg(out, **kw):
    base = AEConfig(steps=4, batch_size=2, train_images=16, eval_every=4, eval_images=4, ckpt_every=2, out=str(out))
    return dataclasses.replace(base, **kw)


@pytest.fixture
def dino_file(in_tmp):
    f = in_tmp / "ssl.safetensors"
    save_safetensors(create_encoder("tiny-ssl", weights="random").model.state_dict(), f)
    return str(f)


def test_vae_steps_resume_and_export(in_tmp):
    cfg = ae_cfg(in_tmp / "vae", model="vae", encoder="tiny-vae")
    last = train_autoencoder(cfg, **QUIET).last
    assert last["step"] == 4 and "val_psnr" in last
    part = ae_cfg(in_tmp / "vae2", model="vae", encoder="tiny-vae")
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(part, on_step=interrupt_at(3), **QUIET)
    train_autoencoder(part, **QUIET)
    a, b = RunDir(cfg.out).load(), RunDir(part.out).load()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], msg=k)
    assert [r["l1"] for r in RunDir(cfg.out).curve()] == [r["l1"] for r in RunDir(part.out).curve()]
    export(cfg, in_tmp / "tiny-vae")
    enc = create_encoder("tiny-vae", weights=str(in_tmp / "tiny-vae"))
    torch.testing.assert_close(enc.vae.decoder.conv_out.weight, a["model"]["vae.decoder.conv_out.weight"])


@pytest.mark.parametrize("encoder", ["tiny-svg", "tiny-svg-dino-only"])
def test_svg_steps_keep_dino_frozen_and_export(in_tmp, dino_file, encoder):
    cfg = ae_cfg(in_tmp / encoder, encoder=encoder, dino_weights=dino_file, disc_start=2)
    last = train_autoencoder(cfg, **QUIET).last
    assert last["step"] == 4 and "g_loss" in last and "d_loss" in last
    state = RunDir(cfg.out).load()["model"]
    from safetensors.torch import load_file

    frozen = load_file(dino_file)
    for k, v in frozen.items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(state[f"encoder.{k}"], v, msg=k)  # DINO never trained
    export(cfg, in_tmp / f"{encoder}.safetensors")
    enc = create_encoder(encoder, weights=str(in_tmp / f"{encoder}.safetensors"))
    torch.testing.assert_close(enc.decoder.conv_out.weight, state["decoder.conv_out.weight"])


def test_svg_needs_trained_dino(in_tmp, monkeypatch):
    import svgbench.encoders.dino as dino_mod

    monkeypatch.setattr(dino_mod, "EMBEDDED_WEIGHTS", in_tmp / "no-embedded-weights")
    with pytest.raises(FileNotFoundError, match="trained DINO weights"):
        train_autoencoder(ae_cfg(in_tmp / "x"), **QUIET)


def test_export_arch_mismatch_is_named(in_tmp, dino_file):
    cfg = ae_cfg(in_tmp / "svg", dino_weights=dino_file, steps=2)
    train_autoencoder(cfg, **QUIET)
    export(cfg, in_tmp / "tiny-svg.safetensors")
    with pytest.raises(CheckpointError, match="residual_layers: file 2 vs requested 3"):
        create_encoder("tiny-svg", weights=str(in_tmp / "tiny-svg.safetensors"), residual_layers=3)


# ----------------------------------------------------------------------------- two gloo processes

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out, dino_file):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    cfg = AEConfig(steps=3, batch_size=2, train_images=16, eval_every=0, eval_images=4, ckpt_every=3, out=out,
                   dino_weights=dino_file, mask_prob=0.0)
    model = train_autoencoder(cfg, log=lambda s: None).model
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")},
               os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gloo_ddp(in_tmp, dino_file):
    """Two ranks see different batches; synchronised gradients keep their weights identical, and differ
    from what rank 0's data alone would give."""
    out = str(in_tmp / "ddp")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out, dino_file), nprocs=2, join=True)
    r0 = torch.load(os.path.join(out, "rank0.pt"), weights_only=True)
    r1 = torch.load(os.path.join(out, "rank1.pt"), weights_only=True)
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], msg=k)
    assert RunDir(out).load()["step"] == 3
    solo = train_autoencoder(AEConfig(steps=3, batch_size=2, train_images=16, eval_every=0, eval_images=4,
                                      out=str(in_tmp / "solo"), dino_weights=dino_file, mask_prob=0.0),
                             **QUIET).model.state_dict()
    assert not torch.allclose(solo["decoder.conv_out.weight"], r0["decoder.conv_out.weight"])


def test_shipped_weights_stay_small_and_carry_cards():
    """Every shipped model (diffusion ones included) fits in 50 MB together, and each has its card."""
    from svgbench.train.cards import WEIGHTS_DIR

    files = [f for f in WEIGHTS_DIR.rglob("*") if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    assert total < 50e6, f"svgbench/weights holds {total / 1e6:.1f} MB"
    folders = {f.parent for f in files if f.name == "config.json"}  # diffusers folders (the tiny VAEs)
    assert {d.name for d in folders} >= {"tiny-vae", "tiny-vae-wide"}
    models = [f for f in files if f.suffix == ".safetensors" and f.parent not in folders] + sorted(folders)
    for m in models:
        card = m.with_suffix(".md") if m.suffix else m.parent / f"{m.name}.md"
        assert card.exists(), f"{m} has no model card {card.name}"


def test_card_command_names_the_flags_that_changed_the_preset():
    """A card's command reproduces the run: every field that differs from the preset is on it as a flag."""
    import dataclasses

    from svgbench.train.autoencoder import TRAIN_PRESETS
    from svgbench.train.common import config_flags

    cfg = dataclasses.replace(TRAIN_PRESETS["vae-tiny"], steps=10000, betas=(0.9, 0.99), out="elsewhere")
    assert config_flags(cfg, TRAIN_PRESETS["vae-tiny"]) == " --steps 10000 --betas 0.9,0.99"
    assert config_flags(TRAIN_PRESETS["vae-tiny-wide"], TRAIN_PRESETS["vae-tiny-wide"]) == ""


def test_model_card_shows_the_curve_intervals_it_recorded(tmp_path, monkeypatch):
    """A card's curve table gives each evaluated value with its recorded interval; rows without one stay bare."""
    import json

    from svgbench.train import cards

    monkeypatch.setattr(cards, "WEIGHTS_DIR", tmp_path / "weights")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"seed": 0, "steps": 200}))
    rows = [{"step": 100, "loss": 0.5, "fid": 60.0, "wall_s": 1.0},
            {"step": 200, "loss": 0.4, "fid": 50.0, "fid_ci_low": 45.0, "fid_ci_high": 53.0, "wall_s": 2.0}]
    (run / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"x")
    path = cards.write_card("m", run, weights, description="d", command="c", curve_keys=["loss", "fid"])
    text = path.read_text()
    assert "| 100 | 0.5 | 60.0 |" in text
    assert "| 200 | 0.4 | 50.0 [45.0, 53.0] |" in text
    assert "95% interval of fid" in text
    # a hand-written History section survives a re-export, the sections after it stay the exporter's
    path.write_text(text + "## History\n\nAn earlier run on another machine.\n\n## Stale\n\nold\n")
    again = cards.write_card("m", run, weights, description="d", command="c", curve_keys=["loss", "fid"],
                             notes="fresh note").read_text()
    assert again.endswith("## Notes\n\nfresh note\n\n## History\n\nAn earlier run on another machine.\n")
    assert "## Stale" not in again and again.count("## History") == 1
