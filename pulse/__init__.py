"""Pulse: a notification and background-job service."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real types for checkers; at run time imported on first use
    from pulse.tasks import Context as Context
    from pulse.tasks import Retry as Retry
    from pulse.tasks import Task as Task
    from pulse.tasks import Tasks as Tasks

__version__ = "0.1.0"

_TASK_NAMES = frozenset({"Tasks", "Task", "Retry", "Context"})


def __getattr__(name: str) -> Any:
    """``pulse.Tasks``, ``pulse.Retry``, ``pulse.Context``: imported on first use, so that
    ``import pulse`` stays light for every other user of the package."""
    if name in _TASK_NAMES:
        import pulse.tasks

        return getattr(pulse.tasks, name)
    raise AttributeError(f"module 'pulse' has no attribute {name!r}")
