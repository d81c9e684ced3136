"""nginx as a traffic router: weighted upstreams, `mirror`, a staging path, graceful reload.

The same knobs Argo Rollouts and Flagger drive on ingress-nginx, on a plain nginx: per model,
this router writes an `upstream` of the live versions with their weights (nginx's smooth
weighted round robin), one `mirror` per shadow version, a `/staging/<model>/` location, and a
location that answers the route's generation; it checks the whole config with `nginx -t`,
then sends the master SIGHUP (a graceful reload: old workers finish their requests, new ones
take the new route). A config that fails the check is put back and nothing is reloaded.

Files, under the connection's `state_dir`: `nginx/http.d/<model>.conf` (upstreams, for the
`http` block), `nginx/server.d/<model>.conf` (locations, for a `server` block),
`nginx/routes/<model>.json` (the route, the truth `route()` reads). An existing nginx takes
the router by including both folders (see `main_config`, which the tests and the demo run).
Versions' addresses come from `endpoints` (written by the deployer). Clients call
`/models/<model>/invocations`, as on the gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import requests
from pydantic import BaseModel, ConfigDict, Field

from model_rollout.backends import capabilities as cap
from model_rollout.backends.base import KEEP, Route, ServedModel, TrafficError
from model_rollout.backends.endpoints import (
    Endpoints,
    check_name,
    file_lock,
    stack_settings,
    write_atomic,
)
from model_rollout.backends.processes import children, running
from model_rollout.backends.router import TrafficRouter

ROUTE_PATH = "/_model_rollout/routes"  # GET <ROUTE_PATH>/<model>: the generation nginx serves
RELOAD_WAIT = 30.0  # s a reload waits for the old workers to finish their requests


class NginxOptions(BaseModel):
    """`serving.router_options` of the nginx router."""

    model_config = ConfigDict(extra="forbid")

    nginx: str = Field("nginx", description="The nginx executable (for `nginx -t`).")
    keepalive: int = Field(
        16, ge=0, le=1024, description="Idle connections kept open to each upstream."
    )
    read_timeout: float = Field(
        60.0, gt=0, le=3600, description="Seconds nginx waits for a version's answer."
    )


def main_config(state_dir: str | Path, listen: str) -> str:
    """An nginx.conf serving this router's models on `listen` (e.g. "127.0.0.1:8080"); an
    existing nginx needs only the two `include`s."""
    d = Path(state_dir) / "nginx"
    return f"""# written by model_rollout (backends/nginx.py: main_config)
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_shutdown_timeout 20s;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    include {d}/http.d/*.conf;
    server {{
        listen {listen};
        include {d}/server.d/*.conf;
        location = /_model_rollout/healthz {{ return 200 'ok\\n'; }}
        location / {{ return 404 'no such model\\n'; }}
    }}
}}
"""


def _id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class NginxRouter(TrafficRouter):
    """Splits, mirrors and stages traffic with nginx config and a graceful reload."""

    capabilities = frozenset({cap.MIRROR, cap.STAGING_SLOT})
    options_model = NginxOptions

    def __init__(
        self,
        state_dir: str | Path,
        url: str,
        *,
        options: NginxOptions | None = None,
        nginx_conf: str | Path | None = None,
        pid_file: str | Path | None = None,
    ):
        self.dir = Path(state_dir) / "nginx"
        self.url = url.rstrip("/")
        self.endpoints = Endpoints(state_dir)
        self.options = options or NginxOptions()
        self.nginx_conf = Path(nginx_conf or self.dir / "nginx.conf")
        self.pid_file = Path(pid_file or self.dir / "nginx.pid")

    def __repr__(self) -> str:
        return f"NginxRouter({self.url!r})"

    @classmethod
    def from_connection(cls, conn_id=None, *, timeout=None, options=None) -> NginxRouter:
        """From the stack's connection (`endpoints.stack_settings`): the URL is nginx's
        listen address; extra `nginx_conf` and `nginx_pid` when not under `state_dir`."""
        s = stack_settings(conn_id)
        if not s["url"]:
            raise TrafficError("the stack's connection names no URL (where nginx listens)")
        return cls(
            s["state_dir"],
            s["url"],
            options=cls.parse_options(options),
            nginx_conf=s.get("nginx_conf"),
            pid_file=s.get("nginx_pid"),
        )

    # --- route state ----------------------------------------------------------------------
    def _route_file(self, model: str) -> Path:
        return self.dir / "routes" / f"{check_name('model', model)}.json"

    def route(self, model: str) -> Route:
        try:
            doc = json.loads(self._route_file(model).read_text())
        except FileNotFoundError:
            return Route(generation=0)
        return Route(
            generation=int(doc["generation"]),
            weights={str(k): int(v) for k, v in doc["weights"].items()},
            shadows=tuple(doc.get("shadows", ())),
            staging=doc.get("staging"),
        )

    def set_traffic(self, model, weights, shadows=(), *, staging=KEEP) -> Route:
        model = check_name("model", model)
        weights = {check_name("version", str(k)): int(v) for k, v in weights.items() if int(v) > 0}
        shadows = [check_name("version", str(s)) for s in shadows]
        if weights and sum(weights.values()) != 100:
            raise TrafficError(f"weights of {model!r} must sum to 100, got {weights}")
        with file_lock(self.dir / "locks" / f"{model}.lock"):
            cur = self.route(model)
            want_staging = cur.staging if staging is KEEP else staging
            if want_staging is not None:
                want_staging = check_name("version", str(want_staging))
            if (
                cur.generation
                and cur.same_traffic(weights, shadows)
                and cur.staging == want_staging
            ):
                return cur
            new = Route(
                generation=cur.generation + 1,
                weights=weights,
                shadows=tuple(s for s in shadows if s not in weights),
                staging=want_staging,
            )
            self._apply(model, new)
            return new

    def _apply(self, model: str, route: Route) -> None:
        """Write the model's config, check the whole config, keep the route, reload."""
        upstreams, locations = self._render(model, route)
        files = {
            self.dir / "http.d" / f"{model}.conf": upstreams,
            self.dir / "server.d" / f"{model}.conf": locations,
        }
        before = {f: f.read_text() if f.exists() else None for f in files}
        for f, text in files.items():
            write_atomic(f, text)
        problem = self._check_config()
        if problem:
            for f, text in before.items():
                if text is None:
                    f.unlink(missing_ok=True)
                else:
                    write_atomic(f, text)
            raise TrafficError(f"nginx refused the route of {model!r}: {problem}")
        write_atomic(self._route_file(model), json.dumps(route.to_json(), sort_keys=True))
        self._reload()

    def _render(self, model: str, route: Route) -> tuple[str, str]:
        """(upstream blocks, location blocks) of one model's route."""
        mid = _id(model)
        keep = self.options.keepalive
        proxy = (
            'proxy_http_version 1.1; proxy_set_header Connection ""; '
            f"proxy_read_timeout {self.options.read_timeout:g}s;"
        )
        head = f"# {model}: generation {route.generation}, written by model_rollout\n"
        ups, locs = [head], [head]

        def upstream(name: str, servers: list[str]) -> None:
            lines = "".join(f"    server {s};\n" for s in servers)
            ka = f"    keepalive {keep};\n" if keep else ""
            ups.append(f"upstream {name} {{\n{lines}{ka}}}\n")

        def host(version: str) -> str:
            return self.endpoints.url(model, version).split("://", 1)[-1]

        if route.weights:
            live = f"mr_{mid}_live"
            upstream(live, [f"{host(v)} weight={w}" for v, w in sorted(route.weights.items())])
            mirrors = ""
            for s in route.shadows:
                upstream(f"mr_{mid}_{_id(s)}", [host(s)])
                mirrors += f"    mirror /_mirror/{model}/{s};\n"
                locs.append(
                    f"location = /_mirror/{model}/{s} {{\n    internal;\n"
                    f"    proxy_set_header X-Model-Rollout-Arm shadow; {proxy}\n"
                    f"    proxy_pass http://mr_{mid}_{_id(s)}/invocations;\n}}\n"
                )
            locs.append(
                f"location = /models/{model}/invocations {{\n{mirrors}"
                f"    mirror_request_body on;\n    {proxy}\n"
                f"    proxy_pass http://{live}/invocations;\n}}\n"
            )
        if route.staging:
            name = f"mr_{mid}_{_id(route.staging)}"
            if route.staging not in route.shadows:
                upstream(name, [host(route.staging)])
            locs.append(
                f"location = /staging/{model}/invocations {{\n    {proxy}\n"
                f"    proxy_pass http://{name}/invocations;\n}}\n"
            )
        locs.append(
            f"location = {ROUTE_PATH}/{model} {{\n    default_type application/json;\n"
            f"    return 200 '{json.dumps({'generation': route.generation})}';\n}}\n"
        )
        return "".join(ups), "".join(locs)

    def _check_config(self) -> str:
        """`nginx -t` on the whole config: "" when it passes, else nginx's complaint."""
        try:
            r = subprocess.run(
                [
                    self.options.nginx,
                    "-t",
                    "-q",
                    "-c",
                    str(self.nginx_conf),
                    "-p",
                    str(self.dir),
                    "-e",
                    str(self.dir / "error.log"),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"cannot run {self.options.nginx} -t: {e}"
        return "" if r.returncode == 0 else (r.stderr or r.stdout).strip()[-1000:]

    def _reload(self) -> None:
        """SIGHUP to the master: a graceful reload. Returns once the workers that served the
        old config have exited (or after RELOAD_WAIT s): until then a new connection may
        still land on one of them and be answered by the old route."""
        try:
            pid = int(self.pid_file.read_text().strip())
            old = children(pid)
            os.kill(pid, signal.SIGHUP)
        except (FileNotFoundError, ValueError, ProcessLookupError) as e:
            raise TrafficError(
                f"nginx is not running (master pid from {self.pid_file}: {e}); the route is "
                "written and takes effect when it starts"
            ) from None
        deadline = time.monotonic() + RELOAD_WAIT
        while old and time.monotonic() < deadline:
            old = {p for p in old if running(p)}
            time.sleep(0.02)

    # --- readiness ------------------------------------------------------------------------
    def _served_generation(self, model: str) -> int | None:
        try:
            r = requests.get(
                f"{self.url}{ROUTE_PATH}/{model}", headers={"Connection": "close"}, timeout=5
            )
        except requests.RequestException:
            return None
        return int(r.json()["generation"]) if r.status_code == 200 else None

    def wait_ready(self, model: str, timeout: float = 300.0) -> None:
        route = self.route(model)
        deadline = time.monotonic() + timeout
        while True:
            served = self._served_generation(model)
            routed = [*route.weights, *route.shadows]
            absent = [
                v for v in routed if (self.endpoints.get(model, v) or {}).get("status") != "loaded"
            ]
            if served == route.generation and not absent:
                return
            if time.monotonic() > deadline:
                why = []
                if served != route.generation:
                    why.append(f"nginx serves generation {served}, not {route.generation}")
                if absent:
                    why.append(f"versions {absent} are not serving")
                raise TrafficError(
                    f"route of {model!r} not live after {timeout:.0f} s: {'; '.join(why)}"
                )
            time.sleep(0.05)

    def served(self) -> dict[str, ServedModel]:
        out = {}
        folder = self.dir / "routes"
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            model = f.stem
            versions = {v: str(e.get("status", "?")) for v, e in self.endpoints.of(model).items()}
            out[model] = ServedModel(route=self.route(model), versions=versions)
        return out
