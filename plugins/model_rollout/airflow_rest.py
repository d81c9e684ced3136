"""Airflow's REST API (v2) as the operator tools use it: runs, task states, XCom, actions.

Why plain HTTP and not Airflow's client library or its database: the `model-rollout` CLI and
the demo run outside Airflow (an operator's laptop, a CI job) and must not import or
configure Airflow itself. Credentials: a bearer token (`AIRFLOW_API_TOKEN`) or a username and
password exchanged at `/auth/token` (`AIRFLOW_API_USERNAME` / `AIRFLOW_API_PASSWORD`), the
usual Airflow login; the URL from `AIRFLOW_API_URL`.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
from typing import Any

import requests


class AirflowRest:
    """A logged-in session against the api-server; re-logs in once on 401."""

    def __init__(self, url: str, *, username: str = "", password: str = "", token: str = ""):
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.s = requests.Session()
        if token:
            self.s.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_env(cls) -> AirflowRest:
        return cls(
            os.environ.get("AIRFLOW_API_URL", "http://127.0.0.1:8080"),
            username=os.environ.get("AIRFLOW_API_USERNAME", ""),
            password=os.environ.get("AIRFLOW_API_PASSWORD", ""),
            token=os.environ.get("AIRFLOW_API_TOKEN", ""),
        )

    def __repr__(self) -> str:
        return f"AirflowRest({self.url!r}, username={self.username!r})"

    def password(self) -> str:
        return self._password

    def login(self) -> None:
        if not self.username:
            raise PermissionError(
                f"Airflow at {self.url} wants a login: set AIRFLOW_API_TOKEN, or "
                "AIRFLOW_API_USERNAME and AIRFLOW_API_PASSWORD"
            )
        r = self.s.post(
            f"{self.url}/auth/token",
            json={"username": self.username, "password": self.password()},
            timeout=20,
        )
        if r.status_code in (401, 403):
            raise PermissionError(f"Airflow at {self.url} refused the login of {self.username!r}")
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

    # -- actions ---------------------------------------------------------------------------------
    def runs(self, dag_id: str, limit: int = 20) -> list[dict]:
        """The DAG's runs, newest first."""
        r = self._call(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns",
            params={"limit": limit, "order_by": "-start_date"},
        )
        return (r.json().get("dag_runs") or []) if r else []

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> dict:
        r = self._call(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
        )
        if r is None:
            raise LookupError(f"no DAG {dag_id} in Airflow at {self.url}")
        return r.json()

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What "Mark success" / "Mark failed" do in the UI."""
        self._call(
            "PATCH",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
            json={"new_state": state},
        )
