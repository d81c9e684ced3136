"""evaluate(): the public contract, errors verdicts, degenerate input, config validation."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from model_rollout.judge import JudgeConfig, Verdict, evaluate
from model_rollout.judge.counts import log_evalue_above, null_share, staged_log_evalue

from .helpers import arm, canary_snapshot


def judge(snap, mode="canary", **cfg) -> Verdict:
    return evaluate(snap, baseline="1", candidate="2", mode=mode, config=JudgeConfig(**cfg))


def strict_json(verdict: Verdict) -> dict:
    data = verdict.to_json()
    json.dumps(data, allow_nan=False)
    return data


def test_errors_doubled_is_degraded_with_evidence():
    v = judge(
        canary_snapshot(arm("1", 190_000, 1_900), arm("2", 10_000, 200)),
        errors={"max_relative_increase": 0.0},
    )
    assert v.status == "degraded"
    errors = v.metrics["errors"]
    assert errors.status == "degraded"
    assert errors.value >= errors.threshold
    # The e-value is the one-sided split e-process at the tolerance edge: the 0.1 pp floor over
    # a 1% baseline is a tolerated ratio of 1.1. One stage: the staged mixture over rate ratios,
    # within a nat of the Beta mixture on the share (two priors, the same evidence).
    assert errors.tolerance == pytest.approx(1.1)
    theta0 = float(null_share(0.05, 1.1))
    assert errors.value == pytest.approx(staged_log_evalue([200], [2100], [theta0], "above"))
    assert errors.value == pytest.approx(float(log_evalue_above(200, 2100, theta0)), abs=1.0)
    assert errors.threshold == pytest.approx(math.log(4 / 0.05))  # 4 metrics in force
    assert errors.estimate == pytest.approx((200 / 10_000) / (1_900 / 190_000))
    lo, hi = errors.interval
    assert lo < errors.estimate < hi
    data = strict_json(v)
    assert data["status"] == "degraded"
    assert data["metrics"]["errors"]["samples"]["candidate_errors"] == 200
    assert "errors" in data["reason"]


def test_identical_arms_with_plenty_of_data_are_healthy():
    # Showing that 1% errors rose by less than 0.1 pp takes a few hundred thousand requests.
    v = judge(canary_snapshot(arm("1", 9_500_000, 95_000), arm("2", 500_000, 5_000)))
    assert v.status == "healthy", v.reason
    assert v.metrics["kpi"].status == "not_applicable"  # no feedback: nothing to judge
    assert all(m.status == "healthy" for k, m in v.metrics.items() if k != "kpi")
    assert v.alpha_per_metric == pytest.approx(0.05 / 4)
    assert v.checks["srm"]["mismatch"] is False


def test_a_tiny_error_increase_on_huge_traffic_stays_inside_the_floor():
    # 1.00% -> 1.05%: overwhelming evidence of *some* increase, but below the 0.1 pp floor.
    v = judge(canary_snapshot(arm("1", 19_000_000, 190_000), arm("2", 1_000_000, 10_500)))
    assert v.metrics["errors"].status == "healthy"
    assert v.metrics["errors"].interval[0] > 1.0  # the increase itself is beyond doubt


def test_min_samples_gate_healthy():
    snap = canary_snapshot(arm("1", 380_000, 0), arm("2", 20_000, 0))
    v = judge(snap, min_samples=50_000)
    assert v.metrics["errors"].status == "inconclusive"
    assert "Waiting" in v.metrics["errors"].reason
    assert judge(snap).metrics["errors"].status == "healthy"


def test_rare_errors_healthy_through_the_absolute_floor():
    v = judge(canary_snapshot(arm("1", 1_900_000, 19), arm("2", 100_000, 2)))
    assert v.metrics["errors"].status == "healthy"
    assert "floor" in v.metrics["errors"].reason


@pytest.mark.parametrize(
    ("base", "cand", "words"),
    [
        (arm("1", 0, 0), arm("2", 0, 0), "no requests"),
        (arm("1", 1000, 0), arm("2", 0, 0), "no requests"),
        (arm("1", 1000, 1000), arm("2", 50, 50), None),  # all errors
        (arm("1", 1000, 0), arm("2", 50, 0), None),  # zero errors
    ],
)
def test_degenerate_traffic_is_inconclusive_never_an_exception(base, cand, words):
    v = judge(canary_snapshot(base, cand))
    assert v.status in ("inconclusive", "degraded")
    if base["requests"] == 0 or cand["requests"] == 0:
        assert v.status == "inconclusive"
    if words:
        assert words in v.metrics["errors"].reason
    strict_json(v)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["arms"][1].update(requests=float("nan")),
        lambda s: s["arms"][1].update(errors=-3),
        lambda s: s["arms"][1].update(errors=10**9),
        lambda s: s["arms"][1].update(requests="many"),
        lambda s: s["arms"][1]["latency"].update(counts={"12": float("nan")}),
        lambda s: s["arms"][1]["latency"].update(counts={"abc": 1}),
        lambda s: s["arms"][1]["latency"].update(counts=[1, 2, 3]),
        lambda s: s["arms"][1].update(latency=None),
        lambda s: s["arms"][0].update(feedback={"count": "x"}),
        lambda s: s.update(weights=None),
        lambda s: s.update(weights={"1": 100, "2": 0}),
        lambda s: s.update(arms=None),
        lambda s: s.update(arms=[None, 3, "x"]),
        lambda s: s["arms"].pop(),
    ],
)
def test_malformed_snapshots_are_inconclusive_with_a_reason(mutate):
    snap = canary_snapshot(arm("1", 19_000, 190, clicks=1900.0), arm("2", 1_000, 10, clicks=100.0))
    mutate(snap)
    v = judge(snap, kpi={"enabled": True})
    assert v.status == "inconclusive"
    assert v.reason
    assert "could not be judged" not in v.reason  # handled, not the last-resort guard
    strict_json(v)


def test_missing_weights_mark_the_verdict_invalid():
    snap = canary_snapshot(arm("1", 19_000, 190), arm("2", 1_000, 10))
    snap["weights"] = {"1": 100}
    v = judge(snap)
    assert v.invalid and "weights" in v.reason


def test_not_a_dict_and_same_version():
    assert judge(None).status == "inconclusive"
    assert judge([1, 2]).status == "inconclusive"
    snap = canary_snapshot(arm("1", 19_000, 190), arm("2", 1_000, 10))
    v = evaluate(snap, baseline="1", candidate="1", mode="canary", config=JudgeConfig())
    assert v.status == "inconclusive" and "same version" in v.reason


def test_programming_errors_still_raise():
    snap = canary_snapshot(arm("1", 19_000, 190), arm("2", 1_000, 10))
    with pytest.raises(ValueError, match="mode"):
        evaluate(snap, baseline="1", candidate="2", mode="blue", config=JudgeConfig())
    with pytest.raises(TypeError, match="JudgeConfig"):
        evaluate(snap, baseline="1", candidate="2", mode="canary", config={"alpha": 0.05})


def test_shadow_mode_needs_the_shadow_arm_and_pairs():
    snap = canary_snapshot(arm("1", 19_000, 190), arm("2", 1_000, 10))
    v = judge(snap, mode="shadow")
    assert v.status == "inconclusive" and "shadow arm of version 2" in v.reason
    snap["arms"][1]["arm"] = "shadow"
    v = judge(snap, mode="shadow")
    assert v.metrics["shadow_agreement"].status == "inconclusive"
    assert "pairs" in v.metrics["shadow_agreement"].reason


def test_versions_are_compared_as_strings():
    snap = canary_snapshot(arm("3", 19_000, 190), arm("4", 1_000, 10))
    v = evaluate(snap, baseline=3, candidate=4, mode="canary", config=JudgeConfig())  # type: ignore[arg-type]
    assert v.metrics


def test_config_defaults_and_metrics_in_force():
    cfg = JudgeConfig()
    assert cfg.alpha == 0.05
    assert cfg.metrics_in_force("canary") == ["errors", "latency", "latency_tail", "kpi"]
    assert cfg.metrics_in_force("shadow") == [
        "errors",
        "latency",
        "latency_tail",
        "shadow_agreement",
        "output_drift",
    ]
    with_kpi = JudgeConfig(kpi={"enabled": True}, latency={"enabled": False})
    assert with_kpi.metrics_in_force("canary") == ["errors", "latency_tail", "kpi"]

    # Every field documents itself (the policy YAML embeds this model).
    def undocumented(model) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(name)
        return missing

    for model in [
        JudgeConfig,
        *[
            f.annotation
            for f in JudgeConfig.model_fields.values()
            if hasattr(f.annotation, "model_fields")
        ],
    ]:
        assert undocumented(model) == [], model.__name__


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": 0.7}, "alpha"),
        ({"min_samples": 0}, "min_samples"),
        ({"latency": {"quantiles": [0.5, 1.2]}}, "quantiles"),
        ({"latency": {"tolerance": -0.1}}, "tolerance"),
        ({"latency_tail": {"quantile": 0.5}}, "quantile"),
        ({"kpi": {"direction": "up"}}, "direction"),
        ({"shadow": {"max_disagreement": 0}}, "max_disagreement"),
        ({"srm": {"alpha": 1}}, "alpha"),
        ({"errors": {"tolerance": 0.1}}, "tolerance"),  # unknown key: typo caught
    ],
)
def test_config_rejects_bad_values_naming_the_field(data, field):
    with pytest.raises(ValidationError) as info:
        JudgeConfig.model_validate(data)
    assert field in str(info.value)


def test_config_needs_one_metric():
    off = {"enabled": False}
    with pytest.raises(ValidationError, match="at least one metric"):
        JudgeConfig(
            errors=off, latency=off, latency_tail=off, kpi=off, shadow=off, output_drift=off
        )


def test_config_round_trips_through_json():
    cfg = JudgeConfig(kpi={"enabled": True, "margin": 0.01}, latency={"quantiles": [0.9, 0.5]})
    again = JudgeConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again == cfg
    assert again.latency.quantiles == [0.5, 0.9]


def test_tolerated_error_ratio_by_hand():
    from model_rollout.judge.config import ErrorsConfig
    from model_rollout.judge.errors import tolerated_ratio

    assert float(tolerated_ratio(0.01, ErrorsConfig())) == pytest.approx(1.2)  # 20% relative
    assert float(tolerated_ratio(0.002, ErrorsConfig())) == pytest.approx(1.5)  # 0.1 pp floor
    floor = ErrorsConfig(max_relative_increase=0.0)  # the floor alone
    assert float(tolerated_ratio(0.01, floor)) == pytest.approx(1.1)
    assert float(tolerated_ratio(0.05, floor)) == pytest.approx(1.02)
    assert float(tolerated_ratio(0.0001, floor)) == pytest.approx(2.0)  # capped at a doubling
    both = ErrorsConfig(max_relative_increase=0.5)
    assert float(tolerated_ratio(0.01, both)) == pytest.approx(1.5)
    none = ErrorsConfig(min_absolute_increase=0.0, max_relative_increase=0.0)
    assert float(tolerated_ratio(0.0, none)) == pytest.approx(1.0)
