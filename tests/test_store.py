"""svgbench.store: shard layout, streaming reads and one-pass statistics against in-memory references."""

import numpy as np
import pytest
import torch

import svgbench.store as store
from svgbench.store import (ShardedStore, StoreError, channel_stats, check_shard, fid_moments, read_index,
                            shard_path, shard_rows, write_index, write_shard)


def _write(path, x: np.ndarray, labels: np.ndarray | None, rows: int) -> ShardedStore:
    shards = [write_shard(path, i, s, x[s:s + rows], None if labels is None else labels[s:s + rows])
              for i, s in enumerate(range(0, len(x), rows))]
    write_index(path, {"k": 1}, x.shape, labels is not None, rows, shards)
    return ShardedStore.open(path, {"k": 1}, verify=True)


@pytest.fixture
def latents():
    g = np.random.default_rng(0)
    # channels with different offsets and scales, like SVG's DINO + residual channels
    x = g.normal(0, 1, (37, 6, 4, 4)) * g.uniform(0.5, 3, (1, 6, 1, 1)) + g.uniform(-2, 2, (1, 6, 1, 1))
    return x.astype(np.float32), g.integers(0, 5, 37)


def test_layout_round_trip_and_streaming(tmp_path, latents):
    x, y = latents
    st = _write(tmp_path / "latent-abc.npy", x, y, rows=8)
    assert st.num_shards == 5 and len(st) == 37 and st.row_shape == (6, 4, 4)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["latent-abc.json", "latent-abc.npy", "latent-abc.labels.npy"]
                           + [f"latent-abc.{i:05d}{t}" for i in range(1, 5) for t in (".npy", ".labels.npy")])
    assert st.meta["dtype"] == "float16" and np.load(tmp_path / "latent-abc.npy").dtype == np.float16
    full = st.to_tensor()
    assert torch.equal(full, torch.from_numpy(x.astype(np.float16).astype(np.float32)))
    assert torch.equal(st.labels(), torch.from_numpy(y))
    batches = list(st.iter_batches(3))
    assert max(b.shape[0] for b, _ in batches) == 3
    assert torch.equal(torch.cat([b for b, _ in batches]), full)
    assert torch.equal(torch.cat([lab for _, lab in batches]), torch.from_numpy(y))
    ds = st.dataset()
    for i in (36, 0, 17, 8, 9):
        row, lab = ds[i]
        assert torch.equal(row, full[i]) and lab == y[i]
    assert len(ds._maps) <= 2


def test_fp16_is_decided_per_shard(tmp_path, latents):
    x, _ = latents
    x = x.copy()
    x[8:16] *= 1e5  # beyond fp16's range: that shard alone is fp32
    st = _write(tmp_path / "p.npy", x, None, rows=8)
    assert [s["dtype"] for s in st.meta["shards"]] == ["float16", "float32"] + ["float16"] * 3
    assert st.meta["dtype"] == "float32"
    assert torch.equal(st.to_tensor()[8:16], torch.from_numpy(x[8:16]))


def test_damage_is_detected_and_named(tmp_path, latents):
    x, y = latents
    path = tmp_path / "p.npy"
    st = _write(path, x, y, rows=8)
    f = shard_path(path, 2)
    good = f.read_bytes()
    f.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit
    entry = st.meta["shards"][2]
    check_shard(path, 2, 16, 8, True, entry, hash_files=False)  # a size check does not see it
    with pytest.raises(StoreError, match=rf"shard {f.name} fails its checksum"):
        check_shard(path, 2, 16, 8, True, entry)
    with pytest.raises(StoreError, match="fails its checksum"):
        ShardedStore.open(path, verify=True)
    f.write_bytes(good[:-3])
    with pytest.raises(StoreError, match=rf"shard {f.name} is truncated"):
        ShardedStore.open(path)
    f.write_bytes(good)
    shard_path(path, 3, labels=True).unlink()
    with pytest.raises(StoreError, match=r"p\.00003\.labels\.npy is missing"):
        ShardedStore.open(path)
    with pytest.raises(StoreError, match="key differs"):
        read_index(path, {"k": 2})


def test_shard_rows_nest_and_bound_memory():
    assert shard_rows(392 * 256 * 4, 64) == 128  # SVG latents: 128 x 401 kB = 51 MB per shard
    assert shard_rows(392 * 4, 64) == 1024
    assert shard_rows(10**9, 48) == 48  # at least one batch
    for b in (1, 6, 64):
        unit = shard_rows(0, b)
        assert all(unit % shard_rows(r, b) == 0 for r in (4, 1600, 401408, 10**8))


@pytest.mark.parametrize("batch", [1, 5, 16, 37])
def test_streamed_statistics_equal_in_memory_bit_for_bit(tmp_path, latents, batch):
    x, _ = latents
    st = _write(tmp_path / "p.npy", x, None, rows=8)
    mem = st.to_tensor()
    mean, std = channel_stats(mem)
    s_mean, s_std = channel_stats(st, batch_size=batch)
    assert torch.equal(mean, s_mean) and torch.equal(std, s_std)
    ref = mem.double().numpy()  # independent: numpy's float64 over all but the channel dim
    np.testing.assert_allclose(mean.numpy(), ref.mean(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std.numpy(), ref.std(axis=(0, 2, 3)), rtol=1e-12)

    feats = mem.mean(dim=(2, 3))  # N x D
    mu, cov = fid_moments(feats, block=4)
    for b in (1, 3, 37):
        acc = store.FidMoments(block=4)
        for s in range(0, 37, b):
            acc.update(feats[s:s + b])
        s_mu, s_cov = acc.result()
        assert torch.equal(mu, s_mu) and torch.equal(cov, s_cov)
    np.testing.assert_allclose(mu.numpy(), feats.double().numpy().mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(feats.double().numpy(), rowvar=False), rtol=1e-10, atol=1e-12)
