"""Where each deployed version listens: the service registry of a serving stack on one host.

Why a folder of JSON files: the deployer (MLServer, one server per version) and the router
(nginx) are separate backends, run by separate Airflow tasks, so they meet on what Kubernetes
would give them as Services and pod labels: a version's address and its scrape target. The
deployer writes an entry when a version serves and removes it when it retires; the router
resolves versions through it; Prometheus reads `targets.json` (file_sd) to scrape each
version's server with `model` and `version` labels. Every write is atomic (write, rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model_rollout.backends.base import TrafficError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """Model names and versions end up in file names, URLs and nginx config: letters, digits,
    `_`, `.`, `-` only."""
    if not NAME.match(str(value)):
        raise TrafficError(
            f"{kind} {value!r} cannot be served by this stack: expected letters, digits, "
            "'_', '.' or '-' (at most 128, starting with a letter or digit)"
        )
    return str(value)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two tasks changing one model's route)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Endpoints:
    """`<state_dir>/endpoints/<model>/<version>.json`: {url, metrics_url, pid, status...}."""

    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir) / "endpoints"

    def _file(self, model: str, version: str) -> Path:
        return self.root / check_name("model", model) / f"{check_name('version', version)}.json"

    def put(self, model: str, version: str, **entry: Any) -> None:
        write_atomic(self._file(model, version), json.dumps(entry, sort_keys=True))
        self.write_scrape_targets()

    def get(self, model: str, version: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._file(model, version).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def of(self, model: str) -> dict[str, dict[str, Any]]:
        """Every version of `model` with an entry."""
        folder = self.root / check_name("model", model)
        out = {}
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            with contextlib.suppress(json.JSONDecodeError, FileNotFoundError):
                out[f.stem] = json.loads(f.read_text())
        return out

    def models(self) -> list[str]:
        return (
            sorted(d.name for d in self.root.iterdir() if d.is_dir()) if self.root.is_dir() else []
        )

    def remove(self, model: str, version: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(model, version).unlink()
        self.write_scrape_targets()

    def url(self, model: str, version: str) -> str:
        """The address of a serving version; TrafficError when it is not deployed."""
        entry = self.get(model, version)
        if not entry or not entry.get("url"):
            raise TrafficError(
                f"version {version} of {model!r} is not deployed here (no endpoint in "
                f"{self.root}): deploy it before routing traffic to it"
            )
        return str(entry["url"])

    def write_scrape_targets(self) -> None:
        """`targets.json` for Prometheus' file_sd: one target per version's metrics port,
        labelled with its model and version (what pod labels give on Kubernetes)."""
        groups = []
        for model in self.models():
            for version, e in self.of(model).items():
                if e.get("metrics_url"):
                    host = str(e["metrics_url"]).split("://", 1)[-1].rstrip("/")
                    groups.append(
                        {"targets": [host], "labels": {"model": model, "version": version}}
                    )
        write_atomic(self.root / "targets.json", json.dumps(groups, indent=1))


STACK_CONN_ID = "model_serving_default"


def stack_settings(conn_id: str | None) -> dict[str, Any]:
    """The connection a stack's router and deployer share: the front door's URL (host/port)
    and `state_dir` (extra), env fallbacks `MODEL_SERVING_URL` and `MODEL_SERVING_DIR`; other
    extra fields pass through (`mlserver`: the MLServer executable)."""
    from model_rollout.orchestration.hooks import connection_settings

    conn_id = conn_id or STACK_CONN_ID
    out = connection_settings(conn_id)
    out.setdefault("url", os.environ.get("MODEL_SERVING_URL", ""))
    out.setdefault("state_dir", os.environ.get("MODEL_SERVING_DIR", ""))
    if not out["state_dir"]:
        raise TrafficError(
            f"connection {conn_id!r} names no state_dir (extra field) and MODEL_SERVING_DIR is "
            "unset: the router and the deployer need the folder where versions' endpoints are"
        )
    out["url"] = str(out["url"]).rstrip("/")
    return out
