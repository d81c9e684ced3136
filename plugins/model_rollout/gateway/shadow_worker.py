"""The process a shadow version predicts in, at a lower CPU priority than the gateway.

Why a process: a shadow predicting in a thread of the gateway competes with the event loop
for the GIL, and every time the loop waits for I/O the shadow's thread takes the GIL for up to
a switch interval: primary answers queue behind shadow work. In its own niced process, the
shadow runs on spare CPU only; when there is none its queue fills and copies are dropped and
counted, which is the contract (a shadow never slows the primary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger("model_rollout.gateway.shadow_worker")

_VERSION: Any = None


def _init(
    model: str, version: str, source: str, max_batch_rows: int, tracking_uri: str | None, nice: int
) -> None:
    """Runs once in the worker: load the model, then lower the priority (loading at full
    priority keeps a busy machine from starving the worker's start for minutes)."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from model_rollout.gateway.models import PyfuncVersion

    global _VERSION
    v = PyfuncVersion(model, version, source, max_batch_rows=max_batch_rows, max_pending_rows=1)
    v._load_sync()  # noqa: SLF001 - same loading code as in-process versions
    _VERSION = v
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)


def _run(reqs: list) -> list:
    return _VERSION._run_batch(reqs, False)  # noqa: SLF001


def _ping() -> bool:
    return _VERSION is not None


_CONTEXT: Any = None


def worker_context():
    """A forkserver that has imported MLflow once: each shadow worker forks from it and only
    loads its model (~0.5 s) instead of importing MLflow again (~5 s of CPU)."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["model_rollout.gateway.models", "mlflow.pyfunc", "mlflow.pyfunc.scoring_server"]
        )
        _CONTEXT = ctx
    return _CONTEXT


class ShadowProcess:
    """One worker process for one shadow version; `predict_many` like an in-process version."""

    kind = "pyfunc"

    def __init__(
        self,
        model: str,
        version: str,
        source: str,
        *,
        max_batch_rows: int,
        tracking_uri: str | None,
        nice: int,
    ):
        self.model, self.version, self.source = model, version, source
        self.max_batch_rows = max_batch_rows
        self.tracking_uri = tracking_uri
        self.nice = nice
        self.status = "loaded"  # copies are accepted while the worker starts
        self.ready = False
        self.error: str | None = None
        self._pool: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=worker_context(),
                initializer=_init,
                initargs=(
                    self.model,
                    self.version,
                    self.source,
                    self.max_batch_rows,
                    self.tracking_uri,
                    self.nice,
                ),
            )
        return self._pool

    def prewarm(self) -> None:
        """Start the worker (and load the model) before the first copy arrives."""
        try:
            fut = self._ensure().submit(_ping)
        except Exception as exc:  # noqa: BLE001
            self.error = f"{type(exc).__name__}: {exc}"
            return

        def done(f) -> None:
            try:
                self.ready = bool(f.result())
            except Exception as exc:  # noqa: BLE001 - reported by /readyz
                self.error = f"shadow worker failed to start: {type(exc).__name__}: {exc}"

        fut.add_done_callback(done)

    async def predict_many(self, reqs: list, timeout: float) -> list:
        from model_rollout.gateway.models import _failed

        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        results: list = []
        pos = 0
        while pos < len(reqs):
            chunk, rows = [], 0
            while pos < len(reqs) and (
                not chunk or rows + (reqs[pos].n_rows or 1) <= self.max_batch_rows
            ):
                chunk.append(reqs[pos])
                rows += reqs[pos].n_rows or 1
                pos += 1
            try:
                part = await asyncio.wait_for(
                    loop.run_in_executor(self._ensure(), _run, chunk), timeout
                )
            except TimeoutError:
                part = [
                    _failed(
                        f"shadow {self.version} of {self.model!r} did not answer within {timeout:g} s",
                        504,
                        "TIMEOUT",
                    )
                    for _ in chunk
                ]
            except BrokenProcessPool as exc:
                log.warning(
                    "shadow worker %s/%s died (%s); restarting it", self.model, self.version, exc
                )
                self.close()
                part = [
                    _failed(
                        f"shadow worker of version {self.version} failed to start or died",
                        503,
                        "UNAVAILABLE",
                    )
                    for _ in chunk
                ]
            results.extend(part)
        if results and all(r.status != 503 for r in results):
            self.ready = True
        ms = (time.perf_counter() - t0) * 1000.0
        for r in results:
            r.latency_ms = ms
        return results

    def close(self) -> None:
        self.ready = False
        pool, self._pool = self._pool, None
        if pool is not None:
            procs = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:  # a busy (e.g. hung) worker would otherwise outlive its lane
                with contextlib.suppress(Exception):
                    p.terminate()
