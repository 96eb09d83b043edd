"""Task functions: (encoder, dataset, config, device) -> flat dict of metrics.

The runner, not the task, handles caching, resuming and writing records. `TASKS` maps a task name
to its entry; entries are imported lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskEntry:
    name: str
    target: str  # "module:function"
    config: str  # "module:ConfigClass"
    needs_decoder: bool = False
    description: str = ""

    def function(self):
        mod, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(mod), attr)

    def config_class(self):
        mod, _, attr = self.config.partition(":")
        return getattr(importlib.import_module(mod), attr)


TASKS: dict[str, TaskEntry] = {
    "reconstruction": TaskEntry(
        "reconstruction", "svgbench.tasks.reconstruction:run_reconstruction",
        "svgbench.tasks.reconstruction:ReconConfig", needs_decoder=True,
        description="encode -> decode: PSNR, SSIM, LPIPS, rFID"),
    "probe": TaskEntry(
        "probe", "svgbench.tasks.understanding:run_probe", "svgbench.tasks.understanding:ProbeConfig",
        description="linear probe on frozen pooled features (DINOv2 grid protocol) + logistic-regression check"),
    "knn": TaskEntry(
        "knn", "svgbench.tasks.understanding:run_knn", "svgbench.tasks.understanding:KnnConfig",
        description="weighted kNN (k=10, 20, T=0.07), silhouette, between/within-class variance, PCA map"),
    "seg": TaskEntry(
        "seg", "svgbench.tasks.segmentation:run_segmentation", "svgbench.tasks.segmentation:SegConfig",
        description="DINOv2 linear segmentation head on frozen patch tokens: mIoU, mAcc, aAcc (mmseg)"),
    "generation": TaskEntry(
        "generation", "svgbench.tasks.generation:run_generation", "svgbench.tasks.generation:GenerationConfig",
        needs_decoder=True,
        description="flow-matching diffusion on the latents: FID/KID/precision/recall, FID vs training steps"),
    "sampling": TaskEntry(
        "sampling", "svgbench.tasks.generation:run_sampling", "svgbench.tasks.generation:SamplingConfig",
        needs_decoder=True, description="few-step sampling: FID and time per image vs sampler steps (Euler, Heun)"),
}


def get_task(name: str) -> TaskEntry:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
