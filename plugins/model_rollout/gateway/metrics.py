"""Prometheus exposition of the gateway's counters.

Why a custom collector: the request path already updates the statistics cells; reading the
since-start totals at scrape time costs the request path nothing (no per-request
`Counter.labels().inc()`), and /metrics agrees with the snapshots by construction.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from model_rollout.histogram import latency_bucket_bounds

if TYPE_CHECKING:
    from model_rollout.gateway.core import Gateway

# 10% steps from 0.5 ms to ~3.5 min: fine enough for the judge to read latency changes of
# 10-20% from Prometheus (docs/backends.md); each of the gateway's 2% buckets goes whole into
# the first of these at or above its upper edge
PROM_BUCKETS_MS = tuple(float(f"{0.5 * 1.1**k:.4g}") for k in range(137))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayCollector:
    def __init__(self, gateway: Gateway):
        self.gw = gateway

    def collect(self):
        gw = self.gw
        totals, pair_totals = gw.recorder.totals_copy()
        labels = ["model", "version", "arm"]
        req = CounterMetricFamily("model_gateway_requests", "Requests answered", labels=labels)
        err = CounterMetricFamily(
            "model_gateway_errors", "Requests the model failed (5xx)", labels=labels
        )
        rej = CounterMetricFamily(
            "model_gateway_rejected", "Requests rejected as malformed (4xx)", labels=labels
        )
        fb = CounterMetricFamily("model_gateway_feedback", "Feedback outcomes", labels=labels)
        fb_sum = GaugeMetricFamily(
            "model_gateway_feedback_outcome_sum",
            "Sum of the feedback outcomes since the process started",
            labels=labels,
        )
        fb_sum_sq = GaugeMetricFamily(
            "model_gateway_feedback_outcome_sum_sq",
            "Sum of the squared feedback outcomes since the process started",
            labels=labels,
        )
        lat = HistogramMetricFamily(
            "model_gateway_latency_seconds", "Model latency of successful answers", labels=labels
        )
        for (m, v, a), cell in sorted(totals.items()):
            lv = [m, v, a]
            req.add_metric(lv, cell.requests)
            err.add_metric(lv, cell.errors)
            rej.add_metric(lv, cell.rejected)
            fb.add_metric(lv, cell.fb_count)
            fb_sum.add_metric(lv, cell.fb_sum)
            fb_sum_sq.add_metric(lv, cell.fb_sum_sq)
            buckets = [0] * (len(PROM_BUCKETS_MS) + 1)  # the last: beyond every edge
            total = 0
            for k, n in cell.latency.items():
                buckets[bisect_left(PROM_BUCKETS_MS, latency_bucket_bounds(int(k))[1])] += n
                total += n
            cum, acc = [], 0
            for j, edge in enumerate(PROM_BUCKETS_MS):
                acc += buckets[j]
                cum.append((str(edge / 1000.0), acc))
            cum.append(("+Inf", total))
            lat.add_metric(lv, cum, cell.latency_sum_ms / 1000.0)
        yield from (req, err, rej, fb, fb_sum, fb_sum_sq, lat)

        pairs = CounterMetricFamily(
            "model_gateway_shadow_pairs",
            "Paired shadow predictions",
            labels=["model", "shadow", "primary"],
        )
        agree = CounterMetricFamily(
            "model_gateway_shadow_agree",
            "Paired predictions that agreed",
            labels=["model", "shadow", "primary"],
        )
        for (m, s, p), cell in sorted(pair_totals.items()):
            pairs.add_metric([m, s, p], cell.pairs)
            agree.add_metric([m, s, p], cell.agree)
        yield from (pairs, agree)

        dropped = CounterMetricFamily(
            "model_gateway_shadow_dropped",
            "Mirrored copies dropped (queue full or shadow unavailable)",
            labels=["model", "version"],
        )
        for (m, v), n in sorted(gw.mirror.dropped.items()):
            dropped.add_metric([m, v], n)
        yield dropped
        unready = CounterMetricFamily(
            "model_gateway_shadow_unready_dropped",
            "Of the dropped copies, those dropped because the shadow was not loaded yet "
            "(its worker starting) or had failed",
            labels=["model", "version"],
        )
        for (m, v), n in sorted(gw.mirror.dropped_unready.items()):
            unready.add_metric([m, v], n)
        yield unready
        depth = GaugeMetricFamily(
            "model_gateway_shadow_queue", "Copies waiting", labels=["model", "version"]
        )
        for (m, v), n in sorted(gw.mirror.depth().items()):
            depth.add_metric([m, v], n)
        yield depth

        gen = GaugeMetricFamily(
            "model_gateway_route_generation", "Route generation", labels=["model"]
        )
        weight = GaugeMetricFamily(
            "model_gateway_route_weight", "Route weight (percent)", labels=["model", "version"]
        )
        for name, route in sorted(gw.routes.items()):
            gen.add_metric([name], route.generation)
            for v, w in route.weights.items():
                weight.add_metric([name, v], w)
        yield from (gen, weight)

        loaded = GaugeMetricFamily(
            "model_gateway_version_loaded",
            "1 when the version is loaded",
            labels=["model", "version", "kind"],
        )
        for (m, v), lv in sorted(gw.versions.items()):
            loaded.add_metric([m, v, lv.kind], 1.0 if lv.status == "loaded" else 0.0)
        yield loaded

        store = gw.store
        yield CounterMetricFamily(
            "model_gateway_log_dropped",
            "Request-log rows dropped (writer backlog)",
            value=store.dropped_log_rows,
        )
        yield CounterMetricFamily(
            "model_gateway_log_rows_written",
            "Request-log rows committed to the store",
            value=store.rows_written,
        )
        yield CounterMetricFamily(
            "model_gateway_store_flush_errors",
            "Failed store flushes (retried)",
            value=store.flush_errors,
        )
        yield GaugeMetricFamily(
            "model_gateway_store_writable",
            "1 when the last store flush committed, 0 while flushes fail (rows kept and retried)",
            value=1.0 if store.last_flush_ok else 0.0,
        )
        yield GaugeMetricFamily(
            "model_gateway_log_backlog",
            "Request-log rows answered but not committed yet (lost if the process dies now)",
            value=store.backlog(),
        )


def render(gateway: Gateway) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    return generate_latest(registry)
