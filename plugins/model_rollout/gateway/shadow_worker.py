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
import faulthandler
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger("model_rollout.gateway.shadow_worker")

_VERSION: Any = None
_LOAD_ERROR: str | None = None


def _init(
    model: str, version: str, source: str, max_batch_rows: int, tracking_uri: str | None, nice: int
) -> None:
    """Runs once in the worker: load the model, then lower the priority (loading at full
    priority keeps a busy machine from starving the worker's start for minutes). A load error
    is kept for `_ping` to report rather than raised: a raising initializer only shows as a
    bare BrokenProcessPool in the gateway."""
    faulthandler.enable()  # a crash in native code leaves its stack in the gateway's log
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from model_rollout.gateway.models import PyfuncVersion

    global _VERSION, _LOAD_ERROR
    v = PyfuncVersion(model, version, source, max_batch_rows=max_batch_rows, max_pending_rows=1)
    try:
        v._load_sync()  # noqa: SLF001 - same loading code as in-process versions
    except Exception as exc:  # noqa: BLE001 - reported through _ping
        _LOAD_ERROR = f"{type(exc).__name__}: {exc}"[:2000]
        return
    _VERSION = v
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)


def _run(reqs: list, batching: str = "auto") -> list:
    if _VERSION is None:
        raise RuntimeError(f"the shadow worker has no model: {_LOAD_ERROR}")
    if _VERSION.batching != batching:  # the version's setting, as its primary answers use it
        _VERSION.set_batching(batching)
    return _VERSION._run_batch(reqs, False)  # noqa: SLF001


def _ping() -> str | None:
    """None once the model is loaded in this worker, else why it is not."""
    return None if _VERSION is not None else (_LOAD_ERROR or "the model is not loaded")


_CONTEXT: Any = None


class WorkerLost(Exception):
    """The worker process went away without crashing (no signal): the copies it held are
    dropped, like copies sent while it loads, rather than counted against the version."""

    def __init__(self, copies: int):
        super().__init__(f"shadow worker lost with {copies} copies")
        self.copies = copies


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
    """One worker process for one shadow version; `predict_many` like an in-process version.

    `status` is "loading" from `prewarm()` until the worker has loaded the model (and answered
    a ping), then "loaded"; "failed" when the worker could not start. The mirror sends copies
    only to a "loaded" worker and drops (and counts) the others: a copy sent to a worker still
    loading would wait for the load, time out and count as an error of the shadow version,
    which is the candidate's record, for something that is not its fault. A worker that dies
    is restarted at once (copies dropped until it is back). The copies it held count as the
    version's errors when a signal killed it (a crash in the model's native code, the OOM
    killer), and are dropped when it was lost otherwise (its forkserver gone: the pool then
    sees the worker's status pipe close, exit code 255). One that failed to start is retried
    on a copy arriving `RETRY_INTERVAL` seconds later or more.
    """

    kind = "pyfunc"
    RETRY_INTERVAL = 5.0

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
        self.status = "loading"
        self.error: str | None = None
        self.batching = "auto"  # the version's batching mode, kept current by the gateway
        self._failed_at = 0.0
        self._start = 0  # counts starts; a superseded start's ping must not set the status
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # _start and _pool, shared with the start thread

    @property
    def ready(self) -> bool:
        """True once the worker has loaded the model (what /readyz waits for)."""
        return self.status == "loaded"

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

    def _fail(self, message: str) -> None:
        """`message` completes "shadow worker ..." (how /readyz words it)."""
        self.status, self.error, self._failed_at = "failed", message, time.monotonic()
        log.warning("shadow worker %s/%s: %s", self.model, self.version, message)

    def prewarm(self) -> None:
        """Start the worker (and load the model) before the first copy arrives; "loaded" once
        it answered a ping, which runs only after its initializer loaded the model.

        Returns at once: the process start happens in a thread of its own. Starting a process
        blocks its caller until the forkserver has imported MLflow (> 30 s on a busy machine)
        and the pool's submit holds a lock meanwhile; on the event loop that stalled every
        request and admin call, a rollback's route change included.
        """
        with self._lock:
            self._start += 1
            start = self._start
            self.status, self.error = "loading", None
        threading.Thread(
            target=self._launch,
            args=(start,),
            name=f"shadow-start-{self.model}-{self.version}",
            daemon=True,
        ).start()

    def _launch(self, start: int) -> None:
        """Create the pool and send the first ping (this is where the process starts)."""
        with self._lock:
            if start != self._start:
                return  # closed or restarted before this thread ran
            try:
                pool = self._ensure()
            except Exception as exc:  # noqa: BLE001 - reported by /readyz
                self._fail(f"failed to start: {type(exc).__name__}: {exc}")
                return
        try:
            fut = pool.submit(_ping)
        except Exception as exc:  # noqa: BLE001 - a pool closed meanwhile included
            if start == self._start:
                self._fail(f"failed to start: {type(exc).__name__}: {exc}")
            return

        def done(f) -> None:  # in the pool's management thread
            if start != self._start:
                return  # closed or restarted since
            try:
                why = f.result()
            except BaseException as exc:  # noqa: BLE001 - a cancelled ping included
                self._fail(f"failed to start: {type(exc).__name__}: {exc}")
                return
            if why is None:
                self.status = "loaded"
            else:
                self._fail(f"failed to load the model: {why}")

        fut.add_done_callback(done)

    def retry(self) -> None:
        """Start again after a failed start, at most every RETRY_INTERVAL seconds."""
        if self.status == "failed" and time.monotonic() - self._failed_at >= self.RETRY_INTERVAL:
            self.close()
            self.prewarm()

    async def predict_many(self, reqs: list, timeout: float) -> list:
        from model_rollout.gateway.models import _failed, row_chunks

        loop = asyncio.get_running_loop()
        unavailable = f"shadow worker of version {self.version} failed to start or died"
        t0 = time.perf_counter()
        results: list = []
        for chunk in row_chunks(reqs, self.max_batch_rows):
            pool = self._pool
            if pool is None or self.status != "loaded":  # died on an earlier chunk
                results.extend(_failed(unavailable, 503, "UNAVAILABLE") for _ in chunk)
                continue
            try:
                part = await asyncio.wait_for(
                    loop.run_in_executor(pool, _run, chunk, self.batching), timeout
                )
            except TimeoutError:
                late = (
                    f"shadow {self.version} of {self.model!r} did not answer within {timeout:g} s"
                )
                part = [_failed(late, 504, "TIMEOUT") for _ in chunk]
            except BrokenProcessPool as exc:
                codes = [p.exitcode for p in (getattr(pool, "_processes", None) or {}).values()]
                log.warning(
                    "shadow worker %s/%s died (%s; exit codes %s); restarting it",
                    self.model,
                    self.version,
                    exc,
                    codes,
                )
                if pool is self._pool:
                    self.close()
                    self.prewarm()
                if not any(c is not None and c < 0 for c in codes):
                    # not killed by a signal (a crash in the model's native code, the OOM
                    # killer): the process was lost, e.g. with its forkserver; the copies are
                    # dropped, not the candidate's errors
                    raise WorkerLost(len(reqs)) from exc
                part = [_failed(unavailable, 503, "UNAVAILABLE") for _ in chunk]
            results.extend(part)
        ms = (time.perf_counter() - t0) * 1000.0
        for r in results:
            r.latency_ms = ms
        return results

    def close(self, wait: bool = False) -> None:
        """Stop the worker; the pool's shutdown runs in a thread unless `wait` (it can block
        behind a process start still under way)."""
        with self._lock:
            self._start += 1
            if self.status == "loaded":
                self.status = "loading"
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if wait:
            _stop_pool(pool)
        else:
            threading.Thread(
                target=_stop_pool, args=(pool,), name="shadow-stop", daemon=True
            ).start()


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    # under the pool's own lock: a process start under way finishes first, so it is stopped too
    with getattr(pool, "_shutdown_lock", None) or contextlib.nullcontext():
        procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:  # a busy (e.g. hung) worker would otherwise outlive its lane
        with contextlib.suppress(Exception):
            p.terminate()
