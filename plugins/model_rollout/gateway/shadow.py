"""Shadow mirroring, off the request path.

The primary answer is sent before its copy is even queued; each shadow version has its own
bounded queue and worker, so a slow, failing or overloaded shadow can only fill its own queue
(then copies are dropped and counted), never delay a primary answer or another shadow. The
worker lets copies pile up for a few milliseconds and sends them to the version's batcher
together, so a 100% mirror costs a few large predict calls rather than one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model_rollout.gateway.scoring import ScoringRequest, prediction_rows
from model_rollout.gateway.shadow_worker import WorkerLost

log = logging.getLogger("model_rollout.gateway.shadow")


@dataclass(slots=True)
class ShadowCopy:
    request_id: str
    ts: float
    req: ScoringRequest
    primary_version: str
    primary_predictions: Any  # None when the primary did not answer 200


class _Lane:
    def __init__(self, maxsize: int):
        self.queue: asyncio.Queue[ShadowCopy] = asyncio.Queue(maxsize)
        self.task: asyncio.Task | None = None


class ShadowMirror:
    """Per-(model, shadow version) bounded queues with one worker each.

    :param get_version: returns the loaded shadow version or None.
    :param on_result: called with (model, version, copy, result) on the event loop.
    """

    def __init__(
        self,
        *,
        queue_size: int,
        batch_wait: float,
        max_batch_rows: int,
        timeout: float,
        get_version: Callable[[str, str], Any],
        on_result: Callable[[str, str, ShadowCopy, Any], None],
    ):
        self.queue_size = queue_size
        self.batch_wait = batch_wait
        self.max_batch_rows = max_batch_rows
        self.timeout = timeout
        self._get_version = get_version
        self._on_result = on_result
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.dropped_unready: dict[tuple[str, str], int] = {}  # part of `dropped`
        self.mirrored: dict[tuple[str, str], int] = {}
        self._closed = False

    def submit(self, model: str, version: str, copy: ShadowCopy) -> bool:
        """Queue a copy for a shadow version; False (and counted) when its queue is full."""
        key = (model, version)
        lane = self._lanes.get(key)
        if lane is None:
            if self._closed:
                return False
            lane = self._lanes[key] = _Lane(self.queue_size)
            lane.task = asyncio.get_running_loop().create_task(self._work(model, version, lane))
        try:
            lane.queue.put_nowait(copy)
        except asyncio.QueueFull:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return False
        self.mirrored[key] = self.mirrored.get(key, 0) + 1
        return True

    def depth(self) -> dict[tuple[str, str], int]:
        return {k: lane.queue.qsize() for k, lane in self._lanes.items()}

    async def _work(self, model: str, version: str, lane: _Lane) -> None:
        q = lane.queue
        while True:
            first = await q.get()
            if self.batch_wait > 0 and q.qsize() < self.max_batch_rows:
                await asyncio.sleep(self.batch_wait)
            copies = [first]
            rows = first.req.n_rows or 1
            while rows < self.max_batch_rows and not q.empty():
                c = q.get_nowait()
                copies.append(c)
                rows += c.req.n_rows or 1
            target = self._get_version(model, version)
            if target is None or target.status != "loaded":
                # Not servable yet (a worker still loading its model) or any more: drop and
                # count. Sending them would time out and count as the shadow's errors.
                key = (model, version)
                self.dropped[key] = self.dropped.get(key, 0) + len(copies)
                self.dropped_unready[key] = self.dropped_unready.get(key, 0) + len(copies)
                if target is not None and target.status == "failed":
                    retry = getattr(target, "retry", None)
                    if retry is not None:
                        retry()
                continue
            try:
                results = await target.predict_many([c.req for c in copies], self.timeout)
            except WorkerLost:
                key = (model, version)
                self.dropped[key] = self.dropped.get(key, 0) + len(copies)
                self.dropped_unready[key] = self.dropped_unready.get(key, 0) + len(copies)
                continue
            except Exception:  # noqa: BLE001 - a shadow never takes the gateway down
                log.exception("shadow %s/%s failed", model, version)
                continue
            for c, res in zip(copies, results, strict=True):
                try:
                    self._on_result(model, version, c, res)
                except Exception:  # noqa: BLE001
                    log.exception("recording shadow result failed")

    async def close(self) -> None:
        self._closed = True
        for lane in self._lanes.values():
            if lane.task:
                lane.task.cancel()
        for lane in self._lanes.values():
            if lane.task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lane.task


def pair_rows(shadow_preds: Any, primary_preds: Any) -> tuple[list, list] | None:
    """Row lists to pair, or None when the two answers do not line up row by row."""
    s = prediction_rows(shadow_preds)
    p = prediction_rows(primary_preds)
    if len(s) != len(p):
        return None
    return s, p
