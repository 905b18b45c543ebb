"""Finding and killing the processes of one step attempt, by the environment they carry.

A worker that is killed outright (SIGKILL, OOM) cannot stop the shell commands it started: they
run in sessions of their own. Every shell step's processes carry FURROW_RUN_ID, FURROW_STEP and
FURROW_ATTEMPT in their environment, which survives `exec` and is inherited by their children, so
the sweeper (or a cancel) on the same machine can find exactly them, and nothing else, even after
their pids were reused. Linux only (/proc); elsewhere this finds nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

from steps.worker_rules import host_of

PROC = Path("/proc")


def on_this_host(worker: str) -> bool:
    """Whether `worker` ("[cluster/]host:pid", as StepRun.worker holds it) ran on this machine."""
    return host_of(worker) == socket.gethostname()


def step_processes(run_id: str, step: str, attempt: int) -> list[int]:
    wanted = {
        f"FURROW_RUN_ID={run_id}".encode(),
        f"FURROW_STEP={step}".encode(),
        f"FURROW_ATTEMPT={attempt}".encode(),
    }
    found: list[int] = []
    if not PROC.is_dir():
        return found
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted <= environ:
            found.append(int(entry.name))
    return found


def kill_step_processes(run_id: str, step: str, attempt: int) -> int:
    """SIGKILL every process of the attempt still running here; returns how many were found."""
    pids = step_processes(run_id, step, attempt)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
