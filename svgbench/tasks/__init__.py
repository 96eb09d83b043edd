"""Tasks: (encoder, dataset, config, device) -> flat dict of metrics, registered with their metric specs.

The runner, not the task, handles caching, resuming and writing records. `registry` holds the task
registry and, beside it, the findings registry (claims checked on the tasks' records); `builtin` and
`builtin_findings` declare svgbench's own tasks and findings (lazily: no task module is imported until used).
"""

from .registry import (ENTRY_POINT_GROUP, FINDINGS_ENTRY_POINT_GROUP, Coverage, CurveSpec, FindingSpec, MetricSpec,
                       TaskSpec, UnknownFindingError, UnknownTaskError, finding_specs, get_finding, get_task,
                       list_findings, list_tasks, register_finding, register_task, task_specs, unregister_finding,
                       unregister_task)

__all__ = ["ENTRY_POINT_GROUP", "FINDINGS_ENTRY_POINT_GROUP", "Coverage", "CurveSpec", "FindingSpec", "MetricSpec",
           "TaskSpec", "UnknownFindingError", "UnknownTaskError", "finding_specs", "get_finding", "get_task",
           "list_findings", "list_tasks", "register_finding", "register_task", "task_specs", "unregister_finding",
           "unregister_task"]
