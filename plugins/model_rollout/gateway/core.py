"""The gateway's state and behaviour, independent of HTTP: versions, routes, invocation,
shadows, feedback, snapshots, readiness, and keeping in step with other replicas.

Everything here runs on the event loop; blocking work (model loads and predictions, store
I/O) goes to threads.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from model_rollout.gateway.batching import check_mode
from model_rollout.gateway.config import Settings
from model_rollout.gateway.models import LoadedVersion, PyfuncVersion, Result, UpstreamVersion
from model_rollout.gateway.routing import Route, RouteError
from model_rollout.gateway.scoring import error_body, parse_request, prediction_rows
from model_rollout.gateway.shadow import ShadowCopy, ShadowMirror, pair_rows
from model_rollout.gateway.stats import Recorder, snapshot, version_sort_key
from model_rollout.gateway.store import StaleGeneration, Store

log = logging.getLogger("model_rollout.gateway")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,199}$")
RECENT_REQUESTS = 200_000


class GatewayError(Exception):
    """An admin or data-plane call that cannot be honoured; carries the HTTP status."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST", **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra

    def body(self) -> dict:
        return {"error_code": self.code, "message": self.message, **self.extra}


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise GatewayError(
            422,
            f"{kind} {value!r} is not valid: use letters, digits, '.', '_' or '-' (max 200)",
            "INVALID_PARAMETER_VALUE",
        )
    return value


class Gateway:
    """All gateway state. `start()` restores persisted versions and routes; `stop()` flushes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.recorder = Recorder()
        self.store = Store(settings, self.recorder)
        self.versions: dict[tuple[str, str], LoadedVersion] = {}
        self.routes: dict[str, Route] = {}
        self._pending: dict[str, Route] = {}  # committed routes waiting for loads here
        self._registered: set[tuple[str, str]] = set()  # versions the store listed last poll
        self._touched: dict[tuple[str, str], float] = {}  # last registered here (monotonic)
        self._loads: dict[tuple[str, str], asyncio.Task] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._tasks: list[asyncio.Task] = []
        self._last_retry: dict[tuple[str, str], float] = {}
        self._shadow_runners: dict[tuple[str, str], Any] = {}
        self.batching: dict[tuple[str, str], str] = {}  # explicit per-version settings
        self.restored = False
        self._id_prefix = uuid.uuid4().hex[:16]
        self._seq = 0
        self.started_at = time.time()
        self.mirror = ShadowMirror(
            queue_size=settings.shadow_queue_size,
            batch_wait=settings.shadow_batch_wait,
            max_batch_rows=settings.max_batch_rows,
            timeout=settings.predict_timeout,
            get_version=self._shadow_target,
            on_result=self._shadow_result,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.switch_interval:
            import sys

            sys.setswitchinterval(self.settings.switch_interval)
        if self.settings.mlflow_tracking_uri:
            import os

            # set before any (lazy) mlflow import in the loader threads; the registry too:
            # an inherited MLFLOW_REGISTRY_URI would send models:/ URIs to another server
            os.environ["MLFLOW_TRACKING_URI"] = self.settings.mlflow_tracking_uri
            os.environ["MLFLOW_REGISTRY_URI"] = self.settings.mlflow_tracking_uri
        await asyncio.to_thread(self.store.open)
        versions = await asyncio.to_thread(self.store.load_versions)
        routes = await asyncio.to_thread(self.store.load_routes)
        self.batching = await asyncio.to_thread(self.store.load_batching)
        for model, version, source, kind in versions:
            self._start_load(model, version, source, kind)
        self._registered = {(m, v) for m, v, _, _ in versions}
        for model, r in routes.items():
            try:
                self.routes[model] = Route.build(
                    model, r["generation"], r["weights"], r["shadows"], r["staging"]
                )
            except RouteError as exc:
                log.error("persisted route of %s is invalid, ignored: %s", model, exc)
        self.restored = True
        self._tasks.append(asyncio.get_running_loop().create_task(self._reconcile_loop()))
        log.info(
            "gateway started: store=%s, %d versions and %d routes restored",
            self.store.kind,
            len(versions),
            len(self.routes),
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.mirror.close()
        for runner in self._shadow_runners.values():
            await asyncio.to_thread(runner.close, True)
        for t in list(self._loads.values()):
            t.cancel()
        for lv in list(self.versions.values()):
            await lv.close(grace=2.0)
        await asyncio.to_thread(self.store.close)

    def _new_id(self) -> str:
        """A request id unique across replicas and restarts: a random per-process prefix and a
        counter (uuid4 costs a getrandom syscall per request)."""
        self._seq += 1
        return f"{self._id_prefix}{self._seq:016x}"

    def _lock(self, model: str) -> asyncio.Lock:
        lock = self._locks.get(model)
        if lock is None:
            lock = self._locks[model] = asyncio.Lock()
        return lock

    # -- versions -----------------------------------------------------------------------------
    def _make(self, model: str, version: str, source: str, kind: str) -> LoadedVersion:
        s = self.settings
        if kind == "upstream":
            return UpstreamVersion(model, version, source, timeout=s.upstream_timeout)
        return PyfuncVersion(
            model,
            version,
            source,
            max_batch_rows=s.max_batch_rows,
            max_pending_rows=s.max_pending_rows,
            batching=self.batching.get((model, version), s.batching),
        )

    def _start_load(self, model: str, version: str, source: str, kind: str) -> asyncio.Task:
        key = (model, version)
        task = self._loads.get(key)
        if task is not None and not task.done():
            return task
        lv = self._make(model, version, source, kind)
        old = self.versions.get(key)
        self.versions[key] = lv
        self._last_retry[key] = time.monotonic()

        async def run() -> LoadedVersion:
            await lv.load()
            if lv.status == "loaded":
                self._install_pending(model)  # at once, not at the next poll
            if old is not None and old is not lv:
                await old.close()
            return lv

        task = asyncio.get_running_loop().create_task(run())
        self._loads[key] = task
        task.add_done_callback(
            lambda _t: self._loads.pop(key, None) if self._loads.get(key) is _t else None
        )
        return task

    async def load_version(self, model: str, version: str, spec: dict | None) -> LoadedVersion:
        """Register a version and start loading it; returns at once, `status` "loaded" (nothing
        was to load) or "loading" (watch `version_of`: "loaded" or "failed" with the error)."""
        check_name("model name", model)
        check_name("version", version)
        spec = spec or {}
        if not isinstance(spec, dict):
            raise GatewayError(
                422, "body must be an object with 'uri' or 'upstream'", "INVALID_PARAMETER_VALUE"
            )
        unknown = set(spec) - {"uri", "upstream", "batching"}
        if unknown or ("uri" in spec and "upstream" in spec):
            raise GatewayError(
                422,
                f"body must have either 'uri' (MLflow model URI) or 'upstream' (URL), and "
                f"optionally 'batching'; got fields {sorted(spec)}",
                "INVALID_PARAMETER_VALUE",
            )
        mode = self._batching_field(spec)
        if "upstream" in spec:
            url = spec["upstream"]
            if not isinstance(url, str) or not re.match(r"^https?://", url):
                raise GatewayError(
                    422,
                    f"'upstream' must be an http(s) URL; got {url!r}",
                    "INVALID_PARAMETER_VALUE",
                )
            source, kind = url, "upstream"
        else:
            uri = spec.get("uri", f"models:/{model}/{version}")
            if not isinstance(uri, str) or not uri:
                raise GatewayError(
                    422, f"'uri' must be a model URI string; got {uri!r}", "INVALID_PARAMETER_VALUE"
                )
            source, kind = uri, "pyfunc"
        key = (model, version)
        async with self._lock(model):
            cur = self.versions.get(key)
            running = self._loads.get(key)
            same = cur is not None and cur.source == source and cur.kind == kind
            if same and cur.status == "loaded":
                if mode is not None:
                    await self._set_batching(cur, mode)
                return cur
            if running is not None and not same:
                raise GatewayError(
                    409,
                    f"version {version} of {model!r} is being loaded from {cur.source if cur else '?'}; "
                    "try again when that load has finished",
                    "RESOURCE_CONFLICT",
                )
            if cur is not None and not same and self._is_referenced(model, version):
                raise GatewayError(
                    409,
                    f"version {version} of {model!r} is routed with source {cur.source}; "
                    "take it out of the route before loading a different source",
                    "RESOURCE_CONFLICT",
                )
            # the registration is the fleet's intent: every replica loads what the store lists
            await self._store_call(self.store.put_version, model, version, source, kind)
            self._touched[key] = time.monotonic()
            if mode is not None:  # set before the load starts: the loaded version uses it
                await self._store_call(self.store.put_batching, model, version, mode)
                self.batching[key] = mode
                if cur is not None:
                    cur.set_batching(mode)
            if running is None and not (same and cur.status == "loaded"):
                self._start_load(model, version, source, kind)
            # never waits for the load: a route change (a rollback) must not queue behind it
            return self.versions[key]

    async def _set_batching(self, lv: LoadedVersion, mode: str) -> None:
        await self._store_call(self.store.put_batching, lv.model, lv.version, mode)
        self.batching[(lv.model, lv.version)] = mode
        lv.set_batching(mode)

    @staticmethod
    def _batching_field(spec: dict) -> str | None:
        """The optional `batching` of a version body (auto | off | on; pyfunc versions only)."""
        if "batching" not in spec:
            return None
        try:
            mode = check_mode(spec["batching"])
        except ValueError as exc:
            raise GatewayError(422, str(exc), "INVALID_PARAMETER_VALUE") from None
        if "upstream" in spec:
            raise GatewayError(
                422,
                "'batching' applies to in-process versions ('uri'), not to 'upstream' ones",
                "INVALID_PARAMETER_VALUE",
            )
        return mode

    def _sync_batching(self, modes: dict[tuple[str, str], str]) -> None:
        """Apply batching settings made through another replica."""
        for key, mode in modes.items():
            lv = self.versions.get(key)
            if lv is not None and self.batching.get(key) != mode:
                lv.set_batching(mode)
        self.batching = modes

    def version_of(self, model: str, version: str) -> dict:
        lv = self.versions.get((model, version))
        if lv is None:
            raise GatewayError(
                404, f"version {version} of {model!r} is not loaded", "RESOURCE_DOES_NOT_EXIST"
            )
        return {"model": model, "version": version, **lv.describe()}

    async def _store_call(self, fn, *args):
        """A store call of an admin request; 503 naming the store's error when it fails."""
        try:
            return await asyncio.to_thread(fn, *args)
        except StaleGeneration:
            raise
        except Exception as exc:  # noqa: BLE001 - the client may retry; nothing was changed
            raise GatewayError(
                503,
                f"the gateway's store did not take the write ({type(exc).__name__}: {exc}); "
                "nothing was changed, try again",
                "TEMPORARILY_UNAVAILABLE",
            ) from None

    def _is_referenced(self, model: str, version: str) -> bool:
        for r in (self.routes.get(model), self._pending.get(model)):
            if r is not None and version in r.referenced():
                return True
        return False

    async def unload_version(self, model: str, version: str) -> None:
        async with self._lock(model):
            key = (model, version)
            lv = self.versions.get(key)
            if lv is None:
                raise GatewayError(
                    404, f"version {version} of {model!r} is not loaded", "RESOURCE_DOES_NOT_EXIST"
                )
            if self._is_referenced(model, version):
                raise GatewayError(
                    409,
                    f"version {version} of {model!r} is routed (weight, shadow or staging); "
                    "change the route first",
                    "RESOURCE_CONFLICT",
                    route=self.routes[model].to_dict() if model in self.routes else None,
                )
            await self._store_call(self.store.delete_version, model, version)
            del self.versions[key]
            self._registered.discard(key)
            task = self._loads.pop(key, None)
            if task:
                task.cancel()
            if self.batching.pop(key, None) is not None:
                await asyncio.to_thread(self.store.put_batching, model, version, None)
        await lv.close()

    # -- routes -------------------------------------------------------------------------------
    def route_of(self, model: str) -> dict:
        """The route this replica serves; `pending` when a newer one waits for loads here."""
        r = self.routes.get(model)
        if r is None and not self._known(model):
            raise GatewayError(404, f"unknown model {model!r}", "RESOURCE_DOES_NOT_EXIST")
        doc = (r or Route(model)).to_dict()
        pending = self._pending.get(model)
        if pending is not None:
            doc["pending"] = {**pending.to_dict(), "loading": self._waiting_for(pending)}
        return doc

    def _known(self, model: str) -> bool:
        return (
            model in self.routes
            or model in self._pending
            or any(m == model for m, _ in self.versions)
        )

    def _waiting_for(self, route: Route) -> list[str]:
        """The versions a route names that are not loaded here (yet)."""
        return sorted(
            (
                v
                for v in route.referenced()
                if getattr(self.versions.get((route.model, v)), "status", None) != "loaded"
            ),
            key=version_sort_key,
        )

    async def set_route(self, model: str, body: Any) -> tuple[bool, dict]:
        """Compare-and-set a model's route; never waits for a load or a process start.

        Returns (live, route): live when every version it names is loaded here, so it serves
        from now on; else it is committed and served the moment those loads end (a later
        route, such as a rollback to loaded versions, supersedes it at once). 409 on a stale
        generation, 422 on a bad route or on versions neither loaded nor loading here.
        """
        check_name("model name", model)
        if not isinstance(body, dict):
            raise GatewayError(
                422,
                "body must be an object with generation, weights, shadows, staging",
                "INVALID_PARAMETER_VALUE",
            )
        unknown = set(body) - {"generation", "weights", "shadows", "staging"}
        if unknown:
            raise GatewayError(
                422, f"unknown route fields {sorted(unknown)}", "INVALID_PARAMETER_VALUE"
            )
        gen = body.get("generation")
        if isinstance(gen, bool) or not isinstance(gen, int) or gen < 0:
            raise GatewayError(
                422,
                f"'generation' must be the current generation (an integer >= 0); got {gen!r}",
                "INVALID_PARAMETER_VALUE",
            )
        if "weights" not in body:
            raise GatewayError(
                422,
                "'weights' is required (version -> percent, summing to 100)",
                "INVALID_PARAMETER_VALUE",
            )
        try:
            route = Route.build(
                model, gen + 1, body["weights"], body.get("shadows") or [], body.get("staging")
            )
        except RouteError as exc:
            raise GatewayError(422, str(exc), "INVALID_PARAMETER_VALUE") from None
        async with self._lock(model):
            await self._load_registered(model, route.referenced())
            unusable = {
                v: lv
                for v in route.referenced()
                if (lv := self.versions.get((model, v))) is None or lv.status == "failed"
            }
            if unusable:
                failed = "".join(
                    f"; version {v} failed to load: {lv.error}"
                    for v, lv in sorted(unusable.items())
                    if lv is not None
                )
                raise GatewayError(
                    422,
                    f"route names versions of {model!r} that are not loaded: "
                    f"{sorted(unusable, key=version_sort_key)}{failed}; "
                    f"load them with PUT /admin/models/{model}/versions/<version> first",
                    "INVALID_PARAMETER_VALUE",
                )
            try:
                saved = await self._store_call(self.store.cas_route, model, gen, route.to_dict())
            except StaleGeneration as exc:
                raise GatewayError(
                    409,
                    f"stale generation {gen} for {model!r}: the current generation is {exc.current}",
                    "RESOURCE_CONFLICT",
                    generation=exc.current,
                ) from None
            committed = Route.build(
                model, saved["generation"], saved["weights"], saved["shadows"], saved["staging"]
            )
            self._pending[model] = committed
            self._install_pending(model)
            if self.routes.get(model) is committed:
                return True, committed.to_dict()
            return False, {**committed.to_dict(), "loading": self._waiting_for(committed)}

    def _install_pending(self, model: str) -> None:
        """Serve the model's newest committed route once every version it names is loaded here.

        Called when a route is committed, when a load ends and on every poll; it only swaps a
        reference, so nothing a route change does waits for a load.
        """
        route = self._pending.get(model)
        if route is None:
            return
        local = self.routes.get(model)
        if local is not None and local.generation >= route.generation:
            self._pending.pop(model, None)
            return
        if self._waiting_for(route):
            return
        self.routes[model] = route
        self._pending.pop(model, None)
        self._sync_shadow_runners()
        log.info("route of %s now generation %d", model, route.generation)

    async def _load_registered(self, model: str, versions: set[str]) -> None:
        """Start loading versions that another replica registered in the shared store but this
        one has not loaded yet (a route may be set through any replica); does not wait."""
        if all((model, v) in self.versions for v in versions):
            return
        registry = {
            (m, v): (s, k) for m, v, s, k in await self._store_call(self.store.load_versions)
        }
        for v in versions:
            if (model, v) not in self.versions and (model, v) in registry:
                self._start_load(model, v, *registry[(model, v)])

    # -- shadows ---------------------------------------------------------------------------
    def _shadow_target(self, model: str, version: str):
        """What a shadow lane predicts with: the version's own worker process (default), or
        the in-process version when shadow processes are off or the version is an upstream."""
        lv = self.versions.get((model, version))
        if (
            lv is None
            or lv.status != "loaded"
            or lv.kind != "pyfunc"
            or not self.settings.shadow_process
        ):
            return lv
        runner = self._shadow_runners.get((model, version))
        if runner is None or runner.source != lv.source:
            if runner is not None:
                runner.close()
            from model_rollout.gateway.shadow_worker import ShadowProcess

            runner = ShadowProcess(
                model,
                version,
                lv.source,
                max_batch_rows=self.settings.max_batch_rows,
                tracking_uri=self.settings.mlflow_tracking_uri,
                nice=self.settings.shadow_nice,
            )
            self._shadow_runners[(model, version)] = runner
            runner.prewarm()
        runner.batching = getattr(lv, "batching", "auto")  # shadows answer as primaries would
        return runner

    def _sync_shadow_runners(self) -> None:
        """Start workers for the shadows now routed; stop those no longer routed."""
        wanted = {(m, v) for m, r in self.routes.items() for v in r.shadows}
        for key in list(self._shadow_runners):
            if key not in wanted:
                self._shadow_runners.pop(key).close()
        for m, v in wanted:
            self._shadow_target(m, v)  # creates (and starts) the worker when missing

    # -- data plane ---------------------------------------------------------------------------
    async def invoke(
        self,
        model: str,
        body: bytes,
        content_type: str | None,
        routing_key: str | None,
        request_id: str | None,
        arm: str = "primary",
    ) -> Answer:
        rid = request_id or self._new_id()
        route = self.routes.get(model)
        if route is None:
            if self._known(model):
                return self._plain(
                    503,
                    f"model {model!r} has no route yet; set one with PUT /admin/models/{model}/route",
                    "UNAVAILABLE",
                    rid,
                )
            return self._plain(404, f"unknown model {model!r}", "RESOURCE_DOES_NOT_EXIST", rid)
        if arm == "staging":
            version = route.staging
            if version is None:
                return self._plain(
                    409,
                    f"model {model!r} has no staging version in its route",
                    "RESOURCE_CONFLICT",
                    rid,
                )
        else:
            version = route.pick(routing_key)
            if version is None:
                return self._plain(
                    503,
                    f"model {model!r} has no live version (all weights are 0)",
                    "UNAVAILABLE",
                    rid,
                )
        headers = {"x-request-id": rid, "x-model-version": version, "x-model-arm": arm}
        ts = time.time()
        lv = self.versions.get((model, version))
        if lv is None or lv.status != "loaded":
            state = "not loaded" if lv is None else lv.status
            res = Result(
                503,
                error_body(f"version {version} of {model!r} is {state}", "UNAVAILABLE"),
                error=f"version {state}",
            )
            self._record(model, version, arm, rid, ts, res)
            return Answer(503, res.body, headers)
        req = parse_request(body, content_type)
        res = await lv.predict(req, self.settings.predict_timeout)
        self._record(model, version, arm, rid, ts, res)
        if arm == "primary" and route.shadows:
            preds = res.predictions if res.status == 200 else None
            for sv in route.shadows:
                self.mirror.submit(model, sv, ShadowCopy(rid, ts, req, version, preds))
        return Answer(res.status, res.body, headers)

    def _plain(self, status: int, message: str, code: str, rid: str) -> Answer:
        return Answer(status, error_body(message, code), {"x-request-id": rid})

    def _record(self, model: str, version: str, arm: str, rid: str, ts: float, res: Result) -> None:
        rows = prediction_rows(res.predictions) if res.status == 200 else None
        self.recorder.request(model, version, arm, res.counted_status, res.latency_ms, rows)
        self.store.log_request(
            rid, ts, model, version, arm, res.latency_ms, res.status, res.predictions, res.error
        )
        if arm != "shadow":
            recent = self._recent
            prev = recent.get(rid)  # a client reusing its request id: one outcome per id
            recent[rid] = [model, version, arm, bool(prev and prev[3])]
            if len(recent) > RECENT_REQUESTS:
                recent.popitem(last=False)

    def _shadow_result(self, model: str, version: str, copy: ShadowCopy, res: Result) -> None:
        self._record(model, version, "shadow", copy.request_id, copy.ts, res)
        if res.status == 200 and copy.primary_predictions is not None:
            rows = pair_rows(res.predictions, copy.primary_predictions)
            if rows is not None:
                self.recorder.pair(model, version, copy.primary_version, rows[0], rows[1])

    # -- feedback -----------------------------------------------------------------------------
    async def feedback(self, model: str, body: Any) -> tuple[int, dict]:
        single = isinstance(body, dict) and "feedback" not in body
        if single:
            items = [body]
        elif (
            isinstance(body, dict)
            and isinstance(body.get("feedback"), list)
            and set(body) == {"feedback"}
        ):
            items = body["feedback"]
        else:
            raise GatewayError(
                422,
                'body must be {"request_id": str, "outcome": number|bool} or {"feedback": [...]}',
                "INVALID_PARAMETER_VALUE",
            )
        parsed: list[tuple[str, float]] = []
        for i, it in enumerate(items):
            where = "" if single else f"feedback[{i}]: "
            if not isinstance(it, dict):
                raise GatewayError(
                    422, f"{where}each item must be an object", "INVALID_PARAMETER_VALUE"
                )
            extra = set(it) - {"request_id", "outcome"}
            if extra:
                raise GatewayError(
                    422, f"{where}unknown fields {sorted(extra)}", "INVALID_PARAMETER_VALUE"
                )
            rid = it.get("request_id")
            if not isinstance(rid, str) or not rid:
                raise GatewayError(
                    422,
                    f"{where}'request_id' must be a non-empty string; got {rid!r}",
                    "INVALID_PARAMETER_VALUE",
                )
            out = it.get("outcome")
            if isinstance(out, bool):
                out = 1.0 if out else 0.0
            if not isinstance(out, (int, float)) or not math.isfinite(out):
                raise GatewayError(
                    422,
                    f"{where}'outcome' must be a finite number or boolean; got {out!r}",
                    "INVALID_PARAMETER_VALUE",
                )
            parsed.append((rid, float(out)))
        accepted, unknown, duplicates, other_model = 0, [], [], []
        now = time.time()
        for rid, out in parsed:
            meta = self._recent.get(rid)
            if meta is None:
                found = await asyncio.to_thread(self.store.lookup_request, rid)
                if found is None:
                    unknown.append(rid)
                    continue
                fb_done = await asyncio.to_thread(self.store.has_feedback, rid)
                meta = [*found, fb_done]
                self._recent[rid] = meta
            m, v, arm, done = meta
            if m != model:
                other_model.append(rid)
                continue
            if done:
                duplicates.append(rid)
                continue
            meta[3] = True
            self.recorder.feedback(m, v, arm, out)
            self.store.log_feedback(rid, now, m, v, arm, out)
            accepted += 1
        answer: dict[str, Any] = {"accepted": accepted}
        if unknown:
            answer["unknown"] = unknown
        if duplicates:
            answer["duplicates"] = duplicates
        if other_model:
            answer["other_model"] = other_model
        if single and unknown:
            raise GatewayError(
                404,
                f"unknown request_id {unknown[0]!r} (no answer from this gateway's log)",
                "RESOURCE_DOES_NOT_EXIST",
                accepted=0,
            )
        if single and other_model:
            raise GatewayError(
                409,
                f"request_id {other_model[0]!r} was answered by another model",
                "RESOURCE_CONFLICT",
                accepted=0,
            )
        return 200, answer

    # -- reads --------------------------------------------------------------------------------
    async def snapshot(self, model: str, since: float, until: float | None = None) -> dict:
        """Counts from the first whole second at or after `since`, to now or to the last whole
        second before `until` (a finished stage, read once the next one began).

        Cells are per second; the one holding `since` also holds what was answered just before
        it, under the previous route. At 200 req/s that partial second made the first looks of
        a 50% step read ~30% and fail the judge's sample-ratio check.
        """
        if not self._known(model):
            raise GatewayError(404, f"unknown model {model!r}", "RESOURCE_DOES_NOT_EXIST")
        since = float(math.ceil(since))
        await asyncio.to_thread(self.store.flush_now)
        health = self.store.health()  # as of that flush: did the cells read below take it?
        now = time.time()
        end = None if until is None else max(int(since), min(int(until), int(now)))
        arms, pairs = await asyncio.to_thread(self.store.read_stats, model, since, now, end)
        until = now if end is None else float(end)
        route = self.routes.get(model)
        route_doc = route.to_dict() if route else None
        return snapshot(model, since, until, route_doc, arms, pairs, health)

    def state(self) -> dict:
        models: dict[str, dict] = {}
        names = set(self.routes) | {m for m, _ in self.versions}
        for name in sorted(names):
            r = self.routes.get(name) or Route(name)
            models[name] = {
                **r.to_dict(),
                "versions": {
                    v: lv.describe()
                    for (m, v), lv in sorted(
                        self.versions.items(), key=lambda kv: version_sort_key(kv[0][1])
                    )
                    if m == name
                },
            }
            if name in self._pending:
                models[name]["pending_generation"] = self._pending[name].generation
        return {
            "models": models,
            "replica": self.settings.replica_id,
            "store": self.store.kind,
            "shadow_dropped": {f"{m}/{v}": n for (m, v), n in self.mirror.dropped.items()},
        }

    def readiness(self) -> list[str]:
        """Why the gateway is not ready (empty when it is): a routed version not loaded (a
        committed route still waiting for its loads included), a shadow worker still starting,
        the store failing."""
        reasons = []
        if not self.restored:
            reasons.append("restoring persisted state")
        for name, r in sorted(self.routes.items()):
            for v in sorted(r.referenced(), key=version_sort_key):
                lv = self.versions.get((name, v))
                if lv is None:
                    reasons.append(f"{name}/{v}: routed but not registered")
                elif lv.status != "loaded":
                    reasons.append(
                        f"{name}/{v}: {lv.status}" + (f" ({lv.error})" if lv.error else "")
                    )
        for name, r in sorted(self._pending.items()):
            for v in self._waiting_for(r):
                lv = self.versions.get((name, v))
                state = "not registered here" if lv is None else lv.status
                if lv is not None and lv.error:
                    state += f" ({lv.error})"
                reasons.append(f"{name}/{v}: {state}, route generation {r.generation} waits for it")
        for (m, v), runner in sorted(self._shadow_runners.items()):
            if not getattr(runner, "ready", True):
                reasons.append(f"{m}/{v}: shadow worker " + (runner.error or "starting"))
        if not self.store.last_flush_ok:
            reasons.append(f"store not writable: {self.store.last_error}")
        return reasons

    # -- keeping in step with other replicas --------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.route_poll_interval)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling; the store may come back
                log.warning("reconcile failed: %s", exc)

    async def reconcile(self) -> None:
        """Pick up routes, version registrations and batching settings made through other
        replicas.

        Only reads and reference swaps happen here: loads run as tasks of their own and a
        newer route is installed the moment its versions are loaded (`_install_pending`), so
        a load of v3 never holds up a rollback route to v1, here or on any replica.
        """
        began = time.monotonic()
        routes, registered = await asyncio.to_thread(self.store.load_routes_and_versions)
        self._sync_batching(await asyncio.to_thread(self.store.load_batching))
        self._sync_versions(registered, began)
        for model, r in routes.items():
            known = max(
                (x.generation for x in (self.routes.get(model), self._pending.get(model)) if x),
                default=-1,
            )
            if known >= r["generation"]:
                continue  # a stale read must never replace a newer route waiting here
            try:
                route = Route.build(
                    model, r["generation"], r["weights"], r["shadows"], r["staging"]
                )
            except RouteError:
                continue
            self._pending[model] = route
        for model in list(self._pending):
            self._install_pending(model)
        self._sync_shadow_runners()
        now = time.monotonic()
        for model, route in list(self.routes.items()) + list(self._pending.items()):
            for v in route.referenced():
                lv = self.versions.get((model, v))
                key = (model, v)
                if (
                    lv is not None
                    and lv.status == "failed"
                    and key not in self._loads
                    and now - self._last_retry.get(key, 0) >= self.settings.reload_retry_interval
                ):
                    self._start_load(model, v, lv.source, lv.kind)

    def _sync_versions(self, registered: dict[tuple[str, str], tuple[str, str]], began: float):
        """Every replica loads the versions the store lists, and drops those deleted through
        another replica (unless routed here): a route naming a version then finds it loaded on
        every replica, instead of each starting its load only when the route arrives."""
        for key, (source, kind) in registered.items():
            lv = self.versions.get(key)
            if lv is None or (
                (lv.source, lv.kind) != (source, kind)  # registered again with another source
                and key not in self._loads
                and not self._is_referenced(*key)
                and self._touched.get(key, 0.0) < began
            ):
                self._start_load(key[0], key[1], source, kind)
        keep = set()
        for key in self._registered - registered.keys():
            if key not in self.versions:
                continue
            if (
                key in self._loads
                or self._is_referenced(*key)
                or self._touched.get(key, 0) >= began
            ):
                keep.add(key)  # decided again at a later poll
                continue
            asyncio.get_running_loop().create_task(self.versions.pop(key).close())
        self._registered = set(registered) | keep
