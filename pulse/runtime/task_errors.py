"""What a failed run shows its tenant: the error's text scrubbed of configured secrets, and a
traceback of the tenant's own code only.

Frames in Pulse itself, the standard library and installed packages are dropped (they tell the
tenant nothing and show the server's layout); the frames kept name their file relative to the
task module's import root (``myapp/tasks.py``, not ``/srv/app/myapp/tasks.py``).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from collections.abc import Callable

_HIDDEN = tuple(
    os.path.realpath(path) + os.sep
    for path in {
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # pulse/
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
)


def import_root(module: str) -> str:
    """The directory the task's top-level package (or module) was imported from."""
    top = sys.modules.get(module.partition(".")[0])
    path: str | None = getattr(top, "__file__", None)
    if path is None:
        return os.sep  # unknown: no frame is trimmed to a relative path
    root = os.path.dirname(os.path.realpath(path))
    return os.path.dirname(root) if os.path.basename(path) == "__init__.py" else root


def tenant_traceback(exc: BaseException, root: str, redact: Callable[[str], str]) -> str:
    """The traceback of ``exc`` (and its causes) with the tenant's frames only, redacted."""
    summary = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending = [summary]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = _tenant_frames(current.stack, root)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return redact("".join(summary.format()))


def _tenant_frames(stack: traceback.StackSummary, root: str) -> traceback.StackSummary:
    kept = []
    prefix = os.path.realpath(root) + os.sep
    for frame in stack:
        if frame.filename.startswith("<"):  # <frozen ...>, <string>: no file of the tenant's
            continue
        path = os.path.realpath(frame.filename)
        if path.startswith(_HIDDEN) or not path.startswith(prefix):
            continue
        kept.append(
            traceback.FrameSummary(
                os.path.relpath(path, root), frame.lineno, frame.name, line=frame.line
            )
        )
    return traceback.StackSummary.from_list(kept)


def said(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when the tenant's exception cannot say itself (its
    ``__str__`` raised): a run's error is recorded whatever its exception does."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"
