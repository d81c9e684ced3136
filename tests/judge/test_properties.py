"""Property tests (hypothesis): monotonicity, symmetry, robustness to any input."""

from __future__ import annotations

import copy
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_rollout.judge import JudgeConfig, evaluate

from .helpers import arm, canary_snapshot

RANK = {"healthy": 0, "inconclusive": 1, "degraded": 2}
CONFIG = JudgeConfig(min_samples=100)
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _errors_snapshot(n_base, n_cand, e_base, e_cand):
    base = arm("1", n_base, e_base)
    cand = arm("2", n_cand, e_cand)
    return canary_snapshot(base, cand)


@PROPERTY
@given(
    n_base=st.integers(0, 400_000),
    n_cand=st.integers(0, 40_000),
    base_rate=st.floats(0.0, 0.2),
    cand_rate=st.floats(0.0, 0.2),
    extra=st.integers(1, 2_000),
)
def test_more_candidate_errors_never_improve_the_verdict(
    n_base, n_cand, base_rate, cand_rate, extra
):
    e_base = int(n_base * base_rate)
    e_cand = int(n_cand * cand_rate)
    more = min(e_cand + extra, n_cand)
    # Latency histograms are identical in both snapshots, so only the error counts move.
    snap = _errors_snapshot(n_base, n_cand, e_base, e_cand)
    worse = copy.deepcopy(snap)
    worse["arms"][1]["errors"] = more
    v1 = evaluate(snap, baseline="1", candidate="2", mode="canary", config=CONFIG)
    v2 = evaluate(worse, baseline="1", candidate="2", mode="canary", config=CONFIG)
    assert RANK[v2.metrics["errors"].status] >= RANK[v1.metrics["errors"].status]
    assert RANK[v2.status] >= RANK[v1.status] or v1.invalid or v2.invalid


@PROPERTY
@given(
    n=st.integers(0, 200_000),
    rate=st.floats(0.0, 0.3),
    scale=st.floats(0.5, 2.0),
    mode=st.sampled_from(["canary", "shadow"]),
)
def test_swapping_identical_arms_changes_nothing(n, rate, scale, mode):
    errors = int(n * rate)
    kind = "primary" if mode == "canary" else "shadow"

    def snapshot(first: str, second: str) -> dict:
        a = arm(first, n, errors, scale=scale, clicks=0.1 * n)
        b = arm(second, n, errors, scale=scale, clicks=0.1 * n, arm_kind=kind)
        snap = canary_snapshot(a, b, weights={first: 50, second: 50})
        if mode == "shadow":
            a2 = arm(second, n, errors, scale=scale, clicks=0.1 * n)
            b2 = arm(first, n, errors, scale=scale, clicks=0.1 * n, arm_kind="shadow")
            snap["arms"] += [a2, b2]
            snap["pairs"] = [
                {"shadow_version": x, "primary_version": y, "pairs": n, "agree": n}
                for x, y in ((first, second), (second, first))
            ]
        return snap

    cfg = JudgeConfig(min_samples=100, kpi={"enabled": True})
    v1 = evaluate(snapshot("a", "b"), baseline="a", candidate="b", mode=mode, config=cfg)
    v2 = evaluate(snapshot("a", "b"), baseline="b", candidate="a", mode=mode, config=cfg)
    assert v1.status == v2.status
    assert v1.invalid == v2.invalid
    assert {k: m.status for k, m in v1.metrics.items()} == {
        k: m.status for k, m in v2.metrics.items()
    }
    for name, m in v1.metrics.items():
        other = v2.metrics[name]
        if math.isfinite(m.value):
            assert math.isclose(m.value, other.value, rel_tol=1e-9, abs_tol=1e-9)


_number = st.one_of(
    st.integers(-5, 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)
_counts = st.dictionaries(
    st.one_of(st.integers(-3, 1000).map(str), st.text(max_size=3)), _number, max_size=6
)
_arm = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["1", "2", 1, 2, None]),
        "arm": st.sampled_from(["primary", "shadow", "staging", None]),
    },
    optional={
        "requests": _number,
        "errors": _number,
        "rejected": _number,
        "latency": st.one_of(st.none(), st.fixed_dictionaries({"counts": _counts}), _number),
        "feedback": st.one_of(
            st.none(),
            st.fixed_dictionaries({"count": _number, "sum": _number, "sum_sq": _number}),
        ),
        "outputs": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"kind": st.sampled_from(["categorical", "numeric", "x"]), "counts": _counts}
            ),
        ),
    },
)
_pair = st.fixed_dictionaries(
    {
        "shadow_version": st.sampled_from(["1", "2"]),
        "primary_version": st.sampled_from(["1", "2"]),
    },
    optional={
        "pairs": _number,
        "agree": _number,
        "abs_delta_sum": _number,
        "abs_delta_sq_sum": _number,
    },
)
_snapshot = st.one_of(
    st.none(),
    _number,
    st.fixed_dictionaries(
        {},
        optional={
            "weights": st.one_of(st.none(), st.dictionaries(st.sampled_from(["1", "2"]), _number)),
            "arms": st.one_of(st.none(), st.lists(_arm, max_size=4), _number),
            "pairs": st.one_of(st.none(), st.lists(_pair, max_size=2)),
        },
    ),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(snapshot=_snapshot, mode=st.sampled_from(["canary", "shadow"]))
def test_degenerate_inputs_never_raise(snapshot, mode):
    cfg = JudgeConfig(kpi={"enabled": True}, shadow={"max_mean_abs_delta": 1.0})
    v = evaluate(snapshot, baseline="1", candidate="2", mode=mode, config=cfg)
    assert v.status in RANK
    assert v.reason
    assert "could not be judged" not in v.reason  # handled explicitly, not by the guard
    json.dumps(v.to_json(), allow_nan=False)
