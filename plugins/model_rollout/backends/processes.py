"""The processes of a serving stack on one host (MLServer per version, nginx's workers):
whether one still runs, its workers, stopping its group.

Why a module of its own: the deployer starts servers that outlive the task that started them
and the router waits for nginx's old workers; both need the same answer to "is it running",
which `os.kill(pid, 0)` alone gets wrong for a process that exited but is not reaped yet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def running(pid: int | None) -> bool:
    """Whether the process exists and has not exited (a zombie has)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):  # our own child: reap it if it exited
        done, _ = os.waitpid(int(pid), os.WNOHANG)
        if done:
            return False
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def children(pid: int) -> set[int]:
    """A process's children (Linux /proc; empty where it cannot be read)."""
    try:
        return {int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


def stop_group(pid: int | None, grace: float = 10.0) -> None:
    """TERM a process group, KILL it after `grace` seconds (a no-op when gone)."""
    if not running(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(pid), signal.SIGKILL)
