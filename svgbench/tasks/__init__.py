"""Tasks: (encoder, dataset, config, device) -> flat dict of metrics, registered with their metric specs.

The runner, not the task, handles caching, resuming and writing records. `registry` holds the task
registry; `builtin` declares svgbench's own tasks (lazily: no task module is imported until used).
"""

from .registry import (ENTRY_POINT_GROUP, CurveSpec, MetricSpec, TaskSpec, UnknownTaskError, get_task, list_tasks,
                       register_task, task_specs, unregister_task)

__all__ = ["ENTRY_POINT_GROUP", "CurveSpec", "MetricSpec", "TaskSpec", "UnknownTaskError", "get_task", "list_tasks",
           "register_task", "task_specs", "unregister_task"]
