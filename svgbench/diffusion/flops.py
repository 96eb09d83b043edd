"""Model FLOPs counted by torch (`torch.utils.flop_counter.FlopCounterMode`) and model FLOP utilisation.

FLOPs are what the traced matmuls, convolutions and attention kernels do (2 per multiply-add), not a
formula: a change to the model changes the count. MFU = achieved FLOP/s / the device's dense peak for the
arithmetic used (bf16 tensor cores, TF32, or plain fp32). A sampler's cost per image is one forward's FLOPs at
the sampling batch size times the forwards it runs per batch (`sampling_efficiency`).
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


# ---------------------------------------------------------------------------------------------
# a cell's cost model: time and FLOPs inside model forwards, and the machine's achievable GEMM rate
# ---------------------------------------------------------------------------------------------


def _dtype_name(device_type: str) -> str:
    """The arithmetic a forward runs in now: bf16 under bf16 autocast, else fp32 (tf32 on CUDA when allowed)."""
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return "bf16"
    if device_type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "fp32"


class ForwardClock:
    """Wall time, FLOPs and count of the forwards of modules of `types` while the clock is active.

    Global forward hooks (torch.nn.modules.module.register_module_forward_*_hook) see every forward wherever
    the task builds or wraps its model, so the task code needs no timing of its own; a forward nested in
    another clocked one counts once. FLOPs per image are counted by FlopCounterMode once per (model, input
    shape, arithmetic) at batch 1 and scaled by the batch (a transformer's FLOPs are linear in it).
    `summary()` -> {"model_s", "model_flops", "forwards", "by_dtype": {dtype: {"s", "flops", "forwards"}}}.
    """

    def __init__(self, types: tuple[type, ...] | Callable[[], tuple[type, ...]]):
        # a callable resolves the types at each forward: the clock need not import the model's module (and its
        # dependencies) for a cell that never builds one
        self.types = types
        self.by_dtype: dict[str, dict] = {}
        self._flops_per_image: dict[tuple, float] = {}
        self._depth = 0
        self._t0 = 0.0
        self._counting = False
        self._handles: list = []

    def __enter__(self) -> "ForwardClock":
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self._handles = [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _clocked(self, module) -> bool:
        if self._counting:
            return False
        types = self.types() if callable(self.types) else self.types
        return bool(types) and isinstance(module, types)

    def _pre(self, module, args):
        if self._clocked(module):
            if self._depth == 0:
                _sync(args)
                self._t0 = _now()
            self._depth += 1

    def _post(self, module, args, output):
        if not self._clocked(module):
            return
        self._depth -= 1
        if self._depth:
            return
        _sync(args)
        seconds = _now() - self._t0
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        batch = int(x.shape[0]) if x is not None and x.dim() else 1
        dtype = _dtype_name(x.device.type if x is not None else "cpu")
        flops = self._per_image(module, args, dtype) * batch
        slot = self.by_dtype.setdefault(dtype, {"s": 0.0, "flops": 0.0, "forwards": 0})
        slot["s"] += seconds
        slot["flops"] += flops
        slot["forwards"] += 1

    def _per_image(self, module, args, dtype: str) -> float:
        first = tuple(a[:1] if isinstance(a, torch.Tensor) and a.dim() else a for a in args)
        key = (id(module), tuple(tuple(a.shape[1:]) for a in first if isinstance(a, torch.Tensor)), dtype)
        if key not in self._flops_per_image:
            self._counting = True
            try:
                with torch.no_grad():
                    self._flops_per_image[key] = float(count_flops(module, *first))
            finally:
                self._counting = False
        return self._flops_per_image[key]

    def cost(self, device: str = "cpu") -> dict:
        """`summary()` plus, where the cell ran model forwards, the achievable FLOP/s of each arithmetic they
        used (measured in this process: `achievable_rate`) and the machine: a record's cost model."""
        out = self.summary()
        if out["forwards"]:
            kind = torch.device(device).type
            out["achievable_flops"] = {d: achievable_rate(d, kind) for d in out["by_dtype"]}
            out["machine"] = {"cpu": processor_name(kind), "threads": torch.get_num_threads(),
                              "arithmetic": " + ".join(out["by_dtype"])}
        return out

    def summary(self) -> dict:
        return {"model_s": round(sum(v["s"] for v in self.by_dtype.values()), 4),
                "model_flops": sum(v["flops"] for v in self.by_dtype.values()),
                "forwards": sum(v["forwards"] for v in self.by_dtype.values()),
                "by_dtype": {k: {"s": round(v["s"], 4), "flops": v["flops"], "forwards": v["forwards"]}
                             for k, v in sorted(self.by_dtype.items())}}


def _now() -> float:
    import time

    return time.perf_counter()


def _sync(args) -> None:
    """CUDA runs asynchronously: wait for queued work before reading the clock."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_cuda:
            torch.cuda.synchronize(a.device)
            return


GEMM_SIZE = 1024  # a square GEMM large enough to run at the BLAS kernel's steady rate on a CPU core


def diffusion_model_types() -> tuple[type, ...]:
    """svgbench's diffusion transformer class once its module is imported (a cell that builds a diffusion
    model imports it), else () without importing it."""
    import sys

    models = sys.modules.get("svgbench.diffusion.models")
    return (models.DiffusionTransformer,) if models is not None else ()


def gemm_rate(dtype: str = "fp32", device: str = "cpu", size: int = GEMM_SIZE, repeats: int = 5) -> float:
    """The achievable FLOP/s of this machine now: the best of `repeats` timed size x size x size matmuls in
    `dtype` ('fp32' | 'bf16') with the current thread count. Measured in the run whose cells it judges, since
    shared machines differ from run to run and CPUs differ in their bf16 support."""
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "tf32": torch.float32}[dtype]
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dt)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dt)
    best = float("inf")
    with torch.no_grad():
        torch.mm(a, b)  # warm-up: thread pool and kernel selection
        for _ in range(repeats):
            _sync((a,))
            t0 = _now()
            torch.mm(a, b)
            _sync((a,))
            best = min(best, _now() - t0)
    return 2.0 * size ** 3 / best


_RATES: dict[tuple, float] = {}


def achievable_rate(dtype: str, device: str = "cpu") -> float:
    """`gemm_rate` measured once per process, arithmetic, device type and thread count: the run's yardstick."""
    key = (dtype, device, torch.get_num_threads())
    if key not in _RATES:
        _RATES[key] = gemm_rate(dtype, device=device)
    return _RATES[key]


def processor_name(device: str = "cpu") -> str:
    """The CPU's model name (Linux /proc/cpuinfo) or the CUDA device's name."""
    import platform

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def forward_flops(model, batch: int, device: str) -> float:
    """FLOPs of one model forward per image at batch size `batch` (torch's FlopCounterMode): the same for
    every sampler of the model, so a cell counts it once."""
    c, h = model.in_channels, model.input_size
    x = torch.zeros(batch, c, h, h, device=device)
    t, y = torch.full((batch,), 0.5, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    eager = getattr(model, "_svgbench_eager_forward", None)
    compiled = model.forward
    if eager is not None:  # a compiled forward would recompile for this batch size just to be counted
        model.forward = eager
    try:
        with torch.no_grad():
            return count_flops(model, x, t, y) / batch
    finally:
        if eager is not None:
            model.forward = compiled


def sampling_efficiency(model, sampler, batch: int, sample_s_per_image: float, device: str,
                        per_forward: float | None = None) -> dict:
    """{"gflops_per_image", "mfu"}: FLOPs of one model forward at the sampling batch size (`per_forward`, else
    counted here by `forward_flops`) x forwards per batch, per image; MFU against the device's dense peak for
    the arithmetic used (None where the peak is unknown, e.g. on a CPU)."""
    if per_forward is None:
        per_forward = forward_flops(model, batch, device)
    per_image = per_forward * sampler.forward_batches()  # a guided evaluation runs the 2B batch [cond, uncond]
    # a TaskSampler switches TF32 on only inside its calls: its own word says whether the run used it
    prec = "tf32" if getattr(sampler, "tf32", False) and sampler.autocast is None else \
        precision_of(sampler.autocast, device)
    util = mfu(per_image, sample_s_per_image, device, prec)
    return {"gflops_per_image": round(per_image / 1e9, 4), "mfu": None if util is None else round(util, 5)}
