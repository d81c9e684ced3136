"""The few Airflow REST v2 calls the demo needs (login, health, unpause, runs, task states, XCom).

Why plain HTTP and not the Airflow client library: the demo process must not import or
configure Airflow itself; it only watches the `airflow standalone` it started.
"""

from __future__ import annotations

import ast
import contextlib
import json
from pathlib import Path
from typing import Any

import requests

USER = "admin"


class AirflowAPI:
    """A logged-in session against the api-server; re-logs in once on 401."""

    def __init__(self, url: str, password_file: Path):
        self.url = url.rstrip("/")
        self.password_file = Path(password_file)
        self.s = requests.Session()

    def password(self) -> str:
        """The generated admin password (written by `airflow standalone` on first start)."""
        return json.loads(self.password_file.read_text())[USER]

    def login(self) -> None:
        r = self.s.post(
            f"{self.url}/auth/token",
            json={"username": USER, "password": self.password()},
            timeout=20,
        )
        r.raise_for_status()
        self.s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def _call(self, method: str, path: str, ok=(200,), **kw) -> requests.Response | None:
        """The response, None on 404; raises on anything else not in `ok`."""
        kw.setdefault("timeout", 60)
        r = self.s.request(method, f"{self.url}{path}", **kw)
        if r.status_code == 401:
            self.login()
            r = self.s.request(method, f"{self.url}{path}", **kw)
        if r.status_code == 404:
            return None
        if r.status_code not in ok:
            raise requests.HTTPError(
                f"Airflow {method} {path} answered {r.status_code}: {r.text[:300]}", response=r
            )
        return r

    # -- readiness ----------------------------------------------------------------------------
    def health_problem(self) -> str | None:
        """None when every component reports healthy, else the first one that does not."""
        r = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        if r.status_code != 200:
            return f"health answered HTTP {r.status_code}"
        for name, comp in r.json().items():
            if isinstance(comp, dict) and comp.get("status") != "healthy":
                return f"{name} is {comp.get('status')}"
        return None

    # -- DAGs and runs ------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict | None:
        r = self._call("GET", f"/api/v2/dags/{dag_id}")
        return r.json() if r else None

    def import_errors(self) -> list[dict]:
        r = self._call("GET", "/api/v2/importErrors")
        return (r.json().get("import_errors") or []) if r else []

    def unpause(self, dag_id: str) -> None:
        self.set_paused(dag_id, False)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def warm_up_execution_api(self) -> None:
        """One request to the Execution API (what task processes call), answered or not.

        Its first request has stalled the single-worker api-server for ~50 s on a busy machine,
        long enough for the first task's start call to time out and the task to be retried;
        paying that before the first rollout keeps the rollout's own timing honest.
        """
        with contextlib.suppress(requests.RequestException):
            requests.get(f"{self.url}/execution/health", timeout=300)

    def run(self, dag_id: str, run_id: str) -> dict | None:
        r = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return r.json() if r else None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        r = self._call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200}
        )
        return (r.json().get("task_instances") or []) if r else []

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The XCom value as JSON-ish Python, or None when it does not exist."""
        r = self._call(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true", "stringify": "false"},
        )
        if r is None:
            return None
        value = r.json().get("value")
        if isinstance(value, str):
            for parse in (json.loads, ast.literal_eval):
                try:
                    return parse(value)
                except (ValueError, SyntaxError):
                    continue
        return value

    def plugin_pages(self) -> list[tuple[str, str]]:
        """(name, URL) of the UI pages plugins add (external views and React apps)."""
        r = self._call("GET", "/api/v2/plugins")
        pages = []
        for plugin in (r.json().get("plugins") or []) if r else []:
            for kind in ("external_views", "react_apps"):
                for view in plugin.get(kind) or []:
                    route = view.get("url_route")
                    href = f"{self.url}/plugin/{route}" if route else view.get("href") or ""
                    if href.startswith("/"):
                        href = self.url + href
                    pages.append((str(view.get("name") or plugin.get("name")), href))
        return pages
