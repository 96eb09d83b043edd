"""The latent-extractor registry: create, list, refuse duplicates, clear unknown-name errors, entry points."""

import sys
import textwrap

import pytest
import torch

from svgbench.encoders import (EncoderSpec, LatentEncoder, UnknownEncoderError, create_encoder, encoder_spec,
                               list_encoders, register_encoder, registry, unregister_encoder)



class Doubler(LatentEncoder):
    def __init__(self):
        super().__init__(EncoderSpec(name="doubler", family="test", latent_channels=3, downsample=1, resolution=32,
                                     has_decoder=True, weights="none"))

    def _encode(self, x):
        return 2 * x

    def _decode(self, z):
        return z / 2


def test_builtins_listed_with_specs():
    names = set(list_encoders())
    builtins = registry.builtin_names()  # the families' ENCODER_CONFIGS: where built-in names are declared
    assert set(builtins) <= names and len(builtins) >= 11
    assert builtins["tiny-svg"] == "svgbench.encoders.svg:create_svg"
    assert encoder_spec("svg-dinov3-vits16plus").latent_shape() == (392, 16, 16)
    assert encoder_spec("sd-vae-ft-ema").latent_shape() == (4, 32, 32)
    assert encoder_spec("dinov3-vits16plus").latent_shape() == (384, 16, 16)
    assert encoder_spec("dinov2-vitb14").latent_channels == 768
    assert not encoder_spec("dinov2-vits14").has_decoder


def test_spec_abilities_follow_the_weights_given():
    """A spec says what its encoder can do with the weights it has: a decoder-only checkpoint decodes only, and
    the runner's applicability check reads exactly that (see test_weights_accounting for the CLI)."""
    from svgbench.runner import RunConfig, _not_applicable_reason
    from svgbench.tasks import get_task

    assert encoder_spec("dinov2-vits14").abilities == ("encode", "features")
    assert encoder_spec("tiny-svg").abilities == ("encode", "decode", "features")
    why = "file.ckpt has no residual encoder"
    dec_only = encoder_spec("tiny-svg").replace(unable={"encode": why, "features": why})
    assert dec_only.abilities == ("decode",) and dec_only.as_dict()["abilities"] == ["decode"]
    with pytest.raises(ValueError, match="unknown encoder ability 'sample'"):
        dec_only.why_not("sample")

    class _Enc:  # what the check reads of an encoder: its spec
        spec = dec_only

    reasons = {t: _not_applicable_reason(get_task(t), _Enc, RunConfig()) for t in
               ("reconstruction", "probe", "knn", "seg", "generation", "sampling")}
    assert all(why in reasons[t] for t in ("reconstruction", "probe", "knn", "seg"))
    assert reasons["generation"] is None and reasons["sampling"] is None


def test_unknown_name_lists_known():
    with pytest.raises(UnknownEncoderError) as e:
        create_encoder("no-such-encoder")
    msg = str(e.value)
    assert "no-such-encoder" in msg and "tiny-svg" in msg and "sd-vae-ft-ema" in msg


def test_register_create_and_refuse_duplicate():
    register_encoder("test-doubler", Doubler)
    try:
        enc = create_encoder("test-doubler")
        x = torch.rand(1, 3, 32, 32) * 2 - 1
        assert torch.equal(enc.decode(enc.encode(x)), x)
        assert "test-doubler" in list_encoders()
        with pytest.raises(ValueError, match="already registered"):
            register_encoder("test-doubler", Doubler)
        with pytest.raises(ValueError, match="already registered"):
            register_encoder("tiny-svg", Doubler)
    finally:
        unregister_encoder("test-doubler")
    assert "test-doubler" not in list_encoders()


def test_register_as_decorator_and_bad_names():
    @register_encoder("test-deco")
    def make():
        return Doubler()

    try:
        assert isinstance(create_encoder("test-deco"), Doubler)
    finally:
        unregister_encoder("test-deco")
    with pytest.raises(ValueError, match="invalid encoder name"):
        register_encoder("Bad Name", Doubler)
    with pytest.raises(TypeError):
        register_encoder("test-notcallable", 42)


def test_factory_must_return_latent_encoder():
    register_encoder("test-wrong-type", lambda: torch.nn.Linear(2, 2))
    try:
        with pytest.raises(TypeError, match="not a LatentEncoder"):
            create_encoder("test-wrong-type")
    finally:
        unregister_encoder("test-wrong-type")


def test_entry_point_group(fake_distribution, monkeypatch):
    """A third-party package registers through the `svgbench.encoders` entry-point group."""
    fake_distribution("thirdparty_enc", textwrap.dedent("""
        from svgbench.encoders import EncoderSpec, LatentEncoder

        class Halver(LatentEncoder):
            def __init__(self):
                super().__init__(EncoderSpec(name="thirdparty-halver", family="ext", latent_channels=3,
                                             downsample=1, resolution=32, has_decoder=False, weights="none"))
            def _encode(self, x):
                return x / 2

        def make():
            return Halver()
    """), "svgbench.encoders", "thirdparty-halver", "thirdparty_enc:make")
    monkeypatch.setattr(registry.ENCODERS, "entry_points_loaded", False)
    try:
        assert "thirdparty-halver" in list_encoders()
        enc = create_encoder("thirdparty-halver")
        assert torch.allclose(enc.encode(torch.ones(1, 3, 32, 32)), torch.full((1, 3, 32, 32), 0.5))
    finally:
        unregister_encoder("thirdparty-halver")
        sys.modules.pop("thirdparty_enc", None)


def test_input_validation(images64):
    enc = create_encoder("tiny-svg", weights="random")
    with pytest.raises(ValueError, match="64x64"):
        enc.encode(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"\[-1.0, 1.0\]"):
        enc.encode(images64 * 3)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        enc.encode(torch.zeros(3, 64, 64))
    dino = create_encoder("tiny-ssl", weights="random")
    with pytest.raises(ValueError, match="multiples of 8"):
        dino.encode(torch.zeros(1, 3, 60, 60))
    with pytest.raises(NotImplementedError, match="no pixel decoder"):
        dino.decode(torch.zeros(1, 128, 8, 8))
    vit = create_encoder("dinov2-vits14", weights="random", depth=1)
    # DINOv2 (patch 14) resizes a side that is not a multiple of 14 to the largest one below: 256 -> 252
    assert vit.encode(torch.zeros(1, 3, 256, 256)).shape == (1, 384, 18, 18)
    with pytest.raises(ValueError, match="at least 14"):
        vit.encode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="decodes latents of shape"):
        enc.decode(torch.zeros(1, 5, 8, 8))


def test_pixels_baseline():
    enc = create_encoder("pixels")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z = enc.encode(x)
    torch.testing.assert_close(z, torch.nn.functional.avg_pool2d(x, 8))
    f = enc.features(x)
    assert f["pooled"].shape == (2, 192) and f["patch"].shape == (2, 64, 3)
    assert enc.decode(z).shape == x.shape
    with pytest.raises(ValueError, match="no weights"):
        create_encoder("pixels", weights="/some/file")
