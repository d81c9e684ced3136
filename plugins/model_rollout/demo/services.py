"""Start, watch and stop the demo's long-running processes, each in its own session.

Why pidfiles with the kernel's start time: `--stop` and a re-run must stop what a previous
demo started and nothing else. A pid alone can be reused; (pid, start ticks) cannot. Every
service is a session leader (`start_new_session`), so whatever it spawned (Airflow's
scheduler, task processes, uvicorn workers) is found again by session id and stopped too,
even after the leader is gone: Linux never reuses a pid still in use as a session id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import requests


class ServiceError(RuntimeError):
    """A service could not be started or did not become ready; the message says why."""


@dataclass
class Service:
    """One process the demo runs.

    :param name: short name (pidfile and log file names).
    :param cmd: argv; the process becomes a session leader.
    :param port: the loopback port it must own (checked free before start).
    :param ready: returns None when ready, else a short reason (polled).
    :param leader_signal: signal only the leader with this first and give it time to stop its
        children (airflow standalone: SIGINT, its own clean shutdown), instead of SIGTERM to
        the whole session at once.
    """

    name: str
    cmd: list[str]
    port: int
    ready: Callable[[], str | None]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    leader_signal: int | None = None
    proc: subprocess.Popen | None = None
    started: float = 0.0  # time.monotonic() at spawn


class Services:
    """The demo's processes under one work dir: `run/<name>.json` pidfiles, `logs/<name>.log`."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.run_dir = self.workdir / "run"
        self.log_dir = self.workdir / "logs"

    # -- pidfiles ---------------------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def records(self) -> list[dict]:
        """Pidfile records of whatever a demo started and may still run."""
        if not self.run_dir.is_dir():
            return []
        out = []
        for p in sorted(self.run_dir.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                p.unlink(missing_ok=True)
        return out

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # -- start ------------------------------------------------------------------------------
    def start(self, svc: Service) -> None:
        """Spawn `svc` as a session leader, output to its log, and record its pidfile."""
        check_port_free(svc.port, svc.name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        svc.started = time.monotonic()
        with open(self.log_path(svc.name), "wb") as log:
            svc.proc = subprocess.Popen(
                svc.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=svc.env,
                cwd=svc.cwd,
                start_new_session=True,
            )
        record = {
            "name": svc.name,
            "pid": svc.proc.pid,
            "start_ticks": start_ticks(svc.proc.pid),
            "port": svc.port,
            "leader_signal": svc.leader_signal,
            "cmd": " ".join(svc.cmd[:3]),
        }
        self._pidfile(svc.name).write_text(json.dumps(record))

    def wait_ready(self, svc: Service, timeout: float) -> float:
        """Poll `svc.ready` until it says ready; seconds since spawn. Fails early if it exits."""
        t0 = time.monotonic()
        last = "not polled yet"
        while time.monotonic() - t0 < timeout:
            if svc.proc is not None and svc.proc.poll() is not None:
                raise ServiceError(
                    f"{svc.name} exited with code {svc.proc.returncode} before it was ready; "
                    f"last lines of {self.log_path(svc.name)}:\n{self.tail(svc.name)}"
                )
            try:
                why = svc.ready()
            except requests.RequestException as e:
                why = type(e).__name__
            if why is None:
                return time.monotonic() - svc.started
            last = why
            time.sleep(1.0)
        raise ServiceError(
            f"{svc.name} not ready within {timeout:.0f} s (last: {last}); last lines of "
            f"{self.log_path(svc.name)}:\n{self.tail(svc.name)}"
        )

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- stop -------------------------------------------------------------------------------
    def stop_all(
        self,
        say: Callable[[str], None] = print,
        timeout: float = 45.0,
        only: Collection[str] | None = None,
    ) -> int:
        """Stop every recorded service (or those named in `only`) and whatever it spawned.

        Returns how many were running.
        """
        recs = [r for r in self.records() if only is None or r["name"] in only]
        running = []
        for rec in recs:
            pid = int(rec["pid"])
            leader = start_ticks(pid) == rec.get("start_ticks")
            members = session_members(pid)
            if not leader and not members:
                self._pidfile(rec["name"]).unlink(missing_ok=True)
                continue
            running.append((rec, leader))
        if not running:
            return 0
        say("stopping " + ", ".join(r["name"] for r, _ in running) + " ...")
        # Leaders that stop their own children get their signal alone first; the rest SIGTERM
        # as a whole session.
        leaders = []
        for rec, leader in running:
            pid = int(rec["pid"])
            if leader and rec.get("leader_signal"):
                _signal_pid(pid, int(rec["leader_signal"]))
                leaders.append(pid)
            else:
                _signal_session(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout / 2
        while any(start_ticks(p) is not None for p in leaders) and time.monotonic() < deadline:
            time.sleep(0.5)
        sessions = [int(r["pid"]) for r, _ in running]
        for sid in sessions:  # whatever a leader left behind, or a leader that ignored us
            _signal_session(sid, signal.SIGTERM)
        deadline = time.monotonic() + timeout / 2
        while any(session_members(s) for s in sessions) and time.monotonic() < deadline:
            time.sleep(0.5)
        for sid in sessions:
            if left := session_members(sid):
                names = sorted({_name(p) for p in left})
                say(f"still running after {timeout:.0f} s, killed: {', '.join(names)}")
                _signal_session(sid, signal.SIGKILL)
        for rec, _ in running:
            self._pidfile(rec["name"]).unlink(missing_ok=True)
        return len(running)


# -- processes ----------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
    return str(pid)


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (with the pid: a unique identity)."""
    f = _stat_fields(pid)
    if f is None or f[0] == "Z":
        return None
    return int(f[19])


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes in session `sid` or process group `sid`."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if f and f[0] != "Z" and (int(f[2]) == sid or int(f[3]) == sid):
            out.append(int(entry.name))
    return out


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_session(sid: int, sig: int) -> None:
    """Signal every process group found in the session (children may have their own)."""
    groups = set()
    for pid in session_members(sid):
        f = _stat_fields(pid)
        if f:
            groups.add(int(f[2]))
        _signal_pid(pid, sig)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


# -- ports --------------------------------------------------------------------------------
def check_port_free(port: int, purpose: str) -> None:
    """Raise ServiceError naming the holder when something already listens on `port`."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return
        except OSError:
            pass
    holder = port_holder(port)
    who = f"pid {holder[0]} ({holder[1]})" if holder else "another process"
    raise ServiceError(
        f"port {port} (for {purpose}) is taken by {who}, which this demo did not start; "
        f"stop it and run the demo again"
    )


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on TCP `port`, if it can be found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                link = os.readlink(fd.path)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                    return int(entry.name), cmd.replace(b"\0", b" ").decode(errors="replace")[:120]
    return None


def http_ok(url: str, timeout: float = 3.0) -> str | None:
    """None when `url` answers 200, else a short reason (a `Service.ready` building block)."""
    try:
        r = requests.get(url, timeout=timeout)
    except requests.RequestException as e:
        return type(e).__name__
    return None if r.status_code == 200 else f"HTTP {r.status_code}"
