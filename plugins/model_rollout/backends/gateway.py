"""The embedded model gateway as router, deployer and metric source, over its admin HTTP API."""

from __future__ import annotations

import time
from typing import Any

import requests

from model_rollout.backends import capabilities as cap
from model_rollout.backends.base import (
    KEEP,
    BackendUnreachable,
    Route,
    ServedModel,
    TrafficError,
)
from model_rollout.backends.deployer import Deployer
from model_rollout.backends.metric_source import MetricSource
from model_rollout.backends.router import TrafficRouter


class GatewayBackend(TrafficRouter, Deployer, MetricSource):
    """The embedded model gateway (`model-gateway`), through its `/admin` API.

    Route writes are compare-and-set on the gateway's generation: a concurrent writer makes
    us re-read and re-apply, and a route already in the wanted state is not written again,
    so a retried task never applies a traffic change twice. The same makes every call safe to
    repeat: a call that gets no answer (or a 502/503/504) is retried for up to `retry_for`
    seconds, then fails with `BackendUnreachable` saying for how long, so a busy or
    restarting gateway is not mistaken for a change that was refused.

    :param url: the gateway's base URL.
    :param token: the admin token.
    :param timeout: seconds one call may take (the admin API never waits for a model load).
    :param load_timeout: seconds `deploy` waits for a version to load.
    :param retry_for: seconds after which a call that got no answer is not tried again (the
        last attempt may add up to `timeout`); 0: no retries.
    """

    RETRY_STATUSES = (502, 503, 504)
    capabilities = frozenset(
        {
            cap.MIRROR,
            cap.STICKY,
            cap.STAGING_SLOT,
            cap.COMPARE_AND_SET,
            cap.STAGING_REQUESTS,
            cap.UPSTREAM,
            cap.LATENCY_HISTOGRAM,
            cap.KPI_FEEDBACK,
            cap.SHADOW_PAIRING,
            cap.OUTPUT_DISTRIBUTION,
        }
    )

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 15.0,
        load_timeout: float = 300.0,
        retry_for: float = 45.0,
    ):
        if not url:
            raise TrafficError(
                "no gateway URL: set the Airflow connection 'model_gateway_default' "
                "or the env variable MODEL_GATEWAY_URL"
            )
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.retry_for = retry_for
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = requests.Session()
        self.session.headers.update(self._auth)

    def __repr__(self) -> str:  # never show the token
        return f"GatewayBackend({self.url!r})"

    @classmethod
    def from_connection(cls, conn_id=None, *, timeout=None, options=None) -> GatewayBackend:
        """From the Airflow connection (default `model_gateway_default`, env fallbacks
        `MODEL_GATEWAY_URL` / `MODEL_GATEWAY_TOKEN`); with `timeout`, one attempt per call."""
        from model_rollout.orchestration.hooks import GATEWAY_CONN_ID, GatewayHook

        ep = GatewayHook(conn_id or GATEWAY_CONN_ID).endpoint()
        if timeout is None:
            return cls(ep.url, ep.token)
        return cls(ep.url, ep.token, timeout=timeout, retry_for=0)

    def _request(self, method: str, path: str, *, ok=(200,), **kw):
        t0 = time.monotonic()
        delay = 0.25
        while True:
            try:
                r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code in ok:
                    return r
                if r.status_code not in self.RETRY_STATUSES:
                    raise TrafficError(
                        f"gateway {method} {path} answered {r.status_code}: {r.text[:500]}"
                    )
                last = f"answered {r.status_code}: {r.text[:300]}"
            waited = time.monotonic() - t0
            if waited >= self.retry_for:
                raise BackendUnreachable(
                    f"gateway {self.url} unreachable for {waited:.0f} s "
                    f"({method} {path}; last attempt: {last})"
                )
            time.sleep(min(delay, self.retry_for - waited))
            delay = min(delay * 2, 4.0)

    def deploy(
        self,
        model: str,
        version: str,
        *,
        uri: str | None = None,
        upstream: str | None = None,
        batching: str | None = None,
    ) -> None:
        """Register the version, then wait (polling, not holding a call open) until it loaded."""
        body: dict[str, Any] = (
            {"upstream": upstream} if upstream else {"uri": uri or f"models:/{model}/{version}"}
        )
        if batching is not None and not upstream:
            body["batching"] = batching
        path = f"/admin/models/{model}/versions/{version}"
        doc = self._request("PUT", path, json=body, ok=(200, 202)).json()
        deadline = time.monotonic() + self.load_timeout
        while doc.get("status") == "loading":
            if time.monotonic() > deadline:
                raise TrafficError(
                    f"version {version} of {model!r} still loading at gateway {self.url} "
                    f"after {self.load_timeout:.0f} s"
                )
            time.sleep(0.5)
            doc = self._request("GET", path).json()
        if doc.get("status") != "loaded":
            raise TrafficError(
                f"gateway {self.url} could not load version {version} of {model!r} "
                f"from {doc.get('source')}: {doc.get('error')}"
            )

    def retire(self, model: str, version: str) -> None:
        self._request("DELETE", f"/admin/models/{model}/versions/{version}", ok=(200, 404))

    def route(self, model: str) -> Route:
        """The newest committed route: the one waiting for loads (`pending`) when there is one,
        since that is what a write must build on."""
        r = self._request("GET", f"/admin/models/{model}/route", ok=(200, 404))
        if r.status_code == 404:
            return Route(generation=0)
        d = r.json()
        return self._route(d.get("pending") or d)

    @staticmethod
    def _route(d: dict) -> Route:
        return Route(
            generation=int(d.get("generation", 0)),
            weights={str(k): int(v) for k, v in (d.get("weights") or {}).items()},
            shadows=tuple(str(s) for s in d.get("shadows") or ()),
            staging=d.get("staging"),
        )

    def set_traffic(self, model, weights, shadows=(), *, staging=KEEP) -> Route:
        weights = {str(k): int(v) for k, v in weights.items() if int(v) > 0}
        for _attempt in range(10):
            cur = self.route(model)
            want_staging = cur.staging if staging is KEEP else staging
            if (
                cur.same_traffic(weights, shadows)
                and cur.staging == want_staging
                and cur.generation
            ):
                return cur
            body = {
                "generation": cur.generation,
                "weights": weights,
                "shadows": [str(s) for s in shadows],
                "staging": want_staging,
            }
            r = self._request("PUT", f"/admin/models/{model}/route", json=body, ok=(200, 202, 409))
            if r.status_code != 409:  # 202: committed, served once loaded (see wait_ready)
                return self._route(r.json())
            time.sleep(0.05)
        raise TrafficError(
            f"route of {model!r} kept changing under us: 10 stale generations in a row"
        )

    def wait_ready(self, model: str, timeout: float = 300.0) -> None:
        """Block until every routed version of `model` (shadows too) is serving.

        A window must start when the traffic it judges is really flowing, not when the route
        was written (a shadow worker may still be loading its model). Other models' problems
        in `/readyz` do not hold this one up.
        """
        deadline = time.monotonic() + timeout
        mine: list[str] = []
        while time.monotonic() < deadline:
            try:
                r = self.session.get(self.url + "/readyz", timeout=min(self.timeout, 10.0))
                if r.status_code == 200:
                    return
                reasons = (r.json() or {}).get("reasons") or [r.text[:300]]
                mine = [
                    x for x in reasons if x.startswith(f"{model}/") or x.startswith("restoring")
                ]
                if not mine:
                    return
            except (requests.RequestException, ValueError) as e:
                mine = [str(e)]
            time.sleep(0.5)
        raise TrafficError(
            f"{model!r} not ready at gateway {self.url} after {timeout:.0f} s: {mine}"
        )

    def served(self) -> dict[str, ServedModel]:
        models = self._request("GET", "/admin/state").json().get("models") or {}
        return {
            name: ServedModel(
                route=self._route(d),
                versions={str(v): x.get("status") for v, x in (d.get("versions") or {}).items()},
            )
            for name, d in models.items()
        }

    def snapshot(self, model: str, since: float, until: float | None = None) -> dict[str, Any]:
        params = {"since": since} if until is None else {"since": since, "until": until}
        return self._request("GET", f"/admin/models/{model}/stats", params=params).json()

    async def asnapshot(
        self, model: str, since: float, until: float | None = None
    ) -> dict[str, Any]:
        """One attempt, no retries: the caller (the judge's trigger) looks again anyway."""
        import httpx

        params = {"since": since} if until is None else {"since": since, "until": until}
        path = f"/admin/models/{model}/stats"
        try:
            async with httpx.AsyncClient(headers=self._auth, timeout=self.timeout) as client:
                r = await client.get(self.url + path, params=params)
        except httpx.HTTPError as e:
            raise BackendUnreachable(
                f"gateway {self.url} GET {path}: {type(e).__name__}: {e}"
            ) from None
        if r.status_code != 200:
            raise TrafficError(f"gateway GET {path} answered {r.status_code}: {r.text[:300]}")
        try:
            return r.json()
        except ValueError as e:
            raise TrafficError(f"gateway GET {path} answered no JSON: {e}") from None

    def invoke_staging(self, model: str, payload: dict[str, Any]) -> tuple[Any, float]:
        t0 = time.perf_counter()
        r = self._request(
            "POST",
            f"/admin/models/{model}/staging/invocations",
            json=payload,
            ok=(200, 400, 422, 500, 502, 503),
        )
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            raise TrafficError(
                f"staging request for {model!r} answered {r.status_code}: {r.text[:500]}"
            )
        return r.json().get("predictions"), ms
