"""Fakes for the Rollouts page unit tests: a serving stack with per-second cells, a registry."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest

from model_rollout.backends import Route, ServedModel
from model_rollout.histogram import latency_bucket
from model_rollout.registry import VersionInfo

USER, PASSWORD = "admin", "rollouts-ui-test"


class FakeGateway:
    """A serving stack (its own router and metric source) with per-second statistics cells
    and random latencies; `snapshot(model, since)` sums them like the gateway."""

    url = "http://127.0.0.1:1"

    def __init__(self, model: str, weights: dict[str, int]):
        self.model = model
        self.weights = weights
        self.cells: dict[int, dict[tuple[str, str], dict[str, Any]]] = {}

    def add(self, t: int, version: str, *, requests: int, errors: int, latency_ms: float) -> None:
        cell = self.cells.setdefault(t, {}).setdefault(
            (version, "primary"), {"requests": 0, "errors": 0, "latency": {}}
        )
        cell["requests"] += requests
        cell["errors"] += errors
        rng = random.Random(t * 31 + int(version))
        for _ in range(requests - errors):
            b = str(latency_bucket(latency_ms * rng.uniform(0.7, 1.6)))
            cell["latency"][b] = cell["latency"].get(b, 0) + 1

    def router(self) -> FakeGateway:
        return self

    def metrics(self) -> FakeGateway:
        return self

    def served(self) -> dict[str, ServedModel]:
        route = Route(generation=3, weights=dict(self.weights))
        return {self.model: ServedModel(route, {v: "loaded" for v in self.weights})}

    def snapshot(self, model: str, since: float) -> dict[str, Any]:
        arms: dict[tuple[str, str], dict[str, Any]] = {}
        for t, cells in self.cells.items():
            if t < since:
                continue
            for key, c in cells.items():
                a = arms.setdefault(key, {"requests": 0, "errors": 0, "latency": {}})
                a["requests"] += c["requests"]
                a["errors"] += c["errors"]
                for b, n in c["latency"].items():
                    a["latency"][b] = a["latency"].get(b, 0) + n
        return {
            "model": model,
            "since": since,
            "weights": self.weights,
            "arms": [
                {
                    "version": v,
                    "arm": arm,
                    "requests": a["requests"],
                    "errors": a["errors"],
                    "latency": {"counts": a["latency"]},
                }
                for (v, arm), a in arms.items()
            ],
        }


class FakeRegistry:
    """aliases() and all_versions() of one model."""

    tracking_uri = "http://127.0.0.1:5000"

    def __init__(self, model: str, versions: dict[str, dict[str, str]], aliases: dict[str, str]):
        self.model = model
        self._versions = versions
        self._aliases = aliases

    def model_exists(self, name: str) -> bool:
        return name == self.model

    def aliases(self, name: str) -> dict[str, str]:
        return dict(self._aliases) if name == self.model else {}

    def all_versions(self, name: str) -> list[VersionInfo]:
        if name != self.model:
            return []
        return [
            VersionInfo(name, v, f"models:/{name}/{v}", None, "READY", None, (), tags, 0)
            for v, tags in sorted(self._versions.items(), key=lambda kv: int(kv[0]))
        ]


def judge_verdict(snapshot: dict[str, Any], baseline: str, candidate: str) -> dict[str, Any]:
    """The real judge's verdict on a canary snapshot (JSON form)."""
    from model_rollout.judge.config import JudgeConfig
    from model_rollout.judge.evaluate import evaluate

    return evaluate(
        snapshot, baseline=baseline, candidate=candidate, mode="canary", config=JudgeConfig()
    ).to_json()


def chromium_path() -> str:
    """Debian's chromium, or skip (fail under CI=true: `make test` installs it)."""
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        msg = f"{path} is missing: apt-get install -y chromium (make test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def wait_until(check, timeout: float, what: str):
    """Poll `check()` until truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout} s")
