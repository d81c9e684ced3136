"""A small, bounded HTTP/1.1 load generator over keep-alive loopback connections.

Why raw asyncio streams rather than httpx: the client shares the machine's two cores with the
server under test, so it must cost as little CPU per request as possible (~30 us here, several
times less than httpx). Bounded in requests and in time; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    latency_ms: float


@dataclass
class LoadResult:
    responses: list[Response] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # transport failures (no HTTP answer)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return sum(1 for r in self.responses if r.status == 200)

    def latencies(self, status: int | None = 200) -> list[float]:
        return [r.latency_ms for r in self.responses if status is None or r.status == status]

    def rps(self) -> float:
        return len(self.responses) / self.elapsed_s if self.elapsed_s else 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict | None = None
    ) -> Response:
        if self.writer is None:
            await self.open()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        if body:
            lines.append("Content-Type: application/json")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        t0 = time.perf_counter()
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        hdrs = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        payload = await self.reader.readexactly(n) if n else b""
        latency = (time.perf_counter() - t0) * 1000.0
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, hdrs, payload, latency)


async def run_load(
    url: str,
    make_request: Callable[[int], tuple[bytes, dict]],
    *,
    total: int,
    concurrency: int,
    max_seconds: float,
    on_progress: Callable[[int], None] | None = None,
    keep_responses: bool = True,
) -> LoadResult:
    """POST `total` requests to `url` from `concurrency` keep-alive connections.

    :param make_request: i -> (body, extra headers) for request number i.
    :param max_seconds: stop issuing new requests after this long, whatever is left.
    """
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the load generator only targets loopback addresses")
    path = parts.path or "/"
    result = LoadResult()
    counter = iter(range(total))
    deadline = time.monotonic() + max_seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        conn = Connection(parts.hostname, parts.port or 80)
        try:
            for i in counter:
                if time.monotonic() > deadline:
                    break
                body, headers = make_request(i)
                try:
                    resp = await conn.request("POST", path, body, headers)
                except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                    result.failures.append(f"request {i}: {type(exc).__name__}: {exc}")
                    await conn.close()
                    continue
                if keep_responses:
                    result.responses.append(resp)
                else:
                    result.responses.append(Response(resp.status, {}, b"", resp.latency_ms))
                done += 1
                if on_progress and done % 1000 == 0:
                    on_progress(done)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - t0
    return result


def percentile(values: list[float], q: float) -> float:
    """Exact q-quantile (0..1) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))
    return s[k]
