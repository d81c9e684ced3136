"""What a router, deployer or metric source can do, and what a policy asks of them.

A policy that needs something its serving stack cannot do fails when it is loaded
(`model-rollout validate-policies`, the DAG's import), naming the field, instead of failing
mid-rollout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model_rollout.policy import Policy

# traffic routers
MIRROR = "mirror"  # sends copies of live requests to shadow versions
STICKY = "sticky"  # a request's routing key keeps it on one version across weight changes
STAGING_SLOT = "staging_slot"  # holds a version outside live traffic for staging checks
COMPARE_AND_SET = "compare_and_set"  # route writes carry a generation (safe to retry)
# deployers
STAGING_REQUESTS = "staging_requests"  # scores a request on the staging version only
UPSTREAM = "upstream"  # serves a version another server hosts (a URL), not only a model URI
# metric sources
LATENCY_HISTOGRAM = "latency_histogram"  # per-arm latency histograms, not just averages
KPI_FEEDBACK = "kpi_feedback"  # business outcomes joined to the version that answered
SHADOW_PAIRING = "shadow_pairing"  # a shadow's prediction paired with the primary's answer
OUTPUT_DISTRIBUTION = "output_distribution"  # counts of predicted values per version

BY_ROLE = {
    "router": frozenset({MIRROR, STICKY, STAGING_SLOT, COMPARE_AND_SET}),
    "deployer": frozenset({STAGING_REQUESTS, UPSTREAM}),
    "metrics": frozenset({LATENCY_HISTOGRAM, KPI_FEEDBACK, SHADOW_PAIRING, OUTPUT_DISTRIBUTION}),
}
"""Which capabilities belong to which role (a class playing several roles declares them all)."""

DESCRIPTIONS = {
    MIRROR: "mirrors live requests to shadow versions",
    STICKY: "keeps a routing key on one version",
    STAGING_SLOT: "holds a version outside live traffic",
    COMPARE_AND_SET: "writes routes as compare-and-set on a generation",
    STAGING_REQUESTS: "scores requests on the staging version only",
    UPSTREAM: "serves versions hosted elsewhere (a URL)",
    LATENCY_HISTOGRAM: "counts latency histograms per version and arm",
    KPI_FEEDBACK: "counts business outcomes per version",
    SHADOW_PAIRING: "pairs shadow predictions with the primary's",
    OUTPUT_DISTRIBUTION: "counts predicted values per version",
}
ROLE_NOUNS = {"router": "traffic router", "deployer": "deployer", "metrics": "metric source"}


def required(policy: Policy) -> dict[str, dict[str, str]]:
    """What the policy needs, per role ("router", "deployer", "metrics"): capability -> the
    policy field that asks for it."""
    need: dict[str, dict[str, str]] = {"router": {}, "deployer": {}, "metrics": {}}
    need["router"][STAGING_SLOT] = "staging"
    need["deployer"][STAGING_REQUESTS] = "staging.sample_requests"
    judge = policy.judge
    if judge.latency.enabled or judge.latency_tail.enabled:
        need["metrics"][LATENCY_HISTOGRAM] = "judge.latency.enabled"
    if judge.kpi.enabled:
        need["metrics"][KPI_FEEDBACK] = "judge.kpi.enabled"
    if policy.shadow.enabled:
        need["router"][MIRROR] = "shadow.enabled"
        if judge.shadow.enabled:
            need["metrics"][SHADOW_PAIRING] = "judge.shadow.enabled"
        if judge.output_drift.enabled:
            need["metrics"][OUTPUT_DISTRIBUTION] = "judge.output_drift.enabled"
    return need


def missing(policy: Policy, offered: dict[str, frozenset[str]]) -> list[str]:
    """One sentence per capability the policy needs and its stack lacks (empty: all there).

    :param offered: role -> capabilities of the implementation the policy chose for it.
    """
    out = []
    for role, needs in required(policy).items():
        chosen = getattr(policy.serving, role)
        for cap, field_name in needs.items():
            if cap in offered.get(role, frozenset()):
                continue
            fix = f"set {field_name} to false or " if field_name.endswith(".enabled") else ""
            noun = ROLE_NOUNS[role]
            out.append(
                f"field '{field_name}' needs a {noun} that {DESCRIPTIONS[cap]} ({cap}); "
                f"serving.{role} {chosen!r} cannot: {fix}choose a {noun} that can"
            )
    return out
