"""svgbench.distributed with 2 gloo processes, and the feature cache split across them."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as tmp_mp

from svgbench import distributed as dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def _make_encoder():
    from svgbench.encoders import EncoderSpec, LatentEncoder

    class Conv(LatentEncoder):
        def __init__(self):
            super().__init__(EncoderSpec(name="test-dist-conv", family="test", latent_channels=8, downsample=8,
                                         resolution=32, has_decoder=False, weights="random"))
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 8, 8)
            self.calls = []

        def _encode(self, x):
            self.calls.append(x.shape[0])
            return self.conv(x)

    return Conv()


def _rank_main(rank: int, world: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert dist.init(backend="gloo") and dist.world_size() == world and dist.rank() == rank
    # uneven rows: rank r holds r + 2 rows of 3 values
    x = torch.arange((rank + 2) * 3, dtype=torch.float32).reshape(rank + 2, 3) + 100 * rank
    got = dist.all_gather_rows(x)
    want = torch.cat([torch.arange((r + 2) * 3, dtype=torch.float32).reshape(r + 2, 3) + 100 * r
                      for r in range(world)])
    assert torch.equal(got, want)
    assert dist.all_gather_objects({"r": rank}) == [{"r": r} for r in range(world)]
    assert dist.broadcast_object(f"from {rank}") == "from 0"
    order = os.path.join(root, "order.txt")
    with dist.main_process_first():
        with open(order, "a") as f:
            f.write(f"{rank}\n")
    dist.barrier()
    with open(order) as f:
        assert f.read().split()[0] == "0"

    # the feature cache: 20 images, units of 8 rows -> rank 0 encodes units 0 and 2, rank 1 unit 1
    import svgbench.store as store
    from svgbench.cache import cached_features
    from svgbench.data import DataConfig, build_dataset

    store.MAX_SHARD_ROWS = 8
    enc = _make_encoder()
    ds = build_dataset(DataConfig(resolution=32, size=20, split="val"))
    out = cached_features(enc, ds, kind="pooled", batch_size=4, cache_dir=os.path.join(root, "cache"))
    with open(os.path.join(root, f"calls{rank}.txt"), "w") as f:
        f.write(" ".join(map(str, enc.calls)))
    torch.save(out.features, os.path.join(root, f"feats{rank}.pt"))
    dist.shutdown()


@pytest.mark.slow  # two spawned interpreters importing torch: ~20 s on 2 shared cores
def test_gather_and_disjoint_cache_encoding_over_two_gloo_processes(tmp_path, monkeypatch):
    tmp_mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    calls = [(tmp_path / f"calls{r}.txt").read_text().split() for r in range(2)]
    assert [sum(map(int, c)) for c in calls] == [12, 8]  # disjoint: rows 0-7 and 16-19 / rows 8-15
    f0, f1 = (torch.load(tmp_path / f"feats{r}.pt") for r in range(2))
    assert torch.equal(f0, f1) and f0.shape == (20, 8)

    # the same entry from one process: identical values, and a hit (nothing encoded)
    import svgbench.store as store
    from svgbench.cache import cached_features
    from svgbench.data import DataConfig, build_dataset

    monkeypatch.setattr(store, "MAX_SHARD_ROWS", 8)
    ds = build_dataset(DataConfig(resolution=32, size=20, split="val"))
    enc = _make_encoder()
    hit = cached_features(enc, ds, kind="pooled", batch_size=4, cache_dir=tmp_path / "cache")
    assert hit.hit and enc.calls == [] and torch.equal(hit.features, f0)
    single = cached_features(enc, ds, kind="pooled", batch_size=4, cache_dir=tmp_path / "single")
    assert torch.equal(single.features, f0)
    assert (tmp_path / "single").rglob("*.json").__next__().read_bytes() == \
        (tmp_path / "cache").rglob("*.json").__next__().read_bytes()  # the same index, byte for byte


def test_helpers_are_no_ops_outside_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist.init() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    x = torch.randn(3, 2)
    assert dist.all_gather_rows(x) is x and dist.all_gather_objects(5) == [5]
    dist.barrier()
    with dist.main_process_first():
        pass
