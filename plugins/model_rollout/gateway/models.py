"""Loaded model versions: MLflow pyfunc in-process (micro-batched) or an upstream URL.

Each in-process version has one worker thread; while it predicts, new requests queue, and the
next turn takes all of them. There is no artificial wait: at low load a request goes straight
through, under load the turns grow by themselves. The event loop never runs model code.

What a turn does with its requests is the version's batching plan (`batching.py`): each
request answered alone by MLflow's own scoring function (`scoring.answer_alone`), or requests
that may share a predict call concatenated, predicted once, and each given its own rows of the
raw output, serialised as mlflow would serialise them. A shared call that raises, or rows its
plan cannot certify, are answered alone, so every answer and every error is the request's own.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from model_rollout.gateway.batching import Plan, plan
from model_rollout.gateway.scoring import (
    ScoringRequest,
    answer_alone,
    combine,
    error_body,
    predictions_json,
    row_count,
    rows_of,
    upstream_predictions,
)

log = logging.getLogger("model_rollout.gateway.models")


@dataclass(slots=True)
class Result:
    """One request's answer from one version.

    :param status: HTTP status for the client (200, else as `mlflow models serve` answers).
    :param body: the response body.
    :param predictions: JSON-able predictions (None unless 200).
    :param error: a short message for the log when status != 200.
    :param latency_ms: model time (queueing for the batch included).
    :param fault: whose failure a non-200 answer is: "model" (it raised, or its output could
        not be serialised) or "request" (malformed, or breaking the signature); None for the
        gateway's own answers (timeouts, overload, unavailable), counted by their status.
    """

    status: int
    body: bytes
    predictions: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    fault: str | None = None

    @property
    def counted_status(self) -> int:
        """The status the statistics count. mlflow answers a model that raised with 400, yet
        the failure is the version's: it counts as an error (5xx), a bad request as rejected."""
        if self.fault == "model" and self.status < 500:
            return 500
        if self.fault == "request" and self.status >= 500:
            return 400
        return self.status


def _failed(message: str, status: int = 500, code: str = "INTERNAL_ERROR") -> Result:
    return Result(status, error_body(message, code), error=message)


def row_chunks(reqs: list[ScoringRequest], max_rows: int):
    """Consecutive chunks of `reqs` of at most `max_rows` rows (one request per chunk at least)."""
    chunk, rows = [], 0
    for req in reqs:
        n = req.n_rows or 1
        if chunk and rows + n > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(req)
        rows += n
    if chunk:
        yield chunk


class LoadedVersion(abc.ABC):
    """Base of a servable version; `status` is loading | loaded | failed."""

    kind = "base"

    def __init__(self, model: str, version: str, source: str):
        self.model = model
        self.version = version
        self.source = source
        self.status = "loading"
        self.error: str | None = None
        self.loaded_at: float | None = None

    def describe(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "status": self.status,
            "error": self.error,
        }

    @abc.abstractmethod
    async def load(self) -> None:
        """Make the version servable (sets `status`)."""

    @abc.abstractmethod
    async def predict(self, req: ScoringRequest, timeout: float) -> Result:
        """One request's answer within `timeout` seconds."""

    async def predict_many(self, reqs: list[ScoringRequest], timeout: float) -> list[Result]:
        """Answer several requests; shadows use it to send a whole lane's backlog at once."""
        return list(await asyncio.gather(*(self.predict(r, timeout) for r in reqs)))

    def set_batching(self, mode: str) -> None:  # noqa: B027 - a no-op unless overridden
        """Only in-process versions batch; others ignore the setting."""

    async def close(self, grace: float = 30.0) -> None:
        return None


@dataclass(slots=True)
class _Item:
    req: ScoringRequest
    future: asyncio.Future
    t0: float


_SHARED_FORMATS = ("dataframe_split", "dataframe_records")


class PyfuncVersion(LoadedVersion):
    """An MLflow pyfunc model loaded in-process, predicting in its own worker thread.

    :param batching: auto | off | on (see `batching.py`); `set_batching` changes it live.
    """

    kind = "pyfunc"

    def __init__(
        self,
        model: str,
        version: str,
        source: str,
        *,
        max_batch_rows: int,
        max_pending_rows: int,
        batching: str = "auto",
    ):
        super().__init__(model, version, source)
        self.max_batch_rows = max_batch_rows
        self.max_pending_rows = max_pending_rows
        self.batching = batching
        self.plan: Plan | None = None
        self._pyfunc: Any = None
        self._schema: Any = None
        self._queue: list[_Item] = []
        self._pending_rows = 0
        self._draining = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"predict-{model}-{version}"
        )
        self.batches = 0  # worker turns
        self.batched_requests = 0  # requests answered by those turns
        self.predict_calls = 0  # model predict calls made (shared or alone)
        self.shared_requests = 0  # requests answered from a shared call
        self.uncertified = 0  # requests of shared calls answered alone: a row was not certified

    def describe(self) -> dict:
        out = super().describe()
        how = (
            self.plan.describe()
            if self.plan is not None
            else {"mode": self.batching, "coalesces": None, "reason": "not loaded"}
        )
        out["batching"] = {
            **how,
            "predict_calls": self.predict_calls,
            "requests": self.batched_requests,
            "shared_requests": self.shared_requests,
            "uncertified": self.uncertified,
        }
        return out

    def set_batching(self, mode: str) -> None:
        """Switch the batching mode; the next worker turn uses it."""
        self.batching = mode
        if self._pyfunc is not None:
            self.plan = plan(self._pyfunc, mode)

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load_sync)
            self.status, self.error, self.loaded_at = "loaded", None, time.time()
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            self.status = "failed"
            self.error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning(
                "loading %s/%s from %s failed: %s",
                self.model,
                self.version,
                self.source,
                self.error,
            )

    def _load_sync(self) -> None:
        import os

        import mlflow.pyfunc
        from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

        try:
            model = mlflow.pyfunc.load_model(self.source)
        except (AttributeError, ImportError) as exc:
            # Versions load in parallel threads, and two of them can be the first to import a
            # flavor's library (MLflow's sklearn loader imports skops.io on first use): CPython
            # may then show one thread the package half-initialised ("module 'skops' has no
            # attribute 'io'"). That import has finished by now; a model that really cannot
            # load fails the same way again.
            log.info("loading %s/%s again after %r", self.model, self.version, exc)
            model = mlflow.pyfunc.load_model(self.source)
        # as `mlflow models serve` does once the model is loaded: models with a type-hint
        # signature then parse their JSON inputs for serving
        os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"
        # MLflow's scoring path warns once per refused or odd request (ignored params, the
        # `instances` conversion note): at a few thousand requests/s that floods the log; the
        # request log keeps every error instead
        for name in ("mlflow.pyfunc.scoring_server", "mlflow.models.utils"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._schema = model.metadata.get_input_schema()
        self.plan = plan(model, self.batching)
        self._pyfunc = model

    async def predict(self, req: ScoringRequest, timeout: float) -> Result:
        if self.status != "loaded":
            return _failed(
                f"version {self.version} of {self.model!r} is {self.status}", 503, "UNAVAILABLE"
            )
        if self._pending_rows >= self.max_pending_rows:
            return _failed(
                f"version {self.version} of {self.model!r} is overloaded: {self._pending_rows} "
                f"rows are waiting, the limit is {self.max_pending_rows} (--max-pending-rows)",
                503,
                "OVERLOADED",
            )
        rows = req.n_rows or 1
        loop = asyncio.get_running_loop()
        item = _Item(req, loop.create_future(), time.perf_counter())
        self._queue.append(item)
        self._pending_rows += rows
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except TimeoutError:
            return _failed(
                f"version {self.version} of {self.model!r} did not answer within {timeout:g} s",
                504,
                "TIMEOUT",
            )

    async def predict_many(self, reqs: list[ScoringRequest], timeout: float) -> list[Result]:
        """One worker turn for many requests, straight to the worker thread (no per-request
        futures): the cheap path for mirrored copies, which nobody waits for."""
        if self.status != "loaded":
            return [await self.predict(r, timeout) for r in reqs]
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        results: list[Result] = []
        for chunk in row_chunks(reqs, self.max_batch_rows):
            try:
                part = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._run_batch, chunk, False), timeout
                )
            except TimeoutError:
                part = [
                    _failed(
                        f"version {self.version} of {self.model!r} did not answer within {timeout:g} s",
                        504,
                        "TIMEOUT",
                    )
                    for _ in chunk
                ]
            results.extend(part)
        ms = (time.perf_counter() - t0) * 1000.0
        for r in results:
            r.latency_ms = ms
        return results

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                queue = self._queue
                take = rows = 0
                while take < len(queue):
                    n = queue[take].req.n_rows or 1
                    if take and rows + n > self.max_batch_rows:
                        break
                    rows += n
                    take += 1
                batch = queue[:take]
                del queue[:take]
                self._pending_rows -= rows
                try:
                    results = await loop.run_in_executor(
                        self._executor, self._run_batch, [it.req for it in batch]
                    )
                except Exception as exc:  # noqa: BLE001 - never leave a request hanging
                    results = [_failed(f"batch failed: {exc}")] * len(batch)
                now = time.perf_counter()
                for it, res in zip(batch, results, strict=True):
                    res.latency_ms = (now - it.t0) * 1000.0
                    if not it.future.done():
                        it.future.set_result(res)
        finally:
            self._draining = False

    # -- worker thread -------------------------------------------------------------------------
    def _run_batch(self, reqs: list[ScoringRequest], want_body: bool = True) -> list[Result]:
        """Answer one turn's requests: shared calls where the plan allows, else alone."""
        how = self.plan
        results: list[Result | None] = [None] * len(reqs)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            key = _group_key(r, how)
            if key is not None:
                groups.setdefault(key, []).append(i)
        for idxs in groups.values():
            if len(idxs) > 1:
                shared = self._shared([reqs[i] for i in idxs], how, want_body)
                for i, res in zip(idxs, shared, strict=True):
                    results[i] = res
        for i, r in enumerate(reqs):
            if results[i] is None:
                results[i] = self._alone(r, want_body)
        self.batches += 1
        self.batched_requests += len(reqs)
        return results  # type: ignore[return-value]

    def _shared(self, group: list[ScoringRequest], how: Plan, want_body: bool) -> list:
        """One predict call for a group; per request its Result, or None to answer it alone."""
        from mlflow.pyfunc.scoring_server import infer_and_parse_data

        alone: list = [None] * len(group)
        counts = [r.n_rows for r in group]
        try:
            frame = infer_and_parse_data(combine(group), self._schema)
            self.predict_calls += 1
            raw = self._pyfunc.predict(frame)
        except Exception:  # noqa: BLE001 - each alone: every error belongs to its own request
            return alone
        if row_count(raw) != sum(counts):
            if how.mode == "on":  # outputs not row-aligned (e.g. a dict): alone from now on
                self.plan = Plan("on", False, False, "on, predicted alone: outputs not row-aligned")
                log.info(
                    "%s/%s: predictions not row-aligned; batching off", self.model, self.version
                )
            return alone
        certified = None
        if how.check is not None:
            try:
                certified = how.check(frame, raw)
            except Exception:  # noqa: BLE001 - cannot certify: alone
                log.exception("%s/%s: certifying a shared call failed", self.model, self.version)
                return alone
        out: list = []
        pos = 0
        for n in counts:
            if certified is not None and not certified[pos : pos + n].all():
                self.uncertified += 1
                out.append(None)
            else:
                try:
                    body, preds = predictions_json(rows_of(raw, pos, pos + n))
                except (TypeError, ValueError):
                    out.append(None)  # alone, where mlflow's own error answer is made
                else:
                    self.shared_requests += 1
                    out.append(Result(200, body if want_body else b"", preds))
            pos += n
        return out

    def _alone(self, req: ScoringRequest, want_body: bool = True) -> Result:
        self.predict_calls += 1
        got = answer_alone(self._pyfunc, self._schema, req)
        if got.status == 200:
            return Result(200, got.body if want_body else b"", got.predictions)
        from mlflow.exceptions import MlflowException

        exc = got.error
        detail = _short(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}", 300)
        if got.stage == "serialize":
            return Result(
                got.status, got.body, error=f"output not serialisable: {detail}", fault="model"
            )
        if got.stage == "predict" and not isinstance(exc, MlflowException):
            fault = self._input_fault(got.model_input)
            if fault is None:
                return Result(got.status, got.body, error=f"model raised {detail}", fault="model")
            return Result(
                got.status,
                got.body,
                error=f"input rejected: {fault}; the model raised {detail}",
                fault="request",
            )
        # the request did not parse, or the signature (or the model, with MLflow's error
        # codes) refused it: 4xx is the request's fault, 5xx the model's
        fault = "model" if got.stage == "predict" and got.status >= 500 else "request"
        return Result(got.status, got.body, error=detail, fault=fault)

    def _input_fault(self, data: Any) -> str | None:
        """Why the model raising is the request's fault, or None (then it is the version's).

        Asked only after the model raised, so it costs nothing on the way of a good request:
        a request without rows, a null in a column the signature requires (MLflow infers
        `required` from the logged example having no missing values there), or, without
        named columns in the signature, a null/NaN or infinite number anywhere in the input;
        an infinite number in any float column. MLflow's schema enforcement lets these through,
        and a model that cannot take them then raises. A model that copes never gets here.
        """
        try:
            from model_rollout.gateway.inputs import input_fault

            return input_fault(data, self._schema)
        except Exception:  # noqa: BLE001 - cannot tell: leave it the model's error
            return None

    async def close(self, grace: float = 30.0) -> None:
        """Stop after the requests already queued are answered (bounded by `grace`): an unload
        right after a route change must not fail the requests still in flight."""
        deadline = time.monotonic() + grace
        while (self._queue or self._draining) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._executor.shutdown(wait=False, cancel_futures=False)


def _group_key(req: ScoringRequest, how: Plan | None) -> tuple | None:
    """Requests with equal keys may share a predict call under the plan; None: alone."""
    if how is None or not how.coalesce or req.batch_key is None:
        return None
    if not how.strict:
        return req.batch_key
    if req.fmt not in _SHARED_FORMATS or req.value_types is None:
        return None
    return (req.batch_key, req.value_types)


def _short(text: str, limit: int = 1000) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


class UpstreamVersion(LoadedVersion):
    """A version served elsewhere (any MLflow-protocol server); requests are forwarded."""

    kind = "upstream"

    def __init__(self, model: str, version: str, url: str, *, timeout: float):
        super().__init__(model, version, url)
        self.timeout = timeout
        self._client: Any = None
        self._inflight = 0

    async def load(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        probe = (
            self.source.rsplit("/", 1)[0] + "/ping"
            if self.source.endswith("/invocations")
            else self.source
        )
        try:
            await self._client.get(probe, timeout=min(self.timeout, 10.0))
            self.status, self.error, self.loaded_at = "loaded", None, time.time()
        except Exception as exc:  # noqa: BLE001
            self.status = "failed"
            self.error = f"upstream {self.source} did not answer: {type(exc).__name__}: {exc}"

    async def predict(self, req: ScoringRequest, timeout: float) -> Result:
        import httpx

        t0 = time.perf_counter()
        self._inflight += 1
        try:
            resp = await self._client.post(
                self.source,
                content=req.body,
                headers={"Content-Type": req.content_type},
                timeout=min(timeout, self.timeout),
            )
        except httpx.TimeoutException:
            res = _failed(f"upstream {self.source} timed out", 504, "TIMEOUT")
        except Exception as exc:  # noqa: BLE001
            res = _failed(
                f"upstream {self.source} failed: {type(exc).__name__}: {exc}", 502, "UPSTREAM_ERROR"
            )
        else:
            body = resp.content
            if resp.status_code == 200:
                try:
                    res = Result(200, body, upstream_predictions(body))
                except ValueError:
                    res = _failed(
                        f"upstream {self.source} answered 200 without JSON predictions",
                        502,
                        "UPSTREAM_ERROR",
                    )
            elif 400 <= resp.status_code < 500:
                res = Result(
                    resp.status_code, body, None, _short(body.decode(errors="replace"), 300)
                )
            else:
                res = _failed(
                    f"upstream {self.source} answered {resp.status_code}: "
                    f"{_short(body.decode(errors='replace'), 300)}",
                    502,
                    "UPSTREAM_ERROR",
                )
        finally:
            self._inflight -= 1
        res.latency_ms = (time.perf_counter() - t0) * 1000.0
        return res

    async def close(self, grace: float = 30.0) -> None:
        deadline = time.monotonic() + grace
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._client is not None:
            await self._client.aclose()
