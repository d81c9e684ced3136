"""The version of the statistics snapshot format, shared by every metric source and the judge.

1: no `schema` field; latency only as the gateway's fixed bucket indexes (`latency.counts`).
2: `schema: 2`; latency may also come as explicit bounds (`latency.bounds_ms` + `counts`), so a
   source with other buckets (a Prometheus histogram) needs no re-binning.
docs/architecture.md describes the format.
"""

SNAPSHOT_SCHEMA = 2
