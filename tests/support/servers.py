"""Start and stop real servers for tests: `mlflow server` and the `model-gateway` CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """os.environ with `values` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with_venv(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ with the venv's bin/ first on PATH (mlflow spawns uvicorn etc. from it)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def wait_http(
    url: str, *, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(
                f"process exited with {proc.returncode} before {url} answered\n{tail}"
            )
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s (last: {last})\n{tail}")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL if it lingers; the group's stragglers too when
    the leader has already gone (a gateway's forkserver and shadow workers outlive it)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived its leader


class MlflowServer:
    """A real `mlflow server` on SQLite in `root` (ready in ~30 s)."""

    def __init__(self, root: Path, port: int | None = None, env: dict[str, str] | None = None):
        self.root = Path(root)
        # MLflow's job runner spawns ~7 huey consumer processes (~250 MB and a few % CPU each,
        # even idle); nothing here uses server-side jobs (webhook delivery does not).
        self.env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "mlflow-server.log"

    def start(self, timeout: float = 300.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--default-artifact-root",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                # No MLflow job runner (GenAI scorers, trace rollups): 8 fewer processes.
                env=env_with_venv({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
                cwd=self.root,
                start_new_session=True,
            )
        wait_http(f"{self.url}/health", timeout=timeout, proc=self.proc, log=self.log)
        return self.url

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class GatewayProcess:
    """The real gateway, started as `model-gateway ...` in its own process group."""

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str = "test-token",
        tracking_uri: str | None = None,
        port: int | None = None,
        store_url: str | None = None,
        store_schema: str | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.token = token
        self.tracking_uri = tracking_uri
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store_url = store_url
        self.store_schema = store_schema
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.log = self.data_dir / f"gateway-{self.port}.log"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 180.0) -> GatewayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(VENV_BIN / "model-gateway"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        if self.store_url:
            cmd += ["--store-url", self.store_url]
        if self.store_schema:
            cmd += ["--store-schema", self.store_schema]
        extra = {"MODEL_GATEWAY_TOKEN": self.token, **self.env}
        if self.tracking_uri:
            extra["MLFLOW_TRACKING_URI"] = self.tracking_uri
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env_with_venv(extra),
                start_new_session=True,
            )
        wait_http(f"{self.url}/healthz", timeout=timeout, proc=self.proc, log=self.log)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_http(f"{self.url}/readyz", timeout=timeout, proc=self.proc, log=self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def restart(self, timeout: float = 60.0) -> GatewayProcess:
        self.stop()
        return self.start(timeout)
