"""``pulse api --processes N``: N API processes serving one port, kept running.

Each child is an ordinary one-process ``pulse api`` (its own event loop, pools and caches). They
all bind the same port with SO_REUSEPORT (``SHARED_PORT_FLAG``; the supervisor holds the port
for them, see ``pulse.cli.ports``), so the kernel spreads new connections among them and no
socket is passed around. The supervisor only starts, replaces and stops them:

- a child that exits unasked is replaced (after ``RESTART_DELAY_S`` when it lived less than
  that, so a child that cannot start does not spin);
- SIGTERM, SIGINT or SIGHUP is passed on to every child (the first: graceful stop; a second:
  stop at once) and the supervisor exits once all are gone: 0 when each exited cleanly.

The children run in a process group of their own, so a Ctrl-C reaches them once, through the
supervisor, not twice (which they would take for "stop at once"); should the supervisor be
killed outright, each child gets SIGTERM from the kernel (Linux) and stops gracefully.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from pulse.cli.ports import hold_port

logger = logging.getLogger("pulse.cli.prefork")
SHARED_PORT_FLAG = "--shared-port"  # a supervisor's child: SO_REUSEPORT
RESTART_DELAY_S = 1.0
PR_SET_PDEATHSIG = 1  # prctl(2)
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
WATCHED = STOP_SIGNALS | {signal.SIGCHLD}


class Supervisor:
    def __init__(self, processes: int, command: Sequence[str]) -> None:
        self._processes = processes
        self._command = list(command)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._due: dict[int, float] = {}  # slots waiting for their replacement
        self._stops = 0
        self._failed = False

    def run(self) -> int:
        """Supervise until stopped; the exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            for slot in range(self._processes):
                self._start(slot)
            while self._children or (not self._stops and self._due):
                self._on(self._wait())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        return 1 if self._failed else 0

    def _wait(self) -> int | None:
        """The next signal; None when a replacement is due first."""
        if self._stops or not self._due:
            return signal.sigwait(WATCHED)
        timeout = max(0.0, min(self._due.values()) - time.monotonic())
        info = signal.sigtimedwait(WATCHED, timeout)
        return None if info is None else info.si_signo

    def _on(self, signum: int | None) -> None:
        if signum in STOP_SIGNALS:
            self._stops += 1
            logger.info("%s: stopping %d API processes", signal.Signals(signum).name, len(self))
            for child in self._children.values():
                child.send_signal(signal.SIGTERM)
            self._due.clear()
        self._reap()
        now = time.monotonic()
        for slot, due in list(self._due.items()):
            if due <= now:
                del self._due[slot]
                self._start(slot)

    def __len__(self) -> int:
        return len(self._children)

    def _reap(self) -> None:
        for slot, child in list(self._children.items()):
            code = child.poll()
            if code is None:
                continue
            del self._children[slot]
            if self._stops:  # SIGTERM's default action: a child still starting had no work
                self._failed |= code not in (0, -signal.SIGTERM)
                continue
            lived = time.monotonic() - self._started[slot]
            delay = 0.0 if lived >= RESTART_DELAY_S else RESTART_DELAY_S
            logger.warning("API process %d exited (%s); replacing it", child.pid, code)
            self._due[slot] = time.monotonic() + delay

    def _start(self, slot: int) -> None:
        setup = functools.partial(_child_setup, os.getpid())
        child = subprocess.Popen(self._command, process_group=0, preexec_fn=setup)
        self._children[slot] = child
        self._started[slot] = time.monotonic()
        logger.info("API process %d started", child.pid)


def _child_setup(supervisor: int) -> None:
    """In the child before exec: the supervisor's blocked signals must reach it, and should
    the supervisor die without passing a stop on (SIGKILL), the child gets SIGTERM (Linux's
    parent-death signal) instead of serving on, orphaned."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above: stop now
        os._exit(1)


def supervise(processes: int, host: str, port: int) -> int:
    """Run ``processes`` one-process ``pulse api`` children of this interpreter, on a port this
    supervisor holds for them (``hold_port``: raises ``PortInUse``)."""
    command = [sys.executable, "-m", "pulse", "api", "--processes", "1", SHARED_PORT_FLAG]
    with hold_port(host, port):
        logger.info("starting %d API processes (pid %d supervises)", processes, os.getpid())
        return Supervisor(processes, command).run()
