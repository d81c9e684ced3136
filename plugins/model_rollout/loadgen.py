"""Bounded synthetic traffic with business feedback, for the demo, the tests and the benchmarks.

Why in the package: the demo, the rollout tests and the reliability checks all need the same
thing — live-looking requests to the gateway plus a delayed business outcome per request —
and all of it must stay bounded in count and time and only ever target loopback.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import requests

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def ensure_loopback(url: str) -> None:
    """Refuse any target but this machine: load is never sent anywhere else."""
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK and not host.startswith("127."):
        raise ValueError(f"load generator targets loopback only, got {url!r}")


@dataclass
class TrafficStats:
    """What the generator saw: answers per version, failures, feedback sent."""

    sent: int = 0
    answered: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    feedback: int = 0
    errors: list[str] = field(default_factory=list)
    # (unix time answered, request id, version) per answer, when the generator records them
    answers: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(self.answered.values())


class Traffic:
    """Sends scoring requests (and feedback) to one model at a target rate, in threads.

    :param url: gateway base URL (loopback only).
    :param model: registered model name.
    :param payload: callable giving (request body, routing key or None) for request i.
    :param rate: target requests per second over all workers.
    :param max_requests: hard bound on requests sent.
    :param max_seconds: hard bound on run time.
    :param conversion: version -> probability that a request answered by it "converts";
        the outcome (1/0) is posted as feedback. None: no feedback.
    :param workers: concurrent client threads (keep-alive sessions).
    :param timeout: seconds a request may take before it counts as failed (a slow answer on a
        loaded machine is not a lost request).
    :param record: keep (time, request id, version) of every answer in `stats.answers` (to
        reconcile with the gateway's request log).
    :param feedback_share: share of answered requests whose outcome is posted (real users
        mostly leave none; each outcome is one more call to the gateway).
    """

    def __init__(
        self,
        url: str,
        model: str,
        payload: Callable[[int], tuple[dict, str | None]],
        *,
        rate: float = 100.0,
        max_requests: int = 100_000,
        max_seconds: float = 600.0,
        conversion: dict[str, float] | Callable[[str], float] | None = None,
        workers: int = 2,
        seed: int = 0,
        timeout: float = 60.0,
        record: bool = False,
        feedback_share: float = 1.0,
    ):
        ensure_loopback(url)
        self.record = record
        self.feedback_share = feedback_share
        self.url = url.rstrip("/")
        self.model = model
        self.payload = payload
        self.rate = rate
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.conversion = conversion
        self.workers = workers
        self.timeout = timeout
        self.stats = TrafficStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next = 0
        self._t0 = 0.0

    def _p_convert(self, version: str) -> float | None:
        if self.conversion is None:
            return None
        if callable(self.conversion):
            return self.conversion(version)
        return self.conversion.get(version, self.conversion.get("*", 0.0))

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.max_requests or self._stop.is_set():
                return None
            i = self._next
            self._next += 1
        due = self._t0 + i / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
        if self._stop.is_set() or time.monotonic() - self._t0 > self.max_seconds:
            return None
        return i

    def _worker(self) -> None:
        s = requests.Session()
        invoke = f"{self.url}/models/{self.model}/invocations"
        feedback = f"{self.url}/models/{self.model}/feedback"
        while (i := self._take()) is not None:
            body, key = self.payload(i)
            headers = {"X-Routing-Key": key} if key else {}
            try:
                r = s.post(invoke, json=body, headers=headers, timeout=self.timeout)
            except requests.RequestException as e:
                with self._lock:
                    self.stats.sent += 1
                    self.stats.failed["connection"] += 1
                    if len(self.stats.errors) < 20:
                        self.stats.errors.append(str(e))
                continue
            version = r.headers.get("X-Model-Version", "?")
            with self._lock:
                self.stats.sent += 1
                if r.status_code == 200:
                    self.stats.answered[version] += 1
                    if self.record:
                        rid = r.headers.get("X-Request-Id", "")
                        self.stats.answers.append((time.time(), rid, version))
                else:
                    self.stats.failed[f"{version}:{r.status_code}"] += 1
            p = self._p_convert(version)
            if p is not None and r.status_code == 200:
                with self._lock:
                    if self._rng.random() >= self.feedback_share:
                        continue
                    outcome = 1.0 if self._rng.random() < p else 0.0
                rid = r.headers.get("X-Request-Id")
                try:
                    fr = s.post(
                        feedback, json={"request_id": rid, "outcome": outcome}, timeout=self.timeout
                    )
                    if fr.status_code < 300:
                        with self._lock:
                            self.stats.feedback += 1
                except requests.RequestException:
                    pass

    def start(self) -> Traffic:
        self._t0 = time.monotonic()
        self._threads = [
            threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 15.0) -> TrafficStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        return self.stats

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _conversion(items: list[str]) -> dict[str, float] | None:
    """["*=0.4", "2=0.2"] -> {"*": 0.4, "2": 0.2}; [] -> None (no feedback)."""
    out = {}
    for item in items:
        version, sep, p = item.partition("=")
        try:
            out[version if sep else "*"] = float(p if sep else version)
        except ValueError:
            raise SystemExit(
                f"--conversion {item!r}: expected VERSION=P or P, P in [0, 1]"
            ) from None
    return out or None


def main(argv: list[str] | None = None) -> int:
    """`python -m model_rollout.loadgen URL MODEL --payloads FILE ...`.

    Why a process of its own: a load generator sharing a process (and its GIL) with what it
    measures, such as `dag.test()`, slows both. Runs until a bound or SIGTERM/SIGINT, prints
    progress every 10 s to stderr, then writes a JSON summary (with every answer when
    `--record`) to `--out`.
    """
    import argparse
    import json
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m model_rollout.loadgen")
    parser.add_argument("url", help="gateway base URL (loopback only)")
    parser.add_argument("model")
    parser.add_argument("--payloads", required=True, help="JSON file: a list of request bodies")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--conversion", action="append", default=[], help="VERSION=P or P")
    parser.add_argument(
        "--feedback-share", type=float, default=1.0, help="share of answers given an outcome"
    )
    parser.add_argument("--record", action="store_true", help="keep every answer in --out")
    parser.add_argument("--out", required=True, help="JSON summary written at the end")
    args = parser.parse_args(argv)
    with open(args.payloads) as f:
        bodies = json.load(f)
    if not isinstance(bodies, list) or not bodies:
        raise SystemExit(f"--payloads {args.payloads}: expected a non-empty JSON list of bodies")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    traffic = Traffic(
        args.url,
        args.model,
        lambda i: (bodies[i % len(bodies)], None),
        rate=args.rate,
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
        conversion=_conversion(args.conversion),
        workers=args.workers,
        record=args.record,
        feedback_share=args.feedback_share,
    )
    started = time.time()
    traffic.start()
    while not stop.wait(10.0) and any(t.is_alive() for t in traffic._threads):
        st = traffic.stats
        print(
            f"loadgen: {st.sent} sent, {st.ok} answered, {sum(st.failed.values())} failed "
            f"in {time.time() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    st = traffic.stop()
    stopped = time.time()
    summary = {
        "started": started,
        "stopped": stopped,
        "sent": st.sent,
        "answered": dict(st.answered),
        "failed": dict(st.failed),
        "feedback": st.feedback,
        "errors": st.errors,
        "answers": st.answers,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
