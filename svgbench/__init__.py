"""svgbench: is this latent space good for diffusion, and does it still understand images?

The public API is what `__all__` names; each name is imported on first use (PEP 562), so `import svgbench`
and `svgbench --help` stay fast and heavy dependencies (timm, diffusers, torch-fidelity, mmseg) are
imported only where they are used.
"""

from __future__ import annotations

import importlib

from ._version import __version__

_API = {
    # encoders
    "LatentEncoder": "svgbench.encoders", "EncoderSpec": "svgbench.encoders",
    "register_encoder": "svgbench.encoders", "create_encoder": "svgbench.encoders",
    "list_encoders": "svgbench.encoders",
    # tasks
    "register_task": "svgbench.tasks", "MetricSpec": "svgbench.tasks", "CurveSpec": "svgbench.tasks",
    "TaskSpec": "svgbench.tasks", "list_tasks": "svgbench.tasks",
    # findings: claims checked on the tasks' records
    "register_finding": "svgbench.tasks", "FindingSpec": "svgbench.tasks", "list_findings": "svgbench.tasks",
    # datasets
    "register_dataset": "svgbench.data", "DatasetSpec": "svgbench.data", "list_datasets": "svgbench.data",
    # running a matrix
    "DataConfig": "svgbench.data", "RunConfig": "svgbench.runner", "run_matrix": "svgbench.runner",
    "evaluate": "svgbench.api",
    # records and reports
    "Record": "svgbench.records", "Results": "svgbench.records", "load_records": "svgbench.records",
    "write_reports": "svgbench.report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'svgbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
