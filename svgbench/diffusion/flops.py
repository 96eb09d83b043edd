"""Model FLOPs counted by torch (`torch.utils.flop_counter.FlopCounterMode`) and model FLOP utilisation.

FLOPs are what the traced matmuls, convolutions and attention kernels do (2 per multiply-add), not a
formula: a change to the model changes the count. MFU = achieved FLOP/s / the device's dense peak for the
arithmetic used (bf16 tensor cores, TF32, or plain fp32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Dense (no 2:4 sparsity) peak TFLOP/s, from NVIDIA's data sheets:
#   H100 SXM5 / H200 SXM: BF16 989.4, TF32 494.7, FP32 66.9 (H100 Tensor Core GPU datasheet; H200 datasheet
#   lists the same compute); H100 PCIe: BF16 756.5, TF32 378, FP32 51.2; A100 SXM4/PCIe: BF16 312, TF32 156,
#   FP32 19.5 (A100 datasheet). The sheets print sparse figures for BF16/TF32 (2x); these are half of them.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """Total FLOPs of one call fn(*args, **kwargs), counted by FlopCounterMode (the call runs once).

    When fn is a module, its timm attention layers run their explicit q k^T / attn v path while counting:
    FlopCounterMode has formulas for the CUDA flash / memory-efficient SDPA kernels but not for the CPU one,
    which would otherwise count as zero. Both paths do the same arithmetic.
    """
    from torch.utils.flop_counter import FlopCounterMode

    fused = [m for m in fn.modules() if getattr(m, "fused_attn", False)] if isinstance(fn, torch.nn.Module) else []
    for m in fused:
        m.fused_attn = False
    try:
        with FlopCounterMode(display=False) as counter:
            fn(*args, **kwargs)
    finally:
        for m in fused:
            m.fused_attn = True
    return int(counter.get_total_flops())


def peak_flops(device: str | torch.device, precision: str = "bf16") -> float | None:
    """Dense peak FLOP/s of a CUDA device for precision 'bf16' | 'tf32' | 'fp32'; None when unknown (CPU,
    or a GPU missing from PEAK_TFLOPS)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():  # "H100 PCIe" is tried before "H100"
        if all(part in name for part in key.split()):
            return peaks[precision] * 1e12
    return None


def mfu(flops: float, seconds: float, device: str | torch.device, precision: str = "bf16",
        peak: float | None = None) -> float | None:
    """flops / seconds / peak: the fraction of the device's dense peak achieved; None without a known peak.

    peak (FLOP/s) overrides the table, e.g. for a CPU or an unlisted GPU.
    """
    peak = peak if peak is not None else peak_flops(device, precision)
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / peak


def precision_of(autocast: torch.dtype | None, device: str | torch.device) -> str:
    """The peak to compare against: bf16 under bf16 autocast, tf32 when CUDA matmuls may use TF32, else fp32."""
    if autocast == torch.bfloat16:
        return "bf16"
    if torch.device(device).type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "fp32"
