"""Versions on separate scrape targets (one MLServer per version, replicas): the Prometheus
source must read the split as the route made it (issue #13).

Each target is scraped at its own moment, so two versions' counts cover different spans. These
tests hand the source Prometheus API answers for two targets with exactly known counters
(constant rates, scrapes offset by a fraction of the interval) and check what it makes of
them; the real-process runs are in test_contract.py and tests/e2e/test_nginx_mlserver.py.
"""

from __future__ import annotations

from model_rollout.backends.prometheus import PrometheusSource
from model_rollout.judge.snapshot import find_arm

OPTIONS = {
    "preset": "custom",
    "requests": "req_total",
    "model_label": "model",
    "version_label": "version",
    "scrape_interval": 1,
}
SINCE, UNTIL = 1000.0, 1060.0


def labels(version: str, name: bool = True) -> dict:
    # one server per version: Prometheus labels its series with the target's job and instance
    out = {"model": "m", "version": version, "job": "servers", "instance": f"10.0.0.{version}:8082"}
    return {"__name__": "req_total", **out} if name else out


def counter(rate: float, t: float) -> float:
    return rate * (t - SINCE + 100.0)  # serving for 100 s before the stage


def answers(targets: dict[str, dict]) -> list[tuple[str, list]]:
    """What Prometheus answers to the source's five queries for `targets`: version ->
    {rate, first (first scrape in the stage, or None), last (latest scrape), existed}."""
    fresh, at_end, after_start, at_since, resets = [], [], [], [], []
    for v, t in targets.items():
        fresh.append({"metric": labels(v, name=False), "value": [UNTIL, str(t["last"])]})
        at_end.append(
            {"metric": labels(v, name=False), "value": [UNTIL, str(counter(t["rate"], t["last"]))]}
        )
        if t["first"] is not None:
            samples = [[t["first"] + k, str(counter(t["rate"], t["first"] + k))] for k in range(3)]
            after_start.append({"metric": labels(v), "values": samples})
        if t.get("existed", True):
            at_since.append(
                {"metric": labels(v, name=False), "value": [SINCE, str(counter(t["rate"], SINCE))]}
            )
        resets.append({"metric": labels(v, name=False), "value": [UNTIL, "0"]})
    return [
        ("", fresh),
        ("requests", at_end),
        ("requests", after_start),
        ("requests", at_since),
        ("requests", resets),
    ]


def snapshot(targets: dict[str, dict]) -> dict:
    src = PrometheusSource("http://127.0.0.1:1", OPTIONS)

    def no_raw(*_):
        raise AssertionError("no counter restarted: raw samples are not needed")

    return src._assemble("m", SINCE, UNTIL, UNTIL, answers(targets), no_raw)


def requests_of(snap: dict, version: str) -> float:
    arm = find_arm(snap, version, "primary")
    return 0.0 if arm is None else arm.requests


def test_counts_of_targets_scraped_at_different_moments_show_the_routes_split():
    # 75% / 25% by rate; v1's target scraped 0.2 s into each second, v2's 0.9 s, and v2's
    # last scrape failed (its latest is a second older): spans of 58.0 s and 56.1 s
    targets = {
        "1": {"rate": 750.0, "first": SINCE + 1.2, "last": SINCE + 59.2},
        "2": {"rate": 250.0, "first": SINCE + 1.9, "last": SINCE + 58.0},
    }
    snap = snapshot(targets)
    n1, n2 = requests_of(snap, "1"), requests_of(snap, "2")
    raw1, raw2 = 750.0 * 58.0, 250.0 * 56.1  # what plain differences give
    assert abs(raw2 / (raw1 + raw2) - 0.25) > 0.005  # skewed: a sample-ratio mismatch at scale
    assert abs(n2 / (n1 + n2) - 0.25) < 0.0005, (n1, n2)
    assert n1 <= raw1 and n2 <= raw2  # scaled down to the shared span, never up


def test_nothing_counts_until_every_serving_version_was_scraped_in_the_stage():
    targets = {
        "1": {"rate": 750.0, "first": SINCE + 1.2, "last": SINCE + 1.2},
        "2": {"rate": 250.0, "first": None, "last": SINCE + 0.9},  # scraped before the stage only
    }
    snap = snapshot(targets)
    assert snap["arms"] == []  # not "100% on version 1"
    targets["2"]["first"] = SINCE + 1.9
    targets["1"]["last"] = targets["2"]["last"] = SINCE + 2.9
    assert requests_of(snapshot(targets), "2") > 0


def test_a_retired_version_does_not_hold_the_stage_back():
    # version 0 existed at `since` but its target was last scraped long before (retired)
    targets = {
        "0": {"rate": 10.0, "first": None, "last": SINCE - 30.0},
        "1": {"rate": 750.0, "first": SINCE + 1.2, "last": SINCE + 59.2},
        "2": {"rate": 250.0, "first": SINCE + 1.9, "last": SINCE + 59.9},
    }
    snap = snapshot(targets)
    assert requests_of(snap, "1") > 0 and requests_of(snap, "2") > 0
    assert (
        abs(requests_of(snap, "2") / (requests_of(snap, "1") + requests_of(snap, "2")) - 0.25)
        < 0.0005
    )
