"""svgbench.cache over sharded stores: resume, repair of a damaged shard, batch-dependent keys, workers."""

import numpy as np
import pytest
import torch

import svgbench.store as store
from svgbench.cache import batch_dependent, cached_features, cached_features_all, key_parts
from svgbench.data import DataConfig, build_dataset
from svgbench.encoders import EncoderSpec, LatentEncoder
from svgbench.store import shard_path

pytestmark = pytest.mark.usefixtures("one_thread")


class Conv(LatentEncoder):
    """A random strided conv (8 channels, 4 x 4 at 32 px); counts images per forward; can fail on call `fail_at`."""

    def __init__(self, fail_at=None):
        super().__init__(EncoderSpec(name="test-cache-conv", family="test", latent_channels=8, downsample=8,
                                     resolution=32, has_decoder=False, weights="random"))
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 8, 8)
        self.calls, self.fail_at = [], fail_at

    def _encode(self, x):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt  # stands in for a kill mid-extraction
        self.calls.append(x.shape[0])
        return self.conv(x)


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(store, "MAX_SHARD_ROWS", 8)  # 20 images -> shards of 8, 8, 4


@pytest.fixture(scope="module")
def data():
    return build_dataset(DataConfig(resolution=32, size=20, split="val"))


def test_interrupted_extraction_resumes_at_the_first_missing_shard(tmp_path, data, small_shards):
    ref = cached_features_all(Conv(), data, kinds=("pooled", "latent"), batch_size=4, cache_dir=tmp_path / "ref")
    # two forwards per batch (features, then encode): dies in the 3rd batch, after shard 0 (batches 1-2)
    enc = Conv(fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        cached_features_all(enc, data, kinds=("pooled", "latent"), batch_size=4, cache_dir=tmp_path / "c")
    first = next((tmp_path / "c").rglob("pooled-*.npy"))
    assert not first.with_suffix(".json").exists() and not shard_path(first, 1).exists()
    enc = Conv()
    out = cached_features_all(enc, data, kinds=("pooled", "latent"), batch_size=4, cache_dir=tmp_path / "c")
    assert enc.calls == [4] * 6  # rows 8-19 only, two forwards per batch
    for k in ("pooled", "latent"):
        assert not out[k].hit and torch.equal(out[k].features, ref[k].features)
        assert out[k].path.with_suffix(".json").read_bytes() == ref[k].path.with_suffix(".json").read_bytes()
    assert out["latent"].features.shape == (20, 8, 4, 4)


def test_damaged_shard_is_named_and_recomputed_alone(tmp_path, data, small_shards):
    ref = cached_features(Conv(), data, kind="patch", batch_size=4, cache_dir=tmp_path)
    bad = shard_path(ref.path, 1)
    good = bad.read_bytes()
    bad.write_bytes(good[:-1] + bytes([good[-1] ^ 0x40]))
    enc = Conv()
    with pytest.warns(RuntimeWarning, match=rf"is unusable \(shard {bad.name} fails its checksum"):
        out = cached_features(enc, data, kind="patch", batch_size=4, cache_dir=tmp_path)
    assert enc.calls == [4, 4] and not out.hit  # shard 1's 8 rows, nothing else
    assert bad.read_bytes() == good and torch.equal(out.features, ref.features)
    again = Conv()
    assert cached_features(again, data, kind="patch", batch_size=4, cache_dir=tmp_path).hit and again.calls == []


def test_batch_size_keys_only_batch_dependent_encoders(data):
    enc = Conv()
    assert not batch_dependent(enc)
    assert key_parts(enc, data, "latent", "w", 4) == key_parts(enc, data, "latent", "w", 8)
    enc.batch_dependent = True
    assert key_parts(enc, data, "latent", "w", 4)["batch_size"] == 4
    assert key_parts(enc, data, "latent", "w", 4) != key_parts(enc, data, "latent", "w", 8)
    del enc.batch_dependent
    from svgbench.encoders.svg import SVGConfig, _spec  # the spec SVG encoders carry (align="batch" by default)

    for align, dependent in (("batch", True), ("sample", False), ("none", False)):
        enc.spec = _spec("svg-test", SVGConfig(align=align), "random", 384)
        assert batch_dependent(enc) == dependent


def test_workers_give_the_same_entry(tmp_path, data, small_shards):
    a = cached_features(Conv(), data, kind="pooled", batch_size=4, cache_dir=tmp_path / "a", num_workers=0)
    b = cached_features(Conv(), data, kind="pooled", batch_size=4, cache_dir=tmp_path / "b", num_workers=2)
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert np.load(a.path).tobytes() == np.load(b.path).tobytes()


def test_a_store_that_cannot_fit_is_refused_before_its_first_shard(tmp_path, data, monkeypatch):
    from collections import namedtuple

    import svgbench.cache as cache
    from svgbench.errors import UserError

    usage = namedtuple("usage", "total used free")
    free = {"bytes": 10 << 20}  # 10 MiB: under the store's margin alone
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: usage(1 << 40, 0, free["bytes"]))
    with pytest.raises(UserError, match=r"feature cache .*: 20 rows of 8x4x4 need at least 64.0 MiB .*, 10.0 MiB free; .*SVGBENCH_CACHE"):
        cached_features(Conv(), data, kind="latent", batch_size=4, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.npy")) and not list(tmp_path.rglob("*.json"))  # nothing written
    # what it needs: 20 rows x 128 values x 2 bytes + labels + the margin; one byte less is refused
    need = 20 * (2 * 128 + 8) + cache.SPACE_MARGIN
    free["bytes"] = need - 1
    with pytest.raises(cache.CacheSpaceError):
        cached_features(Conv(), data, kind="latent", batch_size=4, cache_dir=tmp_path)
    free["bytes"] = need
    got = cached_features(Conv(), data, kind="latent", batch_size=4, cache_dir=tmp_path)
    assert got.features.shape == (20, 8, 4, 4) and not got.hit
