"""Admin-API and traffic helpers for tests that drive a real gateway over HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import orjson

from support.load import run_load
from support.models import iris_rows, scoring_payload


def admin_client(gw) -> httpx.Client:
    # Loading a version (MLflow import, artifact download) can take minutes on a loaded machine.
    return httpx.Client(base_url=gw.url, headers=gw.auth, timeout=240.0)


def load(client: httpx.Client, model: str, version: str, uri: str | None = None, **spec) -> dict:
    """PUT a version (answered at once: 200 loaded, 202 loading), then wait for its load to
    end; returns the version's final state, `status` "loaded" or "failed" (with `error`)."""
    body = {"uri": uri, **spec} if uri else spec
    r = client.put(f"/admin/models/{model}/versions/{version}", json=body)
    assert r.status_code in (200, 202), r.text
    return wait_loaded(client, model, version)


def wait_loaded(client: httpx.Client, model: str, version: str, timeout: float = 240.0) -> dict:
    """The version's state once it is no longer "loading" (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/admin/models/{model}/versions/{version}")
        assert r.status_code == 200, r.text
        doc = r.json()
        if doc["status"] != "loading":
            return doc
        assert time.monotonic() < deadline, f"{model}/{version} still loading after {timeout} s"
        time.sleep(0.1)


def set_route(
    client: httpx.Client, model: str, weights: dict, shadows=(), staging=None, generation=None
) -> httpx.Response:
    if generation is None:
        generation = client.get(f"/admin/models/{model}/route").json().get("generation", 0)
    return client.put(
        f"/admin/models/{model}/route",
        json={
            "generation": generation,
            "weights": weights,
            "shadows": list(shadows),
            "staging": staging,
        },
    )


def serve(client: httpx.Client, model: str, registry: dict, mapping: dict[str, str]) -> None:
    """Load gateway versions from registry labels: mapping gateway version -> registry label."""
    for gv, label in mapping.items():
        doc = load(client, model, gv, f"models:/{registry['_name']}/{registry[label]}")
        assert doc["status"] == "loaded", doc


def stats(client: httpx.Client, model: str, since: float = 0) -> dict:
    r = client.get(f"/admin/models/{model}/stats", params={"since": since})
    assert r.status_code == 200, r.text
    return r.json()


def arm(snapshot: dict, version: str, arm_name: str = "primary") -> dict | None:
    for a in snapshot["arms"]:
        if a["version"] == version and a["arm"] == arm_name:
            return a
    return None


def fire(
    url: str,
    n: int,
    *,
    concurrency: int = 8,
    routing_key=None,
    rows: int = 1,
    max_seconds: float = 120,
):
    """n scoring requests (bounded) to `url`; returns support.load.LoadResult."""
    bodies = [orjson.dumps(scoring_payload(iris_rows(rows, seed=i))) for i in range(min(n, 500))]

    def make(i: int):
        headers = {}
        if routing_key is not None:
            headers["X-Routing-Key"] = routing_key(i)
        return bodies[i % len(bodies)], headers

    return asyncio.run(
        run_load(url, make, total=n, concurrency=concurrency, max_seconds=max_seconds)
    )


def log_rows(data_dir: Path, model: str) -> list[tuple]:
    """(request_id, version, arm, status) rows of the SQLite request log for a model."""
    with sqlite3.connect(Path(data_dir) / "gateway.db") as conn:
        return conn.execute(
            "SELECT request_id, version, arm, status FROM gw_requests WHERE model = ?", (model,)
        ).fetchall()
