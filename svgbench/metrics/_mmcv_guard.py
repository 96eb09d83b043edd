"""Lets `mmseg.models` import on top of mmcv-lite, which ships no compiled `mmcv.ops`.

mmsegmentation 1.2.2 imports a few names from `mmcv.ops` at module level (`point_sample` in
mmseg.utils and several heads, `sigmoid_focal_loss` in its focal loss) and probes others inside
`try: ... except ModuleNotFoundError`. Full mmcv would have to be compiled from source; svgbench only
needs mmseg's pure-PyTorch decode-head code, so when the real `mmcv.ops` cannot be imported
`ensure_mmcv_ops` registers a stand-in module under that name which holds:

- `point_sample`: mmcv's own pure-PyTorch implementation (mmcv/ops/point_sample.py imports only torch),
  loaded from its file without running mmcv/ops/__init__.py (which loads the compiled extension);
- `sigmoid_focal_loss`: a stub that raises `MmcvOpsUnavailable` when called (mmseg uses it only
  for FocalLoss on CUDA tensors);
- every other name: looking it up raises `MmcvOpsUnavailable`, a ModuleNotFoundError, so mmseg's
  optional imports (CrissCrossAttention, PSAMask, ...) take their "not installed" branch and
  anything else fails with a message that names the op.

Nothing is patched when the real `mmcv.ops` imports (full mmcv installed).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings

SHIM_ATTR = "__svgbench_mmcv_ops_shim__"


class MmcvOpsUnavailable(ModuleNotFoundError):
    """An mmcv op that needs mmcv's compiled extensions, which mmcv-lite does not have."""


def _missing(name: str, reason: str) -> MmcvOpsUnavailable:
    return MmcvOpsUnavailable(
        f"mmcv.ops.{name} needs mmcv's compiled extensions, which are not available ({reason}); "
        f"svgbench runs mmsegmentation on mmcv-lite and uses only its pure-PyTorch parts. "
        f"Install full mmcv (built for this torch) if you need {name}.",
        name=f"mmcv.ops.{name}",
    )


def _load_point_sample(mmcv_dir: str) -> types.ModuleType:
    path = os.path.join(mmcv_dir, "ops", "point_sample.py")
    spec = importlib.util.spec_from_file_location("mmcv.ops.point_sample", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def _build_shim(mmcv_dir: str, reason: str) -> types.ModuleType:
    shim = types.ModuleType("mmcv.ops", "svgbench stand-in for mmcv.ops (mmcv-lite has no compiled ops); "
                                        f"the real module failed to import: {reason}")
    setattr(shim, SHIM_ATTR, reason)
    shim.point_sample = _load_point_sample(mmcv_dir).point_sample

    def sigmoid_focal_loss(*args, **kwargs):
        raise _missing("sigmoid_focal_loss", reason)

    shim.sigmoid_focal_loss = sigmoid_focal_loss

    def __getattr__(name: str):
        # Dunder lookups (copy, pickle, inspect, pytest) must see a plain missing attribute.
        if name.startswith("__"):
            raise AttributeError(name)
        raise _missing(name, reason)

    shim.__getattr__ = __getattr__
    return shim


def ensure_mmcv_ops() -> str | None:
    """Make `import mmcv.ops` succeed. Returns None when the real module is in use, else the reason
    it failed to import (the stand-in is then registered). Idempotent."""
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return getattr(current, SHIM_ATTR, None)
    import mmcv

    try:
        import mmcv.ops  # noqa: F401
        return None
    except ImportError as e:
        reason = f"{type(e).__name__}: {e}"
    shim = _build_shim(os.path.dirname(mmcv.__file__), reason)
    sys.modules["mmcv.ops"] = shim
    mmcv.ops = shim
    return reason


def import_mmseg_models() -> types.ModuleType:
    """`mmseg.models`, importable with or without full mmcv."""
    ensure_mmcv_ops()
    with warnings.catch_warnings():
        # mmcv.cnn.bricks.transformer warns that mmcv-lite lacks MultiScaleDeformableAttention, which
        # svgbench never uses.
        warnings.filterwarnings("ignore", message=r"Fail to import ``MultiScaleDeformableAttention``")
        import mmseg.models

    return mmseg.models
