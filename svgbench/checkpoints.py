"""The one way svgbench reads and writes weights: safetensors, or torch.load(weights_only=True).

Arbitrary pickles are never executed. Every error names the file and what is wrong with it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from .errors import UserError

log = logging.getLogger(__name__)


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, holds non-finite values, or does not fit the model."""


def sniff_format(path: str | os.PathLike) -> str:
    """What the first bytes of `path` say it is: "safetensors", "torch-zip" (torch.save since 1.6),
    "torch-pickle" (older torch.save, raw pickle), "empty" or "unknown". Reads 9 bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    # safetensors: little-endian u64 header length, then the JSON header starting with "{". Checked before the
    # pickle opcode: a header length whose low byte is 0x80 starts with the same byte as a pickle.
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8:
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2 opcode
        return "torch-pickle"
    return "unknown"


def _check_file(path: Path) -> str:
    """Refuse a path that is not a readable, non-empty weights file; return its sniffed format."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (and --weights ENCODER=PATH)",
                              input=str(path), fix="check the path")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; expected a weights file", input=str(path))
    try:
        fmt = sniff_format(path)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror}); check its permissions",
                              input=str(path)) from None
    if fmt == "empty":
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the download or copy did not finish, "
                              f"fetch the file again", input=str(path))
    if fmt == "unknown":
        with open(path, "rb") as f:
            head = f.read(16)
        raise CheckpointError(f"checkpoint {path} is not a weights file (neither safetensors nor a PyTorch "
                              f"checkpoint; it starts with {head!r}); give a .safetensors or torch.save file",
                              input=str(path))
    return fmt


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def refuse_non_finite(state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Raise CheckpointError naming the first floating tensor of `state` that holds NaN or inf.

    A model built from such weights produces NaN/inf outputs, which would reach the tables as
    numbers (e.g. PSNR = inf); refusing them at load keeps every metric meaningful.
    """
    for k, t in state.items():
        if t.is_floating_point() or t.is_complex():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                n = int((~finite).sum())
                kinds = "/".join(sorted({"nan" if bool(t.isnan().any()) else "",
                                         "inf" if bool(t.isinf().any()) else ""} - {""}))
                raise CheckpointError(
                    f"checkpoint {source}: tensor {k!r} {tuple(t.shape)} holds {n} non-finite value(s) ({kinds}); "
                    f"the file comes from a diverged or broken run, use another checkpoint", input=str(source))


def file_sha256(path: str | os.PathLike, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def load_state_dict(path: str | os.PathLike, *, key: str | None = None,
                    siblings: list | None = None) -> dict[str, torch.Tensor]:
    """Read tensors from `path` (.safetensors, or .pt/.pth/.bin/.ckpt through weights_only).

    `key` selects a nested dict inside a torch file (e.g. "state_dict" of a Lightning .ckpt,
    "ema" of a SiT/SVG diffusion checkpoint); with key=None a top-level "state_dict" is unwrapped.
    `siblings`: a list that receives the names of the file's other top-level entries when one was selected
    (e.g. "model", "opt" beside "ema"), so that a loader can say what it left out.
    """
    path = Path(path)
    fmt = _check_file(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"checkpoint {path} is truncated or not a valid safetensors file ({_first_line(e)}); "
                                  f"fetch the file again", input=str(path)) from e
        refuse_non_finite(state, path)
        return state
    if path.suffix == ".safetensors":
        raise CheckpointError(f"checkpoint {path} is a PyTorch ({fmt}) file named .safetensors; rename it to .pt "
                              f"or convert it with safetensors.torch.save_file", input=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(e)}); fetch the file again",
                              input=str(path)) from e
    except Exception as e:  # UnpicklingError: the file holds objects other than tensors
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"e.g. {found.group(1)}" if found else _first_line(e)
        raise CheckpointError(
            f"checkpoint {path} holds Python objects ({what}) that svgbench will not unpickle "
            f"(torch.load weights_only=True refused them); re-save only its tensors, e.g. "
            f"torch.save(ckpt['state_dict'], ...) in an environment you trust, or convert to safetensors",
            input=str(path)) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"checkpoint {path} has no {key!r} entry; top-level keys: {sorted(obj)[:20]}")
        chosen = key
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        chosen = "state_dict"
    else:
        chosen = None
    if chosen is not None:
        if siblings is not None:
            siblings.extend(sorted(k for k in obj if k != chosen))
        obj = obj[chosen]
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries {bad[:5]} are not tensors")
    refuse_non_finite(obj, path)
    return obj


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    path = Path(path)
    if _check_file(path) != "safetensors":
        raise CheckpointError(f"checkpoint {path} is a PyTorch file named .safetensors; rename it to .pt",
                              input=str(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is truncated or not a valid safetensors file "
                              f"({_first_line(e)}); fetch the file again", input=str(path)) from e


class LoadAccount:
    """Where every tensor of a file went (`check_and_load`): loaded into the model, compared with a buffer the
    model computes itself (equal, or the load was refused), or named as unused by the official forward.

    `unused`: file key -> why the official forward never reads it. `provenance()` is what a record keeps."""

    def __init__(self, source: str):
        self.source = source
        self.loaded: list[str] = []
        self.compared: list[str] = []
        self.unused: dict[str, str] = {}

    def provenance(self) -> dict:
        """{"loaded": n, "compared": [keys], "unused": {reason: [keys]}}; empty parts left out."""
        out: dict = {"loaded": len(self.loaded)}
        if self.compared:
            out["compared"] = sorted(self.compared)
        if self.unused:
            by_reason: dict[str, list[str]] = {}
            for k, why in sorted(self.unused.items()):
                by_reason.setdefault(why, []).append(k)
            out["unused"] = by_reason
        return out

    def merge(self, other: "LoadAccount", prefix: str = "") -> "LoadAccount":
        self.loaded += [prefix + k for k in other.loaded]
        self.compared += [prefix + k for k in other.compared]
        self.unused |= {prefix + k: v for k, v in other.unused.items()}
        return self


def rope_base(periods: torch.Tensor) -> float | None:
    """The base a DINOv3 RoPE `periods` vector was built from (periods[i] = base ** (4 i / head_dim), i < head_dim
    / 4), by least squares on the logs; None when the vector is not of that form (then the values are shown)."""
    p = periods.detach().double().flatten()
    if p.numel() < 2 or not bool((p > 0).all()):
        return None
    e = 2.0 * torch.arange(p.numel(), dtype=torch.float64) / (2 * p.numel())
    log_base = float((e * p.log()).sum() / (e * e).sum())
    if not bool(torch.allclose(torch.exp(e * log_base), p, rtol=2e-2)):
        return None
    base = float(torch.exp(torch.tensor(log_base, dtype=torch.float64)))
    # periods kept in bfloat16 (DINOv3's files) move the fit by ~0.1%: report the round base they come from
    rounded = float(f"{base:.2g}")
    return rounded if abs(rounded - base) <= 2e-3 * base else base


def describe_tensor(key: str, t: torch.Tensor) -> str:
    """A short account of a tensor's value, for a refusal: RoPE periods by the base they imply."""
    if key.endswith("periods"):
        base = rope_base(t)
        if base is not None:
            return f"RoPE base {base:g}"
    flat = t.detach().float().flatten()
    head = ", ".join(f"{v:.4g}" for v in flat[:4].tolist()) + (", ..." if flat.numel() > 4 else "")
    return f"{tuple(t.shape)} [{head}]"


def _same_value(file: torch.Tensor, model: torch.Tensor) -> bool:
    """Equal up to the file's storage precision (DINOv3 files keep RoPE periods in bfloat16)."""
    if tuple(file.shape) != tuple(model.shape):
        return False
    if not (file.is_floating_point() and model.is_floating_point()):
        return bool(torch.equal(file.to(model.dtype), model.detach().cpu()))
    rtol = max(torch.finfo(file.dtype).eps, 1e-5)
    return bool(torch.allclose(file.double(), model.detach().double().cpu(), rtol=rtol, atol=0.0))


def check_and_load(module: nn.Module, state: dict[str, torch.Tensor], *, source: str,
                   unused: dict[str, str] | None = None, file_keys: dict[str, str] | None = None,
                   ignore_prefixes: tuple[str, ...] = ()) -> LoadAccount:
    """Load `state` into `module` so that every tensor of the file is accounted for, or refuse it in one line.

    A key of `state` is loaded (a parameter or persistent buffer of the module, same shape), compared (a buffer
    the module computes itself, e.g. RoPE periods: the file must hold the same value, else it would run another
    model than the file describes), or unused: it matches a glob of `unused` (pattern -> why the official
    forward never reads it), and is listed once in the debug log and the returned account. Anything else, a
    missing key or a wrong shape is refused naming the keys. `file_keys` maps a converted key back to the
    file's own name, for the messages. `ignore_prefixes`: keys under them are unused, with no reason given.
    """
    file_keys = file_keys or {}
    unused = dict(unused or {}) | {f"{p}*": "not part of the model (left out by its loader)" for p in ignore_prefixes}
    named = lambda k: file_keys.get(k, k)  # noqa: E731
    account = LoadAccount(source)
    own = module.state_dict()
    computed = {k: b for k, b in module.named_buffers() if k not in own}  # non-persistent: built by the module
    rest = {}
    for k, v in state.items():
        if k in own:
            rest[k] = v
            continue
        if k in computed:
            if not _same_value(v, computed[k]):
                raise CheckpointError(
                    f"checkpoint {source}: tensor {named(k)!r} holds {describe_tensor(k, v)}, but the model "
                    f"{type(module).__name__} computes {k!r} as {describe_tensor(k, computed[k])}: the file "
                    f"describes another model than the one built; use a checkpoint of this configuration",
                    input=source)
            account.compared.append(named(k))
            continue
        why = next((r for pat, r in unused.items() if fnmatch.fnmatchcase(named(k), pat)), None)
        if why is not None:
            account.unused[named(k)] = why
            continue
        rest[k] = v  # unexpected: refused below
    missing = [k for k in own if k not in rest]
    unexpected = [named(k) for k in rest if k not in own]
    wrong = [f"{named(k)}: checkpoint {tuple(rest[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in rest and tuple(rest[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected keys, which svgbench would neither load nor knows to be unused "
                        f"({len(unexpected)}): {', '.join(unexpected[:8])}")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): {'; '.join(wrong[:8])}")
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit {type(module).__name__}: " + " | ".join(problems),
                              input=source)
    module.load_state_dict(rest, strict=True)
    account.loaded = [named(k) for k in rest]
    if account.unused:
        log.debug("checkpoint %s: %d tensor(s) not read by the official forward, skipped: %s", source,
                  len(account.unused), "; ".join(f"{why}: {', '.join(ks)}"
                                                 for why, ks in account.provenance()["unused"].items()))
    return account


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (the root at worst): where a folder not yet made would be."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write a file all or nothing: `write(f)` fills a temporary file beside `path`, which then replaces it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike, *,
                     metadata: dict | None = None) -> None:
    """Atomically write tensors (contiguous, cpu) with JSON-able metadata values."""
    from safetensors.torch import save

    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(path, _canonical_header(save(tensors, metadata=meta)))


def _canonical_header(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted. safetensors writes the header from a hash
    map, so the metadata's order (and the file's bytes) change from one process to the next; sorted, the same
    tensors and metadata always give the same bytes (and the same sha256). The data buffer is untouched: its
    offsets are relative to the end of the header, which is padded with spaces to 8 bytes as the format does."""
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + blob[8 + n:]
