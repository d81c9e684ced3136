"""Loaded model versions: MLflow pyfunc in-process (micro-batched) or an upstream URL.

Why a micro-batcher: a pyfunc predict call costs ~2 ms whatever its size (signature
enforcement and conversions), ~60 us per extra row. Each in-process version has one worker
thread; while it predicts, new requests queue, and the next call takes all of them at once.
There is no artificial wait: at low load a request goes straight through, under load the
batches grow by themselves. The event loop never runs model code.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from model_rollout.gateway.scoring import (
    ScoringRequest,
    combine,
    error_body,
    predictions_body,
    split_predictions,
    to_jsonable,
)

log = logging.getLogger("model_rollout.gateway.models")


@dataclass(slots=True)
class Result:
    """One request's answer from one version.

    :param status: HTTP status for the client (200, 4xx rejected, 5xx error).
    :param body: the response body.
    :param predictions: JSON-able predictions (None unless 200).
    :param error: a short message for the log when status != 200.
    :param latency_ms: model time (queueing for the batch included).
    """

    status: int
    body: bytes
    predictions: Any = None
    error: str | None = None
    latency_ms: float = 0.0


def _rejected(message: str, code: str = "BAD_REQUEST") -> Result:
    return Result(400, error_body(message, code), error=message)


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


class Overloaded(Exception):
    """Too many rows already waiting for this version."""


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

    async def close(self, grace: float = 30.0) -> None:
        return None


@dataclass(slots=True)
class _Item:
    req: ScoringRequest
    future: asyncio.Future
    t0: float


class PyfuncVersion(LoadedVersion):
    """An MLflow pyfunc model loaded in-process, predicting through a micro-batcher."""

    kind = "pyfunc"

    def __init__(
        self, model: str, version: str, source: str, *, max_batch_rows: int, max_pending_rows: int
    ):
        super().__init__(model, version, source)
        self.max_batch_rows = max_batch_rows
        self.max_pending_rows = max_pending_rows
        self._pyfunc: Any = None
        self._schema: Any = None
        self._takes_params = False
        self._raw_inputs = False
        self.batchable = True
        self._queue: list[_Item] = []
        self._pending_rows = 0
        self._draining = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"predict-{model}-{version}"
        )
        self.batches = 0
        self.batched_requests = 0

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
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(self.source)
        meta = model.metadata
        self._schema = meta.get_input_schema()
        self._takes_params = "params" in inspect.signature(model.predict).parameters
        try:
            self._raw_inputs = bool(meta._is_signature_from_type_hint())
        except Exception:  # noqa: BLE001 - older metadata objects lack it
            self._raw_inputs = False
        self._pyfunc = model

    async def predict(self, req: ScoringRequest, timeout: float) -> Result:
        if self.status != "loaded":
            return _failed(
                f"version {self.version} of {self.model!r} is {self.status}", 503, "UNAVAILABLE"
            )
        rows = req.n_rows or 1
        if self._pending_rows + rows > self.max_pending_rows:
            return _failed(
                f"version {self.version} of {self.model!r} is overloaded "
                f"({self._pending_rows} rows waiting)",
                503,
                "OVERLOADED",
            )
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
        """One coalesced call for many requests, straight to the worker thread (no per-request
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
            self.batches += 1
            self.batched_requests += len(chunk)
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
                self.batches += 1
                self.batched_requests += len(batch)
                for it, res in zip(batch, results, strict=True):
                    res.latency_ms = (now - it.t0) * 1000.0
                    if not it.future.done():
                        it.future.set_result(res)
        finally:
            self._draining = False

    # -- worker thread -------------------------------------------------------------------------
    def _run_batch(self, reqs: list[ScoringRequest], want_body: bool = True) -> list[Result]:
        results: list[Result | None] = [None] * len(reqs)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            if r.batch_key is not None and self.batchable and not r.params:
                groups.setdefault(r.batch_key, []).append(i)
            else:
                results[i] = self._predict_one(r, want_body)
        for idxs in groups.values():
            if len(idxs) == 1:
                results[idxs[0]] = self._predict_one(reqs[idxs[0]], want_body)
                continue
            group = [reqs[i] for i in idxs]
            try:
                raw = self._call(combine(group), None)
                parts = split_predictions(to_jsonable(raw), [r.n_rows for r in group])
            except Exception:  # noqa: BLE001 - isolate the culprit: each request alone
                parts = None
            else:
                if parts is None:
                    self.batchable = False  # output not row-aligned: predict one by one
                    log.info(
                        "%s/%s: predictions not row-aligned; batching off", self.model, self.version
                    )
            if parts is None:
                for i in idxs:
                    results[i] = self._predict_one(reqs[i], want_body)
                continue
            for i, part in zip(idxs, parts, strict=True):
                results[i] = Result(200, predictions_body(part) if want_body else b"", part)
        return results  # type: ignore[return-value]

    def _call(self, payload: dict, params: dict | None) -> Any:
        if self._raw_inputs:
            if "inputs" not in payload:
                from mlflow.exceptions import MlflowException

                raise MlflowException.invalid_parameter_value(
                    "this model's signature comes from type hints: send the 'inputs' field"
                )
            data = payload["inputs"]
        else:
            from mlflow.pyfunc.scoring_server import infer_and_parse_data

            data = infer_and_parse_data(payload, self._schema)
        if self._takes_params:
            return self._pyfunc.predict(data, params=params)
        return self._pyfunc.predict(data)

    def _predict_one(self, req: ScoringRequest, want_body: bool = True) -> Result:
        from mlflow.exceptions import MlflowException

        try:
            raw = self._call(req.payload(), req.params)
        except MlflowException as exc:
            status = exc.get_http_status_code()
            code = exc.error_code
            msg = _short(exc.message)
            if status >= 500:
                return _failed(f"model raised: {msg}", 500, code)
            return _rejected(f"input rejected by version {self.version}: {msg}", code)
        except Exception as exc:  # noqa: BLE001 - a model that raises is that version's error
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            if fault := self._input_fault(req):
                # ... unless the input broke the contract the model was logged with
                return _rejected(
                    f"input rejected by version {self.version}: {fault}; "
                    f"the model raised {_short(detail, 300)}",
                    "INVALID_PARAMETER_VALUE",
                )
            return _failed(f"model raised {_short(detail)}")
        preds = to_jsonable(raw)
        if not want_body:  # a shadow: nobody reads the body
            return Result(200, b"", preds)
        try:
            body = predictions_body(preds)
        except (TypeError, ValueError) as exc:
            return _failed(f"predictions are not JSON-serialisable: {exc}")
        return Result(200, body, preds)

    def _input_fault(self, req: ScoringRequest) -> str | None:
        """Why the model raising is the request's fault, or None (then it is the version's).

        Asked only after the model raised, so it costs nothing on the way of a good request:
        a request without rows, a null in a column the signature requires, or an infinite
        number ("Inf" is a float to MLflow). MLflow's schema enforcement lets these through a
        numeric column, and a model that cannot take them then raises; yet MLflow infers
        `required` from the logged example having no missing values there. A model that
        copes with them never gets here.
        """
        if req.n_rows == 0:
            return "the request has no rows"
        schema = self._schema
        if schema is None or self._raw_inputs or not schema.has_input_names():
            return None
        try:
            import numpy as np
            import pandas as pd
            from mlflow.models.utils import _enforce_schema
            from mlflow.pyfunc.scoring_server import infer_and_parse_data
            from mlflow.types import DataType

            frame = _enforce_schema(infer_and_parse_data(req.payload(), schema), schema)
            if not isinstance(frame, pd.DataFrame):
                return None
            if frame.empty:
                return "the request has no rows"
            for c in schema.inputs:
                if not isinstance(c.type, DataType) or c.name not in frame.columns:
                    continue
                col = frame[c.name]
                if c.required and (rows := np.flatnonzero(col.isna().to_numpy())).size:
                    return (
                        f"column {c.name!r} is required by the model signature, "
                        f"but row {int(rows[0])} has no value (null or missing)"
                    )
                if (
                    pd.api.types.is_float_dtype(col.dtype)
                    and (rows := np.flatnonzero(np.isinf(col.to_numpy()))).size
                ):
                    return f"column {c.name!r} is infinite in row {int(rows[0])}"
        except Exception:  # noqa: BLE001 - cannot tell: leave it the model's error
            return None
        return None

    async def close(self, grace: float = 30.0) -> None:
        """Stop after the requests already queued are answered (bounded by `grace`): an unload
        right after a route change must not fail the requests still in flight."""
        deadline = time.monotonic() + grace
        while (self._queue or self._draining) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._executor.shutdown(wait=False, cancel_futures=False)


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
                headers={"Content-Type": "application/json"},
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
                    preds = orjson.loads(body).get("predictions")
                    res = Result(200, body, preds)
                except (orjson.JSONDecodeError, AttributeError):
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
