"""The one checkpoint loader: format sniffing, refusals with one clear line, non-finite tensors."""

from __future__ import annotations

import pytest
import torch

from svgbench.checkpoints import (CheckpointError, load_state_dict, read_safetensors_metadata, refuse_non_finite,
                                  save_safetensors, sniff_format)


def test_sniff_format(tmp_path):
    state = {"w": torch.ones(2, 3)}
    save_safetensors(state, tmp_path / "a.safetensors")
    torch.save(state, tmp_path / "b.pt")
    torch.save(state, tmp_path / "c.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "d.bin").write_bytes(b"")
    (tmp_path / "e.bin").write_text("{not weights}")
    assert [sniff_format(tmp_path / n) for n in ("a.safetensors", "b.pt", "c.pt", "d.bin", "e.bin")] == [
        "safetensors", "torch-zip", "torch-pickle", "empty", "unknown"]


def test_content_decides_the_loader_not_the_suffix(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_safetensors(state, tmp_path / "model.bin")  # safetensors bytes under a torch-style name
    torch.testing.assert_close(load_state_dict(tmp_path / "model.bin")["w"], state["w"])
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.testing.assert_close(load_state_dict(tmp_path / "legacy.pt")["w"], state["w"])


def test_missing_file_says_does_not_exist_everywhere(tmp_path):
    for fn in (load_state_dict, read_safetensors_metadata):
        with pytest.raises(CheckpointError, match=r"nope\.safetensors does not exist; check the path"):
            fn(tmp_path / "nope.safetensors")


def test_non_finite_floats_named_integers_ignored():
    refuse_non_finite({"steps": torch.tensor([2**62]), "ok": torch.zeros(3)}, "x")
    for bad, kind in ((float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "inf")):
        t = torch.zeros(4, dtype=torch.bfloat16)
        t[2] = bad
        with pytest.raises(CheckpointError, match=rf"tensor 'blk\.w' \(4,\) holds 1 non-finite value\(s\) \({kind}\)"):
            refuse_non_finite({"ok": torch.zeros(1), "blk.w": t}, "f.safetensors")


def test_state_dict_inside_torch_file_checked_for_non_finite(tmp_path):
    torch.save({"state_dict": {"a": torch.tensor([1.0, float("nan")])}, "epoch": 3}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=r"m\.ckpt: tensor 'a'"):
        load_state_dict(tmp_path / "m.ckpt")


def test_a_safetensors_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from svgbench.checkpoints import load_state_dict, sniff_format

    # pad the metadata until the JSON header's length has 0x80 as its low byte (the first byte of the file)
    for pad in range(600):
        path = tmp_path / f"w{pad}.safetensors"
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        raise AssertionError("no padding gave a header length ending in 0x80")
    assert sniff_format(path) == "safetensors"
    assert torch.equal(load_state_dict(path)["w"], torch.ones(2))
    assert json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])["__metadata__"]


def test_saved_safetensors_bytes_do_not_depend_on_metadata_order(tmp_path):
    """The same tensors and metadata give byte-identical files (so re-exported weights keep their sha256),
    and the file still loads with safetensors: the same tensors, the same metadata."""
    from safetensors import safe_open

    from svgbench.checkpoints import save_safetensors

    state = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3, dtype=torch.float16)}
    meta = {f"key{i}": f"value {i}" for i in range(12)}
    save_safetensors(state, tmp_path / "one.safetensors", metadata=meta)
    save_safetensors(dict(reversed(state.items())), tmp_path / "two.safetensors",
                     metadata=dict(reversed(meta.items())))
    one, two = (tmp_path / "one.safetensors").read_bytes(), (tmp_path / "two.safetensors").read_bytes()
    assert one == two
    assert (8 + int.from_bytes(one[:8], "little")) % 8 == 0
    with safe_open(tmp_path / "one.safetensors", "pt") as f:
        assert f.metadata() == meta and set(f.keys()) == set(state)
        assert all(torch.equal(f.get_tensor(k), v) for k, v in state.items())
