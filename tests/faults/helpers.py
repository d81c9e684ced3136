"""What the gateway fault tests share: Prometheus values, bounded waits, failure evidence."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of sample `name` (e.g. "..._total") with these labels; None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def scrape(gw) -> str:
    return httpx.get(f"{gw.url}/metrics", timeout=30).text


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.25) -> T:
    """Poll `probe` until it returns something other than None (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def readyz_reasons(gw) -> list[str]:
    """Why /readyz is not 200 (empty when it is)."""
    r = httpx.get(f"{gw.url}/readyz", timeout=30)
    return [] if r.status_code == 200 else r.json()["reasons"]


@contextlib.contextmanager
def gateway_evidence(*gateways) -> Iterator[None]:
    """On a failure, print each gateway's exit status and log tail (pytest shows it)."""
    try:
        yield
    except BaseException:
        for gw in gateways:
            code = gw.proc.poll() if gw.proc is not None else None
            tail = gw.log.read_text(errors="replace")[-4000:] if gw.log.exists() else ""
            print(f"\n--- gateway {gw.url} (exit status {code}), log tail:\n{tail}")
        raise
