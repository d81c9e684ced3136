"""Watch the route each gateway replica serves, from a thread per replica (bounded in time).

`states[url]` lists (generation, live weights, shadows, staging) in the order that replica
showed them; `seen[url][generation]` is when (time.monotonic()) it first showed it. A route
change is live on a replica from the first look that shows its generation or a later one.
"""

from __future__ import annotations

import threading
import time

import requests


class RouteWatch:
    def __init__(
        self, urls: list[str], token: str, model: str, every: float = 0.1, max_seconds=1800.0
    ):
        self.urls, self.token, self.model = list(urls), token, model
        self.every, self.max_seconds = every, max_seconds
        self.states: dict[str, list[tuple]] = {u: [] for u in self.urls}
        self.seen: dict[str, dict[int, float]] = {u: {} for u in self.urls}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(u,), daemon=True) for u in urls]

    def _run(self, url: str) -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {self.token}"
        end = time.monotonic() + self.max_seconds
        while not self._stop.wait(self.every) and time.monotonic() < end:
            try:
                r = s.get(f"{url}/admin/models/{self.model}/route", timeout=5).json()
            except (requests.RequestException, ValueError):
                continue
            now = time.monotonic()
            state = (
                int(r.get("generation") or 0),
                {v: w for v, w in (r.get("weights") or {}).items() if w},
                tuple(r.get("shadows") or ()),
                r.get("staging") or None,
            )
            if state[0] not in self.seen[url]:
                self.seen[url][state[0]] = now
                self.states[url].append(state)

    def live_at(self, url: str, generation: int) -> float | None:
        """When `url` first served `generation` or a later one (None: not yet)."""
        times = [t for g, t in self.seen[url].items() if g >= generation]
        return min(times) if times else None

    def lags(self, first: str, second: str) -> dict[int, float]:
        """Seconds between `first` and `second` showing each generation both showed."""
        a, b = self.seen[first], self.seen[second]
        return {g: b[g] - a[g] for g in a if g in b}

    def __enter__(self) -> RouteWatch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
