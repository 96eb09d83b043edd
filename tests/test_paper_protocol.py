"""The paper's protocol from the CLI: random-weight checkpoints in the official layouts (SVG-XL DiT `{"ema": ...}`
with `dinov3_sp_stats.pt` on a decoder-only SVG autoencoder; SiT-XL/2 on an SD-VAE diffusers folder; both at a
small depth / width of the same layout) through `svgbench run --tasks generation,sampling` on a synthetic 256-px
image folder, with named protocols, scored by the ADM protocol against a reference batch .npz written in ADM's
layout; the recorded FID / IS / precision / recall equal torch-fidelity's own computation on the same images.

Feature network: the Inception of these tests is a small random conv net registered with torch-fidelity
(`register_feature_extractor`) in place of inception-v3-compat, whose 299-px forward costs over a second an
image on this CPU; tests/test_adm.py checks the real inception-v3-compat path on a random-weight file.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svgbench.cli import main
from svgbench.metrics import fidelity as fm

STANDIN = "svgbench-test-standin"


def _standin_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class StandIn(FeatureExtractorBase):
        """uint8 images -> (32-d pooled conv features, 20 logits): fixed random weights, any input size; a
        `Mixed_6d.branch1x1` (post-ReLU, 8 x 3 x 3) where svgbench taps the sFID features, as on Inception."""

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            g = torch.Generator().manual_seed(7)
            self.conv = torch.nn.Conv2d(3, 32, 5, stride=4)
            self.fc = torch.nn.Linear(32, 20)
            self.Mixed_6d = torch.nn.Module()
            self.Mixed_6d.branch1x1 = torch.nn.Sequential(torch.nn.Conv2d(32, 8, 1), torch.nn.ReLU())
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)

        def forward(self, x):
            m = torch.tanh(self.conv(x.float() / 127.5 - 1))
            self.Mixed_6d.branch1x1(torch.nn.functional.adaptive_avg_pool2d(m, 3))
            h = torch.nn.functional.adaptive_avg_pool2d(m, 1).flatten(1)
            out = {"2048": h, "logits_unbiased": self.fc(h) * 3}
            return tuple(out[f] for f in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return "2048", "logits_unbiased"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased", "fid": "2048", "kid": "2048", "prc": "2048"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

    return StandIn


@pytest.fixture(scope="module")
def standin():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if STANDIN not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(STANDIN, _standin_class())
    from torch_fidelity.utils import create_feature_extractor

    return fm.attach_spatial(create_feature_extractor(STANDIN, ["2048", "logits_unbiased"], cuda=False, verbose=False))


@pytest.fixture
def adm_env(tmp_path, monkeypatch, standin):
    """inception-v3-compat replaced by the stand-in (the weights file only has to exist)."""
    w = tmp_path / "inception-standin.pth"
    w.write_bytes(b"unused")
    monkeypatch.setenv("SVGBENCH_INCEPTION_WEIGHTS", str(w))
    monkeypatch.setattr(fm, "inception_extractor", lambda weights, device="cpu": standin)
    monkeypatch.chdir(tmp_path)
    return standin


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/val/<class>/<jpeg>: 3 classes x 4 images of 256 px."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    g = np.random.default_rng(0)
    for c in range(3):
        d = root / "val" / f"n0{c}"
        d.mkdir(parents=True)
        for i in range(4):
            base = g.integers(0, 255, 3)
            img = (base + g.integers(0, 60, (256, 256, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, standin):
    """ADM-layout reference batch: arr_0 (10 x 256 x 256 x 3 uint8), mu, sigma, mu_s, sigma_s (float64)."""
    g = torch.Generator().manual_seed(1)
    imgs = (torch.rand(10, 3, 1, 1, generator=g) * 200 + torch.rand(10, 3, 256, 256, generator=g) * 50)
    path = tmp_path_factory.mktemp("ref") / "VIRTUAL_tiny256_labeled.npz"
    return Path(fm.write_reference_npz(imgs.clamp(0, 255).to(torch.uint8).split(4), 10, path, extractor=standin))


def _plugin(tmp_path):
    """Small variants of the official layouts at 256 px, registered as encoders for the CLI run."""
    p = tmp_path / "small_layouts.py"
    p.write_text('''
from svgbench.encoders import register_encoder
from svgbench.encoders.svg import SVGConfig, create_svg

# SVG's layout (DINOv3 ViT-S/16+ width 384, 8 residual channels, x16 LDM decoder) at depth 2 / decoder width 8
SMALL = SVGConfig(dino_overrides={"depth": 2}, residual_layers=1, residual_heads=2, residual_width=32,
                  residual_mlp=64, decoder_ch=8, decoder_ch_mult=(1, 1, 2, 2, 4), decoder_res_blocks=1,
                  decoder_attn_resolutions=(), decoder_groups=4)
try:
    register_encoder("svg-small-layout", lambda weights="random", dino_weights=None: create_svg(
        "svg-small-layout", weights=weights, dino_weights=dino_weights, config=SMALL))
except ValueError:  # registered by an earlier run in this process
    pass
''')
    return str(p)


def _randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _svg_files(tmp_path):
    """Decoder-only SVG .ckpt, SVG-XL-layout DiT {"ema": ...} (depth 4, width 192) and dinov3_sp_stats.pt."""
    from test_checkpoint_formats import official_svg_checkpoint

    from svgbench.diffusion.models import build_model
    from svgbench.encoders.svg import SVGConfig, create_svg

    cfg = SVGConfig(dino_overrides={"depth": 2}, residual_layers=1, residual_heads=2, residual_width=32,
                    residual_mlp=64, decoder_ch=8, decoder_ch_mult=(1, 1, 2, 2, 4), decoder_res_blocks=1,
                    decoder_attn_resolutions=(), decoder_groups=4)
    torch.manual_seed(0)
    ae = create_svg("svg-small-layout", weights="random", config=cfg)
    sd = official_svg_checkpoint(ae, cfg)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in sd.items() if k.startswith("decoder.")}}, tmp_path / "svg_dec.ckpt")
    dit = _randomize(build_model("tiny", in_channels=392, input_size=16, patch_size=1, learn_sigma=True,
                                 qk_norm=True, num_classes=1000, class_dropout_prob=0.1), 3)
    torch.save({"ema": dit.state_dict(), "args": {"model": "SVG-XL"}}, tmp_path / "0080000.pt")
    torch.save({"dinov3_sp_mean": torch.randn(1, 1, 392) * 0.1, "dinov3_sp_std": torch.rand(1, 1, 392) + 0.5},
               tmp_path / "dinov3_sp_stats.pt")
    return tmp_path / "svg_dec.ckpt", tmp_path / "0080000.pt", tmp_path / "dinov3_sp_stats.pt"


def _sit_files(tmp_path):
    """SD-VAE diffusers folder (small channels) and a SiT-XL/2-layout bare state dict (patch 2, 4 channels)."""
    from svgbench.diffusion.models import build_model
    from svgbench.encoders import create_encoder

    torch.manual_seed(0)
    create_encoder("tiny-vae", weights="random").vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    sit = _randomize(build_model("tiny", in_channels=4, input_size=32, patch_size=2, learn_sigma=True,
                                 num_classes=1000, class_dropout_prob=0.1), 4)
    torch.save(sit.state_dict(), tmp_path / "SiT-XL-2-256.pt")
    return tmp_path / "vae", tmp_path / "SiT-XL-2-256.pt"


def _records(results, task):
    return [json.loads(p.read_text()) for p in sorted((results / "records" / task).glob("*.json"))]


def _direct(samples_npz, reference_npz, splits):
    """torch-fidelity's calculate_metrics on the sample and reference images with the same feature network."""
    import torch_fidelity

    fake = torch.cat(list(fm.iter_npz_images(samples_npz)))
    real = torch.cat(list(fm.iter_npz_images(reference_npz)))
    return torch_fidelity.calculate_metrics(
        input1=fm.UInt8Images(fake), input2=fm.UInt8Images(real), fid=True, isc=True, prc=True,
        isc_splits=splits, feature_extractor=STANDIN, cuda=False, verbose=False, cache=False, save_cpu_ram=True)


def _direct_sfid(samples_npz, reference_npz, standin):
    """sFID by ADM's evaluator formulas (tests/test_adm.py's restatement) on the stand-in's spatial features of the
    sample images, against the reference file's own mu_s / sigma_s."""
    from test_adm import adm_frechet_distance  # tests/ is on sys.path

    f = fm.extract_features(standin, torch.cat(list(fm.iter_npz_images(samples_npz))))[fm.SPATIAL].double().numpy()
    with np.load(reference_npz) as z:
        mu_s, sigma_s = z["mu_s"], z["sigma_s"]
    return adm_frechet_distance(f.mean(0), np.cov(f, rowvar=False), mu_s, sigma_s)


def _close(a, b, rel=1e-3):
    return abs(a - b) <= rel * max(abs(b), 1e-12)


def _base(folder, results, plugin):
    return ["--plugin", plugin, "run", "--data", "imagefolder", "--data-root", str(folder), "--split", "val",
            "--resolution", "256", "--num-images", "12", "--results", str(results), "--device", "cpu",
            "--batch-size", "4"]


def test_svg_xl_layout_decoder_only_generation_and_sampling(tmp_path, adm_env, folder, reference):
    torch.set_num_threads(2)
    dec, dit, stats = _svg_files(tmp_path)
    results = tmp_path / "results"
    argv = _base(folder, results, _plugin(tmp_path)) + [
        "--encoders", "svg-small-layout", "--tasks", "generation,sampling", "--weights", f"svg-small-layout={dec}",
        "--diffusion", f"svg-small-layout={dit},stats={stats}",
        "--set", "generation.protocol=svg-paper-cfg", "--set", "generation.protocol_steps=3",
        "--set", "generation.eval_samples=8",
        "--reference", str(reference), "--set", f"generation.samples_npz={tmp_path / 's.npz'}",
        "--set", "sampling.protocol=svg-paper-nocfg", "--set", "sampling.eval_samples=8",
        "--set", "sampling.steps=[1,2]", "--set", "sampling.methods=[\"euler\"]"]
    assert main(argv) == 0
    (gen,), (samp,) = _records(results, "generation"), _records(results, "sampling")
    m = gen["metrics"]
    assert m["diffusion_layout"] == "svg" and m["protocol"] == "svg-paper-cfg" and m["guidance_scale"] == 1.25
    assert m["diffusion_kind"] == "svg" and m["guidance_mode"] == "constant" and m["sampler_nfe"] == 3
    assert m["sampler_steps"] == 3 and m["sampler_shift"] == 0.15 and m["num_samples"] == 8 and "(mu, sigma)" in m["reference_stats"]
    direct = _direct(tmp_path / "s.npz", reference, splits=8)
    assert _close(m["fid"], direct["frechet_inception_distance"])
    assert _close(m["inception_score"], direct["inception_score_mean"])
    assert m["precision"] == direct["precision"] and m["recall"] == direct["recall"]
    # sFID: the evaluator's formula on the same spatial features, against the reference batch's mu_s / sigma_s
    assert m["sfid"] > 0 and _close(m["sfid"], _direct_sfid(tmp_path / "s.npz", reference, adm_env), 1e-6)
    assert m["reference"] == reference.name and "(mu_s, sigma_s)" in m["reference_stats"]
    assert m["numeric_precision"] in ("fp32", "bf16-autocast") and m["compiled"] is False
    assert gen["config"]["reference_npz"] == str(reference) and samp["config"]["reference_npz"] == str(reference)
    assert m["sample_gflops_per_image"] > 0 and m["sample_mfu"] is None  # no known peak on a CPU
    rows = samp["metrics"]["curve"]
    assert [(r["method"], r["steps"]) for r in rows] == [("euler", 1), ("euler", 2)]
    # the Inception Score is exp(mean KL) >= 1; samples of an untrained model score 1 up to rounding
    assert all(r["fid"] > 0 and r["inception_score"] >= 1 - 1e-9 and r["gflops_per_image"] > 0 for r in rows)
    # unguided rows cost one forward a step: FLOPs scale with the steps
    assert _close(rows[1]["gflops_per_image"], 2 * rows[0]["gflops_per_image"], 1e-2)
    # the records key on the checkpoint's content: a changed file is a new cell, not a reused one
    gen_only = [a if a != "generation,sampling" else "generation" for a in argv]
    assert main(gen_only) == 0 and len(_records(results, "generation")) == 1
    torch.save({"ema": torch.load(dit, weights_only=True)["ema"], "step": torch.tensor(1)}, dit)
    assert main(gen_only) == 0 and len(_records(results, "generation")) == 2


def test_sit_layout_on_sd_vae_generation_and_sampling(tmp_path, adm_env, folder, reference):
    torch.set_num_threads(2)
    vae, sit = _sit_files(tmp_path)
    results = tmp_path / "results"
    argv = _base(folder, results, _plugin(tmp_path)) + [
        "--encoders", "sd-vae-ft-ema", "--tasks", "generation,sampling", "--weights", f"sd-vae-ft-ema={vae}",
        "--diffusion", f"sd-vae-ft-ema={sit},kind=sit",
        "--set", "generation.protocol=sit-paper", "--set", "generation.eval_samples=8",
        "--set", f"generation.reference_npz={reference}", "--set", f"generation.samples_npz={tmp_path / 's.npz'}",
        "--set", "sampling.protocol=sit-paper", "--set", "sampling.eval_samples=8", "--set", "sampling.steps=[1]",
        "--set", "sampling.methods=[\"heun\"]", "--set", f"sampling.reference_npz={reference}"]
    assert main(argv) == 0
    (gen,), (samp,) = _records(results, "generation"), _records(results, "sampling")
    m = gen["metrics"]
    assert m["diffusion_layout"] == "sit-dit" and "identity" in m["diffusion_stats_source"]
    assert m["diffusion_kind"] == "sit" and m["protocol"] == "sit-paper" and m["sampler_method"] == "dopri5"
    assert m["guidance_scale"] == 1.5 and m["sampler_nfe"] >= 6  # dopri5's evaluations, as the solver chose them
    assert m["reference"] == reference.name and m["numeric_precision"] in ("fp32", "bf16-autocast") and m["sfid"] > 0
    direct = _direct(tmp_path / "s.npz", reference, splits=8)
    assert _close(m["fid"], direct["frechet_inception_distance"])
    assert _close(m["inception_score"], direct["inception_score_mean"])
    assert m["precision"] == direct["precision"] and m["recall"] == direct["recall"]
    (row,) = samp["metrics"]["curve"]
    assert (row["method"], row["steps"], row["nfe"]) == ("heun", 1, 2) and samp["metrics"]["protocol"] == "sit-paper"
    assert samp["metrics"]["reference"] == reference.name and row["sfid"] > 0
    assert samp["metrics"]["numeric_precision"] in ("fp32", "bf16-autocast") and samp["metrics"]["labels"] == "balanced"
    assert row["fid"] > 0
    # the same tensors declared DiT: sampled by DiT's DDPM (respaced to 3 steps here), recorded as such
    dit_results = tmp_path / "dit-results"
    argv = _base(folder, dit_results, _plugin(tmp_path)) + [
        "--encoders", "sd-vae-ft-ema", "--tasks", "generation", "--weights", f"sd-vae-ft-ema={vae}",
        "--diffusion", f"sd-vae-ft-ema={sit},kind=dit", "--set", "generation.protocol=dit-paper",
        "--set", "generation.protocol_steps=3", "--set", "generation.eval_samples=8",
        "--set", f"generation.reference_npz={reference}"]
    assert main(argv) == 0
    (gen,) = _records(dit_results, "generation")
    m = gen["metrics"]
    assert (m["diffusion_kind"], m["protocol"], m["sampler_method"], m["sampler_steps"]) == ("dit", "dit-paper", "ddpm", 3)
    assert m["fid"] > 0 and m["guidance_scale"] == 1.5 and m["sfid"] > 0
    assert m["reference"] == reference.name and m["numeric_precision"] in ("fp32", "bf16-autocast")


def test_ambiguous_dit_sit_checkpoint_is_refused(tmp_path, capsys, folder):
    """DiT and SiT share a layout: without kind= the run stops with one line saying how to choose, exit 2, and
    writes nothing; a kind the layout contradicts is refused the same way."""
    vae, sit = _sit_files(tmp_path)
    results = tmp_path / "results"
    for spec, says in ((f"sd-vae-ft-ema={sit}", "kind=dit or ENCODER=PATH,kind=sit"),
                       (f"sd-vae-ft-ema={sit},kind=svg", "declare kind=dit or kind=sit")):
        argv = _base(folder, results, _plugin(tmp_path)) + [
            "--encoders", "sd-vae-ft-ema", "--tasks", "generation", "--weights", f"sd-vae-ft-ema={vae}",
            "--diffusion", spec]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not results.exists()


def test_missing_inception_weights_is_pending_and_recomputed(tmp_path, monkeypatch, folder, reference, standin):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SVGBENCH_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    vae, sit = _sit_files(tmp_path)
    results = tmp_path / "results"
    argv = _base(folder, results, _plugin(tmp_path)) + [
        "--encoders", "sd-vae-ft-ema", "--tasks", "generation", "--weights", f"sd-vae-ft-ema={vae}",
        "--diffusion", f"sd-vae-ft-ema={sit},kind=sit", "--set", "generation.eval_samples=8", "--set",
        "generation.sample_steps=1", "--set", f"generation.reference_npz={reference}"]
    assert main(argv) == 0
    (rec,) = _records(results, "generation")
    assert rec["metrics"]["fid"] is None and "Inception weights" in rec["metrics"]["pending"]["fid"]
    w = tmp_path / "inception.pth"
    w.write_bytes(b"unused")
    monkeypatch.setenv("SVGBENCH_INCEPTION_WEIGHTS", str(w))
    monkeypatch.setattr(fm, "inception_extractor", lambda weights, device="cpu": standin)
    assert main(argv) == 0
    (rec,) = _records(results, "generation")
    assert rec["metrics"]["fid"] > 0 and not rec["metrics"].get("pending")


def test_diffusion_option_errors(tmp_path):
    from svgbench.cli import _diffusion_overrides
    from svgbench.errors import UserError

    from svgbench.diffusion.models import build_model

    f = tmp_path / "ckpt.pt"
    m = build_model("tiny", in_channels=8, input_size=4, patch_size=1, learn_sigma=True, qk_norm=True, num_classes=10)
    torch.save({"ema": m.state_dict()}, f)
    assert _diffusion_overrides([f"svg={f},stats={f}"]) == {"diffusion": str(f), "diffusion_stats": str(f),
                                                            "diffusion_encoder": "svg"}
    assert _diffusion_overrides([f"svg={f},kind=svg"])["diffusion_kind"] == "svg"
    # a missing or unreadable file is the pre-run checks' (tests/test_prerun_checks.py), before any cell
    for bad, msg in ((f"svg={f},stat={f}", "unknown option"), ("svg", "ENCODER=PATH"), (f"svg={f},kind=ddpm", "kind must")):
        with pytest.raises(UserError, match=msg):
            _diffusion_overrides([bad])
    with pytest.raises(UserError, match="one --diffusion per run"):
        _diffusion_overrides([f"a={f}", f"b={f}"])


def test_missing_reference_batch_is_one_line(tmp_path, capsys, folder):
    results = tmp_path / "results"
    argv = _base(folder, results, _plugin(tmp_path)) + ["--tasks", "generation", "--reference",
                                                        str(tmp_path / "VIRTUAL_imagenet256_labeled.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reference" in err[0] and "no such file" in err[0], err
    assert not results.exists()
