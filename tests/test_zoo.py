"""The generic families (`diffusers:DIR`, `timm:MODEL[@WEIGHTS]`) and `svgbench.evaluate` on an in-memory module.

Every diffusers class is built from its published config shrunk to a few channels and one or two blocks, with
random weights, saved with save_pretrained and read back as `diffusers:DIR`: nothing is downloaded.
"""

import importlib.util
import json
import math

import pytest
import torch
from torch import nn

from svgbench.checkpoints import CheckpointError
from svgbench.data import DataConfig
from svgbench.encoders import LatentEncoder, create_encoder, encoder_spec, register_encoder, unregister_encoder
from svgbench.encoders.base import EncoderSpec
from svgbench.runner import RunConfig, run_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

diffusers = pytest.importorskip("diffusers")

_KL_BLOCKS = dict(block_out_channels=(8, 8, 16), layers_per_block=1, norm_num_groups=4,
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=64)

# published configs (SD3.5 / FLUX.1 VAE, FLUX.2 VAE, DC-AE f32c32, TAESD, RAE DINOv2-B), shrunk: every setting
# that reaches the latent (channels, scaling_factor, shift_factor, block types, patchify) kept, widths cut
CONFIGS = {
    "AutoencoderKL": dict(_KL_BLOCKS, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                          use_quant_conv=False, use_post_quant_conv=False),
    "AutoencoderKLFlux2": dict(_KL_BLOCKS, latent_channels=8, patch_size=(2, 2)),
    "AutoencoderDC": dict(
        latent_channels=8, attention_head_dim=8, encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 16, 32),
        decoder_block_out_channels=(8, 16, 32), encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), ()), decoder_qkv_multiscales=((), (), ()), upsample_block_type="interpolate",
        downsample_block_type="Conv", decoder_norm_types=("batch_norm", "batch_norm", "rms_norm"),
        decoder_act_fns=("relu", "relu", "silu"), scaling_factor=0.41407),
    "AutoencoderTiny": dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4),
    "AutoencoderRAE": dict(encoder_type="dinov2", encoder_hidden_size=64, encoder_patch_size=8,
                           encoder_num_hidden_layers=1, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                           decoder_num_attention_heads=2, decoder_intermediate_size=64, patch_size=16,
                           encoder_input_size=32, latents_mean=0.1, latents_std=2.0),
}
# (latent channels, cells per side) at 64 px, from the configs above
EXPECTED = {"AutoencoderKL": (16, 16), "AutoencoderKLFlux2": (32, 8), "AutoencoderDC": (8, 16),
            "AutoencoderTiny": (4, 8), "AutoencoderRAE": (64, 4)}


def _needs(cls):
    if cls == "AutoencoderRAE" and importlib.util.find_spec("transformers") is None:
        pytest.skip("AutoencoderRAE builds its frozen encoder with transformers, which is not installed")
    if not hasattr(diffusers, cls):
        pytest.skip(f"diffusers {diffusers.__version__} has no {cls}")


def save_model(cls, folder):
    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**CONFIGS[cls]).eval()
    if cls == "AutoencoderKLFlux2":  # statistics that are not the identity, so the normalisation is exercised
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(folder)
    return model


def class_roundtrip(cls, model, x):
    """The class's own path: decode(encode(x).latent_dist.mean), or its deterministic latent."""
    with torch.no_grad():
        if cls in ("AutoencoderKL", "AutoencoderKLFlux2"):
            return model.decode(model.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        if cls == "AutoencoderTiny":
            return model.decode(model.encode(x).latents).sample.clamp(-1, 1)
        if cls == "AutoencoderRAE":  # the class takes and gives [0, 1] images
            return (model.decode(model.encode((x + 1) / 2).latent).sample * 2 - 1).clamp(-1, 1)
        return model.decode(model.encode(x).latent).sample.clamp(-1, 1)


@pytest.mark.parametrize("cls", list(CONFIGS))
def test_each_class_loads_from_its_folder_with_the_config_geometry_and_round_trips(cls, tmp_path, images64):
    _needs(cls)
    model = save_model(cls, tmp_path / "ae")
    name = f"diffusers:{tmp_path / 'ae'}"
    spec = encoder_spec(name)  # read from config.json alone
    enc = create_encoder(name, resolution=64)
    assert spec.extra["class"] == cls and enc.spec.has_decoder and enc.spec.family == "diffusers"
    ch, side = EXPECTED[cls]
    z = enc.encode(images64)
    assert tuple(z.shape) == (2, ch, side, side) == (2, *enc.spec.latent_shape(64))
    assert spec.latent_shape(64) == enc.spec.latent_shape(64)
    assert enc.spec.extra["scaling_factor"] == CONFIGS[cls].get("scaling_factor", 1.0)
    assert enc.spec.extra["shift_factor"] == CONFIGS[cls].get("shift_factor", 0.0)
    # scaling / shift / statistics undone exactly: the class's own decode of its own latent
    assert torch.allclose(enc.decode(z), class_roundtrip(cls, model, images64), atol=1e-4)
    if cls == "AutoencoderKL":  # the latent is (mean - shift) * scale, not the raw mean
        raw = model.encode(images64).latent_dist.mean
        assert torch.allclose(z, (raw - 0.0609) * 1.5305, atol=1e-5)
    if cls == "AutoencoderKLFlux2":  # FLUX.2's pipeline: patchified, then normalised by the batch-norm statistics
        raw = model.encode(images64).latent_dist.mean
        b, c, h, w = raw.shape
        p = raw.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        ref = (p - model.bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(model.bn.running_var.view(1, -1, 1, 1) + 1e-4)
        assert torch.allclose(z, ref, atol=1e-5)


def test_per_channel_latent_statistics_of_the_config_are_applied_and_undone(tmp_path, images64):
    torch.manual_seed(0)
    mean, std = [0.1 * i for i in range(4)], [0.5 + 0.25 * i for i in range(4)]
    cfg = dict(_KL_BLOCKS, latent_channels=4, scaling_factor=0.5, latents_mean=mean, latents_std=std)
    model = diffusers.AutoencoderKL(**cfg).eval()
    model.save_pretrained(tmp_path / "ae")
    enc = create_encoder(f"diffusers:{tmp_path / 'ae'}")
    assert enc.spec.extra["latent_stats"] and "latents_mean" in enc.spec.notes
    z, raw = enc.encode(images64), model.encode(images64).latent_dist.mean
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(z, (raw - m) / s * 0.5, atol=1e-5)
    assert torch.allclose(enc.decode(z), class_roundtrip("AutoencoderKL", model, images64), atol=1e-4)


def test_sampling_is_an_option_of_posterior_classes_only(tmp_path, images64):
    save_model("AutoencoderKL", tmp_path / "kl")
    mean = create_encoder(f"diffusers:{tmp_path / 'kl'}").encode(images64)
    sampled = create_encoder(f"diffusers:{tmp_path / 'kl'}", sample=True)
    assert sampled.spec.extra["sample"] and "posterior sample" in sampled.spec.notes
    assert not torch.allclose(sampled.encode(images64), mean)
    save_model("AutoencoderTiny", tmp_path / "tiny")
    with pytest.raises(CheckpointError, match="deterministic latent"):
        create_encoder(f"diffusers:{tmp_path / 'tiny'}", sample=True)


def test_folder_and_hub_errors_name_the_input_and_the_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(CheckpointError, match="is not a folder"):
        create_encoder(f"diffusers:{tmp_path / 'missing'}")
    (tmp_path / "repo" / "vae").mkdir(parents=True)
    save_model("AutoencoderTiny", tmp_path / "repo" / "vae")
    with pytest.raises(CheckpointError, match=r"has no config.json \(sub-folders with one: vae"):
        create_encoder(f"diffusers:{tmp_path / 'repo'}")
    # a model whose weights do not fit its config is refused, naming the keys
    save_model("AutoencoderDC", tmp_path / "dc")
    cfg = (tmp_path / "dc" / "config.json")
    cfg.write_text(cfg.read_text().replace('"latent_channels": 8', '"latent_channels": 4'))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        create_encoder(f"diffusers:{tmp_path / 'dc'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as e:
        create_encoder("diffusers:svgbench-test/no-such-vae/vae")
    msg = str(e.value)
    assert "svgbench-test/no-such-vae" in msg and "diffusers:DIR/vae" in msg and "HF_HUB_OFFLINE" in msg
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(CheckpointError, match="names class 'UNet2DModel'"):
        create_encoder(f"diffusers:{tmp_path / 'bad'}")


TINY_TASKS = {
    "reconstruction": dict(rfid=False, judge_rfid=False, ci_resamples=50),
    "probe": dict(train_size=32, test_size=16, epochs=2, lrs=(1e-2,), wds=(0.0,), spread_seeds=1, ci_resamples=50,
                  sklearn_Cs=(1.0,), sklearn_max_train=32),
    "knn": dict(train_size=32, test_size=16, ks=(5,), ci_resamples=50),
    "seg": dict(train_size=8, epochs=1, ci_resamples=50),
}
ALL_TASKS = ("reconstruction", "probe", "knn", "seg", "generation")


def run_cells(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig(encoders=(name,), tasks=ALL_TASKS, data=DataConfig(size=16), results_dir=str(tmp_path / "res"),
                    batch_size=8, task_overrides=TINY_TASKS)
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures, summary.failures
    return {r.task: r.metrics for r in summary.records}


def check_cells(m):
    rec = m["reconstruction"]
    assert math.isfinite(rec["psnr"]) and rec["ci"]["psnr"]["ci_low"] <= rec["psnr"] <= rec["ci"]["psnr"]["ci_high"]
    assert 0 <= m["probe"]["probe_top1"] <= 100 and m["probe"]["num_test"] == 16
    assert 0 <= m["knn"]["knn_top1_k5"] <= 100
    assert 0 <= m["seg"]["miou"] <= 100 and m["seg"]["num_images"] == 16
    gen = m["generation"]  # no diffusion model for a new latent space: n/a, with the reason
    assert gen.get("fid") is None and "no shipped diffusion model" in gen["unavailable"]["fid"]


def test_a_diffusers_folder_runs_every_task_through_the_runner(tmp_path, monkeypatch):
    from svgbench.records import load_records

    save_model("AutoencoderKL", tmp_path / "ae")
    name = f"diffusers:{tmp_path / 'ae'}"
    check_cells(run_cells(name, tmp_path, monkeypatch))
    # a name holding a path is one record file per cell, which the reports find
    assert sorted(r.task for r in load_records(tmp_path / "res") if r.encoder == name) == sorted(ALL_TASKS)


@pytest.mark.parametrize("cls", [c for c in CONFIGS if c != "AutoencoderKL"])
def test_every_class_runs_every_task_through_the_runner(cls, tmp_path, monkeypatch):
    """About 2 s a class once torch, diffusers and the metrics are imported (the KL case above pays for that)."""
    _needs(cls)
    save_model(cls, tmp_path / "ae")
    check_cells(run_cells(f"diffusers:{tmp_path / 'ae'}", tmp_path, monkeypatch))


# ---- timm ----

def test_a_timm_backbone_gives_patch_tokens_on_its_grid_and_its_own_pooling(tmp_path, images64):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=10, dynamic_img_size=True).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    enc = create_encoder(f"timm:vit_tiny_patch16_224@{tmp_path / 'vit.safetensors'}")
    # strict: a file short of one block is refused, naming the keys
    save_file({k: v.contiguous() for k, v in ref.state_dict().items() if "blocks.11." not in k},
              str(tmp_path / "short.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(12\): blocks\.11\."):
        create_encoder(f"timm:vit_tiny_patch16_224@{tmp_path / 'short.safetensors'}")
    with pytest.raises(CheckpointError, match="does not exist"):
        create_encoder(f"timm:vit_tiny_patch16_224@{tmp_path / 'nope.safetensors'}")
    f = enc.features(images64)
    assert f["patch"].shape == (2, 16, 192) and enc.encode(images64).shape == (2, 192, 4, 4)  # class token dropped
    with torch.no_grad():  # its own normalisation (mean = std = 0.5 for this model) and its own pooling
        tokens = ref.forward_features((images64 + 1) / 2 * 2 - 1)
        assert torch.allclose(f["pooled"], ref.forward_head(tokens, pre_logits=True), atol=1e-5)
        assert torch.allclose(f["patch"], tokens[:, 1:], atol=1e-5)
    assert encoder_spec("timm:vit_small_patch14_dinov2.lvd142m@random").latent_shape(256) == (384, 18, 18)
    conv = create_encoder("timm:resnet18@random")  # a convnet: its last feature map is the grid
    assert conv.encode(images64).shape == (2, 512, 2, 2) and conv.features(images64)["pooled"].shape == (2, 512)


def test_offline_timm_weights_say_how_to_pass_a_file(monkeypatch):
    pytest.importorskip("timm")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=r"pass timm:vit_tiny_patch16_224\.augreg_in21k@/path/to/model"):
        create_encoder("timm:vit_tiny_patch16_224.augreg_in21k")


# ---- svgbench.evaluate ----

class TinyAE(nn.Module):
    """A model as a notebook would define it: encode and decode, nothing svgbench-specific."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 6, 4, stride=4)
        self.dec = nn.ConvTranspose2d(6, 3, 4, stride=4)

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return torch.tanh(self.dec(z))


class TinyAEEncoder(LatentEncoder):
    """The same computation, written as a registered encoder."""

    def __init__(self):
        super().__init__(EncoderSpec(name="zoo-tiny-ae", family="test", latent_channels=6, downsample=4,
                                     resolution=64, has_decoder=True, weights="test"))
        torch.manual_seed(1)
        self.ae = TinyAE()

    def _encode(self, images):
        return self.ae.enc(images)

    def _decode(self, latent):
        return torch.tanh(self.ae.dec(latent)).clamp(-1, 1)


def test_evaluate_on_a_module_gives_the_numbers_of_the_same_model_registered_by_name(tmp_path, monkeypatch):
    import svgbench

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    tasks, settings = ("reconstruction", "knn"), {k: TINY_TASKS[k] for k in ("reconstruction", "knn")}
    torch.manual_seed(1)
    module = TinyAE()
    said = []
    df = svgbench.evaluate(module, tasks=tasks, data={"size": 16}, results=tmp_path / "a", settings=settings,
                           batch_size=8, log=said.append)
    register_encoder("zoo-tiny-ae", lambda **kw: TinyAEEncoder())
    try:
        cfg = RunConfig(encoders=("zoo-tiny-ae",), tasks=tasks, data=DataConfig(size=16), batch_size=8,
                        results_dir=str(tmp_path / "b"), task_overrides=settings)
        by_name = {r.task: r.metrics for r in run_matrix(cfg, log=lambda m: None).records}
    finally:
        unregister_encoder("zoo-tiny-ae")
    values = {(t, k): v for t, k, v in zip(df["task"], df["metric"], df["value"]) if v == v}  # NaN: n/a
    timing = ("_s", "_ips")
    compared = [(t, k) for (t, k) in values if not k.endswith(timing) and k != "features_cached"]
    assert {("reconstruction", "psnr"), ("reconstruction", "ssim"), ("knn", "knn_top1_k5")} <= set(compared)
    for t, k in compared:
        assert values[(t, k)] == pytest.approx(by_name[t][k], rel=1e-6, abs=1e-9), (t, k, by_name[t].get(k))
    row = df[(df.task == "reconstruction") & (df.metric == "psnr")].iloc[0]
    assert row.ci_low <= row.value <= row.ci_high and row.n == 16
    assert set(df["encoder"]) == {f"tinyae-{svgbench.api.state_hash(module)[:8]}"}
    # a LatentEncoder object goes the same way, under its spec's name
    obj = svgbench.evaluate(TinyAEEncoder(), tasks=tasks, data={"size": 16}, results=tmp_path / "a", settings=settings,
                            batch_size=8, name="zoo-tiny-ae-object")
    assert set(obj["encoder"]) == {"zoo-tiny-ae-object"}
    for t, k, v in zip(obj["task"], obj["metric"], obj["value"]):
        if (t, k) in compared:
            assert v == pytest.approx(values[(t, k)], rel=1e-6, abs=1e-9), (t, k)
    # cached: a second call with the same weights reads the records back
    said.clear()
    again = svgbench.evaluate(module, tasks=tasks, data={"size": 16}, results=tmp_path / "a", settings=settings,
                              batch_size=8, log=said.append)
    assert sum("cached" in s for s in said) == 2 and again["value"].equals(df["value"])
    # and the object is not left registered
    assert not any(n.startswith("tinyae-") for n in svgbench.list_encoders())
    with pytest.raises(TypeError, match="has no encode"):
        svgbench.evaluate(nn.Linear(2, 2), tasks=tasks, results=tmp_path / "c")


def test_list_states_the_families_and_their_latent_convention(capsys):
    from svgbench.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "diffusers:REPO_OR_DIR[/SUBFOLDER]" in out and "timm:MODEL[@WEIGHTS]" in out
    assert "posterior mean (sample=True: a posterior sample)" in out and "AutoencoderKLFlux2" in out
    assert "prefix tokens dropped" in out
    assert "ldm:FILE|DIR|ORG/REPO/FILE" in out and "latents_stats.pt" in out


def test_preflight_takes_family_names_and_reports_an_unreachable_hub_id(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from svgbench.validate import check_options

    save_model("AutoencoderTiny", tmp_path / "tiny")
    assert check_options([f"diffusers:{tmp_path / 'tiny'}", "timm:resnet18@random"], 64) == []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (problem,) = check_options(["diffusers:svgbench-test/no-such-vae"], 64)
    assert "svgbench-test/no-such-vae" in str(problem) and "pass diffusers:DIR" in str(problem)


# ---- the named zoo ----

def test_zoo_catalogue_matches_the_architectures_it_names():
    """The latent shapes and parameter counts `svgbench list` prints without importing timm or diffusers are those of
    the architectures, built on the meta device."""
    pytest.importorskip("timm")
    from svgbench.encoders.timm_backbone import build, make_spec
    from svgbench.encoders.zoo import ENCODER_CONFIGS, param_count

    for name, entry in ENCODER_CONFIGS.items():
        spec = encoder_spec(name)
        assert spec.name == name and spec.extra["zoo"] == entry.target and spec.has_decoder == entry.decoder
        if entry.params_m is not None:
            assert param_count(name) / 1e6 == pytest.approx(entry.params_m, abs=0.05), name
        if entry.target.startswith("timm:"):
            model, _, dynamic = build(entry.target, meta=True)
            assert make_spec(entry.target, model, "", dynamic, None).latent_shape(256) == spec.latent_shape(256), name
    assert encoder_spec("flux2-vae").latent_shape(256) == (128, 16, 16)
    assert encoder_spec("sd3.5-vae").extra["shift_factor"] == 0.0609


def test_a_zoo_entry_runs_from_a_local_folder_and_says_how_offline(tmp_path, monkeypatch, images64):
    import huggingface_hub.constants

    model = save_model("AutoencoderTiny", tmp_path / "taesd")
    enc = create_encoder("taesd", weights=str(tmp_path / "taesd"))
    assert enc.spec.name == "taesd" and "TAESD" in enc.spec.notes
    assert torch.allclose(enc.decode(enc.encode(images64)), class_roundtrip("AutoencoderTiny", model, images64), atol=1e-4)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=r"madebyollin/taesd.*--weights taesd=PATH"):
        create_encoder("taesd")


def test_readme_quotes_the_zoo_part_of_svgbench_list(capsys):
    """README.md's zoo table is the CLI's own output: an entry added without the README (or the reverse) fails."""
    from pathlib import Path

    from svgbench.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    start = out.index("zoo (named hub models")
    block = out[start:out.index("\n\n", start)]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"```text\n{block}\n```" in readme, "README's quoted `svgbench list` zoo table differs from the CLI's"


def test_patch_size_follows_the_latent_grid():
    from svgbench.diffusion.store import patch_for_grid

    # SD-VAE / FLUX at 256 px (32 cells): patch 2 as SiT-XL/2; SVG, VA-VAE, RAE (16), DC-AE (8), 64 px tiny (8): 1
    assert [patch_for_grid(s) for s in (32, 16, 8, 64, 24)] == [2, 1, 1, 4, 2]


def test_train_diffusion_runs_on_a_diffusers_folder(tmp_path, monkeypatch, capsys):
    """`svgbench train diffusion --encoder diffusers:DIR`: the diffusion model is sized from the folder's latent (16
    channels on a 32 x 32 grid at 64 px here, so patch 2: 16 x 16 tokens) and normalised by that latent's per-channel
    statistics."""
    from svgbench.cli_train import train_diffusion_main

    monkeypatch.setenv("SVGBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    f2 = dict(CONFIGS["AutoencoderKL"], block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
              up_block_types=("UpDecoderBlock2D",) * 2)
    diffusers.AutoencoderKL(**f2).save_pretrained(tmp_path / "kl")
    argv = ["--encoder", f"diffusers:{tmp_path / 'kl'}", "--train-steps", "2", "--eval-every", "100",
            "--curve-samples", "8", "--eval-samples", "8", "--train-size", "16", "--sample-steps", "1",
            "--batch-size", "16", "--train-batch", "4", "--runs-dir", str(tmp_path / "runs")]
    train_diffusion_main(argv)
    said = capsys.readouterr().err
    assert "trained model:" in said and math.isfinite(json.loads(said.split("trained model: ")[1].splitlines()[0])["fid"])
    (last,) = (tmp_path / "runs").rglob("last.pt")
    assert last.parent.parent == tmp_path / "runs"  # one run folder, not the folders of the name's path
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["ema"]["x_embedder.proj.weight"].shape[1:] == (16, 2, 2)  # 16 channels, 2 x 2 cells a token
    stats = ckpt["stats"]
    assert stats["mean"].shape == (16,) and bool((stats["std"] > 0).all())
    with pytest.raises(SystemExit):  # a family name is a path: no shipped file under it
        train_diffusion_main(argv + ["--export"])
    assert "is a family name" in capsys.readouterr().err
