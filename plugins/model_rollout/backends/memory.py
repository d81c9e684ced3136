"""An in-memory serving stack: router, deployer and metric source in one process.

It exists so that the contract every implementation honours can be checked without a
server (tests/backends/test_contract.py runs the same suite on it and on the real ones), and
so that a policy can be tried (`serving: {router: memory, ...}`) where nothing is deployed.
`MemoryStack.serve` plays a model's traffic through the route: weighted split, shadow copies,
paired predictions, outcomes, all counted per second like a real source.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from model_rollout.backends import capabilities as cap
from model_rollout.backends.base import KEEP, Route, ServedModel, TrafficError
from model_rollout.backends.deployer import Deployer
from model_rollout.backends.metric_source import MetricSource
from model_rollout.backends.router import TrafficRouter
from model_rollout.histogram import latency_bucket
from model_rollout.snapshot_schema import SNAPSHOT_SCHEMA

Predict = Callable[[str, dict[str, Any]], Any]


def _constant_predictions(version: str, payload: dict[str, Any]) -> Any:
    """0 per row of an MLflow scoring payload (dataframe_split, dataframe_records,
    instances or inputs)."""
    split = payload.get("dataframe_split")
    rows = (
        (split.get("data") if isinstance(split, dict) else None)
        or payload.get("dataframe_records")
        or payload.get("instances")
        or payload.get("inputs")
        or [None]
    )
    return [0 for _ in rows]


@dataclass
class _Arm:
    requests: int = 0
    errors: int = 0
    latency: dict[str, int] = field(default_factory=dict)
    feedback: list[float] = field(default_factory=lambda: [0, 0.0, 0.0])


@dataclass
class _Model:
    route: Route = field(default_factory=lambda: Route(generation=0))
    versions: dict[str, str] = field(default_factory=dict)
    # second -> (version, arm) -> counts; second -> (shadow, primary) -> [pairs, agree]
    cells: dict[int, dict[tuple[str, str], _Arm]] = field(default_factory=dict)
    pairs: dict[int, dict[tuple[str, str], list[int]]] = field(default_factory=dict)
    served: int = 0
    credit: dict[str, int] = field(default_factory=dict)  # smooth weighted round robin

    def pick(self) -> str:
        """The next version, interleaved by weight (nginx's smooth weighted round robin)."""
        for v, w in self.route.weights.items():
            self.credit[v] = self.credit.get(v, 0) + w
        v = max(sorted(self.route.weights), key=lambda x: self.credit[x])
        self.credit[v] -= sum(self.route.weights.values())
        return v


class MemoryStack:
    """One named in-memory serving system; `MemoryStack.named(conn_id)` is shared by the
    router, deployer and source opened with that connection id in this process."""

    _stacks: ClassVar[dict[str, MemoryStack]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, predict: Predict = _constant_predictions):
        self.models: dict[str, _Model] = defaultdict(_Model)
        self.predict = predict
        self.lock = threading.RLock()

    @classmethod
    def named(cls, name: str | None) -> MemoryStack:
        with cls._lock:
            return cls._stacks.setdefault(name or "memory_default", cls())

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._stacks.clear()

    def serve(
        self,
        model: str,
        requests: int,
        *,
        latency_ms: dict[str, float] | None = None,
        error_every: dict[str, int] | None = None,
        outcome: dict[str, float] | None = None,
        at: float | None = None,
    ) -> None:
        """Play `requests` requests of `model` through its route at unix time `at`.

        The split follows the weights exactly, interleaved (a smooth weighted round robin);
        every shadow sees a copy of each request. Per version: `latency_ms`, an error every
        `error_every[v]`-th request, and an `outcome` posted as feedback for each answer.
        """
        with self.lock:
            m = self.models[model]
            if not m.route.weights:
                raise TrafficError(f"model {model!r} has no route")
            second = int(time.time() if at is None else at)
            cell = m.cells.setdefault(second, {})
            pairs = m.pairs.setdefault(second, {})
            for _ in range(requests):
                v = m.pick()
                m.served += 1
                self._count(cell, v, "primary", m.served, latency_ms, error_every, outcome)
                for s in m.route.shadows:
                    self._count(cell, s, "shadow", m.served, latency_ms, error_every, None)
                    p = pairs.setdefault((s, v), [0, 0])
                    p[0] += 1
                    p[1] += 1

    @staticmethod
    def _count(cell, version, arm, n, latency_ms, error_every, outcome) -> None:
        a = cell.setdefault((version, arm), _Arm())
        a.requests += 1
        every = (error_every or {}).get(version)
        if every and n % every == 0:
            a.errors += 1
            return
        b = str(latency_bucket((latency_ms or {}).get(version, 10.0)))
        a.latency[b] = a.latency.get(b, 0) + 1
        if outcome is not None and version in outcome:
            a.feedback[0] += 1
            a.feedback[1] += outcome[version]
            a.feedback[2] += outcome[version] ** 2


class MemoryBackend(TrafficRouter, Deployer, MetricSource):
    """In-memory router, deployer and metric source (tests, dry runs)."""

    capabilities = frozenset(
        {
            cap.MIRROR,
            cap.STAGING_SLOT,
            cap.COMPARE_AND_SET,
            cap.STAGING_REQUESTS,
            cap.LATENCY_HISTOGRAM,
            cap.KPI_FEEDBACK,
            cap.SHADOW_PAIRING,
        }
    )

    def __init__(self, stack: MemoryStack):
        self.stack = stack

    @classmethod
    def from_connection(cls, conn_id=None, *, timeout=None, options=None) -> MemoryBackend:
        return cls(MemoryStack.named(conn_id))

    # --- router ---------------------------------------------------------------------------
    def route(self, model: str) -> Route:
        with self.stack.lock:
            return self.stack.models[model].route

    def set_traffic(self, model, weights, shadows=(), *, staging=KEEP) -> Route:
        weights = {str(k): int(v) for k, v in weights.items() if int(v) > 0}
        if sum(weights.values()) != 100:
            raise TrafficError(f"weights of {model!r} must sum to 100, got {weights}")
        with self.stack.lock:
            m = self.stack.models[model]
            cur = m.route
            want_staging = cur.staging if staging is KEEP else staging
            if (
                cur.generation
                and cur.same_traffic(weights, shadows)
                and cur.staging == want_staging
            ):
                return cur
            m.route = Route(
                generation=cur.generation + 1,
                weights=weights,
                shadows=tuple(str(s) for s in shadows),
                staging=want_staging,
            )
            return m.route

    def wait_ready(self, model: str, timeout: float = 300.0) -> None:
        with self.stack.lock:
            m = self.stack.models[model]
            routed = [*m.route.weights, *m.route.shadows]
            absent = [v for v in routed if m.versions.get(v) != "loaded"]
        if absent:
            raise TrafficError(f"{model!r}: routed versions {absent} are not deployed")

    def served(self) -> dict[str, ServedModel]:
        with self.stack.lock:
            return {
                name: ServedModel(route=m.route, versions=dict(m.versions))
                for name, m in self.stack.models.items()
                if m.route.generation or m.versions
            }

    # --- deployer -------------------------------------------------------------------------
    def deploy(self, model, version, *, uri=None, upstream=None, batching=None) -> None:
        if upstream:
            raise TrafficError("the memory stack serves no upstream URLs (capability upstream)")
        with self.stack.lock:
            self.stack.models[model].versions[str(version)] = "loaded"

    def retire(self, model: str, version: str) -> None:
        with self.stack.lock:
            self.stack.models[model].versions.pop(str(version), None)

    def invoke_staging(self, model: str, payload: dict[str, Any]) -> tuple[Any, float]:
        staging = self.route(model).staging
        if staging is None:
            raise TrafficError(f"model {model!r} has no version in staging")
        t0 = time.perf_counter()
        out = self.stack.predict(staging, payload)
        return out, (time.perf_counter() - t0) * 1000

    # --- metric source --------------------------------------------------------------------
    def snapshot(self, model: str, since: float, until: float | None = None) -> dict[str, Any]:
        lo, hi = int(since), (None if until is None else int(until))
        with self.stack.lock:
            m = self.stack.models[model]
            seconds = [t for t in m.cells if t >= lo and (hi is None or t < hi)]
            arms: dict[tuple[str, str], _Arm] = {}
            pairs: dict[tuple[str, str], list[int]] = {}
            for t in seconds:
                for key, a in m.cells[t].items():
                    acc = arms.setdefault(key, _Arm())
                    acc.requests += a.requests
                    acc.errors += a.errors
                    for b, n in a.latency.items():
                        acc.latency[b] = acc.latency.get(b, 0) + n
                    acc.feedback = [x + y for x, y in zip(acc.feedback, a.feedback, strict=True)]
                for key, p in m.pairs.get(t, {}).items():
                    acc_p = pairs.setdefault(key, [0, 0])
                    acc_p[0] += p[0]
                    acc_p[1] += p[1]
            weights = dict(m.route.weights)
        return {
            "schema": SNAPSHOT_SCHEMA,
            "model": model,
            "since": float(since),
            "until": None if until is None else float(until),
            "weights": weights,
            "arms": [
                {
                    "version": v,
                    "arm": arm,
                    "requests": a.requests,
                    "errors": a.errors,
                    "latency": {"counts": a.latency},
                    **(
                        {"feedback": dict(zip(("count", "sum", "sum_sq"), a.feedback, strict=True))}
                        if a.feedback[0]
                        else {}
                    ),
                }
                for (v, arm), a in sorted(arms.items())
            ],
            "pairs": [
                {
                    "shadow_version": s,
                    "primary_version": p,
                    "pairs": n,
                    "agree": agree,
                    "abs_delta_sum": float(n - agree),
                    "abs_delta_sq_sum": float(n - agree),
                }
                for (s, p), (n, agree) in sorted(pairs.items())
            ],
        }
