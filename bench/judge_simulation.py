"""Whole rollouts, side by side: this product's decisions against a Kayenta-style and a
threshold judge on the same simulated streams; writes docs/judge.md.

A verdict is one look; what a team lives with is how a rollout ends (promoted, rolled back,
paused for a human) and how long it took. So every run here is a whole rollout of the shipped
policy (include/policies/iris.yaml: shadow 10 min, steps 5 -> 25 -> 50 -> 100 at 10 min each,
extension up to 30 min, then a pause) at 20, 200 and 2000 requests a second:

* this product: `model_rollout.decisions.simulate.simulate_rollout`, i.e. the `StageMonitor`
  and gate rule the DAG runs, on `traffic.StageStream` snapshots shaped like the gateway's;
* kayenta: per step, a Kayenta-style judge (two-sided 98% Mann-Whitney / Hodges-Lehmann
  interval on one-minute aggregates of error rate, p50, p90, p99 and KPI, "High" when the
  interval clears 0.25 |HL|; score = share of metrics not flagged) looks every minute once 5
  minutes exist: below 75 rolls back at once; at the step's end 95+ goes on, 75..95 pauses
  (marginal), below 75 rolls back. It has no shadow analysis, so the shadow passes;
* threshold: Flagger / Argo style, per one-minute interval on the candidate alone (errors
  above max(2x, +0.5 pp) the usual rate, p99 above 1.5x the usual, KPI below 0.8x, shadow
  flips above 2%; shadow copies' latency is not checked): 3 failed intervals in a step roll
  back, otherwise the step passes.

The three judges see the same draws: each step's stream is seeded by (run, step), advanced one
poll interval (10 s) at a time. `--quick` runs a few hundred rollouts for a look.

    .venv/bin/python bench/judge_simulation.py            # full run, writes docs/judge.md
    .venv/bin/python bench/judge_simulation.py --quick --no-write
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.special import ndtri

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from model_rollout.decisions.plan import plan_for  # noqa: E402
from model_rollout.decisions.planner import plan_rollout  # noqa: E402
from model_rollout.decisions.simulate import RunResult, simulate_rollout, wilson  # noqa: E402
from model_rollout.decisions.traffic import (  # noqa: E402
    Effect,
    StageStream,
    Traffic,
    parse_effects,
)
from model_rollout.histogram import LATENCY_GROWTH, LATENCY_MIN_MS  # noqa: E402
from model_rollout.policy import Policy, load_policy  # noqa: E402

SHIPPED = ROOT / "include" / "policies" / "iris.yaml"
DOC = ROOT / "docs" / "judge.md"
RESULTS = Path(os.environ.get("TMPDIR", "/tmp")) / "model_rollout_judge_results.json"
RATES = (20, 200, 2000)
JUDGES = ("this product", "kayenta", "threshold")
KAYENTA_CONF, KAYENTA_FRACTION, KAYENTA_MIN_MINUTES = 0.98, 0.25, 5


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    effects: tuple[str, ...] = ()
    error_rate: float = 0.001
    feedback_share: float = 0.0
    diurnal: float = 0.0
    good: bool = True  # a candidate that should be promoted
    runs: int = 300  # at 200 req/s; at most 300 at the other rates
    rates: tuple[int, ...] = RATES


SCENARIOS = [
    Scenario("identical", "candidate identical to the incumbent (A/A), 0.1% errors", runs=2000),
    Scenario("identical, 1% errors", "A/A at 1% errors", error_rate=0.01),
    Scenario(
        "identical, KPI feedback",
        "A/A, every answer gets an outcome (10% conversion) 5-20 s later",
        feedback_share=1.0,
    ),
    Scenario(
        "identical, diurnal",
        "A/A under a daily swing compressed to 1 h (rate, errors +-50%, latency +-15%, KPI "
        "+-20%), feedback on every answer",
        feedback_share=1.0,
        diurnal=0.5,
        rates=(200,),
    ),
    Scenario(
        "burst of 30 errors",
        "fails 30 requests in a row once, in the first step",
        ("burst=30",),
        good=False,
    ),
    Scenario(
        "errors 1% -> 2%", "error rate doubled (incumbent at 1%)", ("errors=2x",), 0.01, good=False
    ),
    Scenario("latency +20%", "every latency x1.2", ("latency=+20%",), good=False),
    Scenario("p99 +200 ms on 3%", "3% of requests 200 ms slower", ("tail=+200ms@3%",), good=False),
    Scenario(
        "KPI -15%",
        "conversion 10% -> 8.5%, outcomes on every answer 5-20 s late",
        ("kpi=-15%",),
        feedback_share=1.0,
        good=False,
    ),
    Scenario(
        "crash on 8% of rows", "the candidate raises on 8% of rows", ("crash=8%",), good=False
    ),
    Scenario("shadow flips 5%", "5% of rows get another label", ("flips=5%",), good=False),
]


def traffic_of(sc: Scenario, rate: float) -> Traffic:
    return Traffic(
        rate=rate, error_rate=sc.error_rate, feedback_share=sc.feedback_share, diurnal=sc.diurnal
    )


def policy_for(traffic: Traffic, base: Policy) -> tuple[Policy, str]:
    """The shipped policy; below 200 req/s with the proof step's window the planner
    recommends for that traffic."""
    if traffic.rate >= 200:
        return base, "shipped"
    report = plan_rollout(base, replace(traffic, diurnal=0.0))
    window, longest = report.recommended_proof_window_minutes, report.recommended_max_stage_minutes
    if window is None:
        return base, "shipped"
    proof = plan_for(base).stages[-1].step
    tuned = base.model_copy(
        update={
            "step_durations": {proof: window * 60.0},
            "max_stage_duration": longest * 60.0,
        }
    )
    return tuned, f"planner: step_durations {{{proof}: {window}m}}, max_stage_duration {longest}m"


# --------------------------------------------------------------------------- the peers
def _minute_stats(prev: dict, cur: dict) -> dict:
    """Per-arm aggregates of one minute from two cumulative states of a StageStream."""
    out = {}
    for arm in (0, 1):
        n = cur["req"][arm] - prev["req"][arm]
        hist = cur["hist"][arm] - prev["hist"][arm]
        fb = cur["fb"][arm] - prev["fb"][arm]
        total = hist.sum()
        q = {}
        if total >= 1:
            cum = np.cumsum(hist)
            for name, level in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                i = int(np.searchsorted(cum, level * total))
                q[name] = LATENCY_MIN_MS * LATENCY_GROWTH ** (cur["lo"] + i + 0.5)
        out[arm] = {
            "n": n,
            "errors": (cur["err"][arm] - prev["err"][arm]) / n if n else math.nan,
            **{k: q.get(k, math.nan) for k in ("p50", "p90", "p99")},
            "kpi": (cur["clicks"][arm] - prev["clicks"][arm]) / fb if fb else math.nan,
        }
    out["flips"] = (
        1 - (cur["agree"] - prev["agree"]) / (cur["pairs"] - prev["pairs"])
        if cur["pairs"] > prev["pairs"]
        else math.nan
    )
    return out


def _state(s: StageStream) -> dict:
    return {
        "req": s.requests.copy(),
        "err": s.errors.copy(),
        "hist": s.hist.copy(),
        "fb": s.fb_count.copy(),
        "clicks": s.fb_sum.copy(),
        "pairs": s.pairs,
        "agree": s.agree,
        "lo": s.lo,
    }


def kayenta_flag(cand: list[float], base: list[float], direction: str) -> bool:
    """Mann-Whitney / Hodges-Lehmann 98% interval on the minute values clears 0.25 |HL|."""
    c = np.array([x for x in cand if not math.isnan(x)])
    b = np.array([x for x in base if not math.isnan(x)])
    if c.size < KAYENTA_MIN_MINUTES or b.size < KAYENTA_MIN_MINUTES:
        return False  # no data: Kayenta's NODATA is not a failure unless critical
    diffs = np.sort((c[:, None] - b[None, :]).ravel())
    mn = diffs.size
    z = ndtri(1 - (1 - KAYENTA_CONF) / 2)
    k = max(
        int(math.floor(mn / 2 - z * math.sqrt(c.size * b.size * (c.size + b.size + 1) / 12))), 1
    )
    lower, upper = diffs[k - 1], diffs[mn - k]
    hl = float(np.median(diffs))
    if np.array_equal(np.sort(c), np.sort(b)):
        return False
    bound = KAYENTA_FRACTION * abs(hl)
    return bool(lower > bound) if direction == "increase" else bool(upper < -bound)


def kayenta_score(minutes: list[dict]) -> float:
    metrics = (("errors", "increase"), ("p50", "increase"), ("p90", "increase"))
    metrics += (("p99", "increase"), ("kpi", "decrease"))
    flagged = 0
    for name, direction in metrics:
        cand = [m[1][name] for m in minutes]
        base = [m[0][name] for m in minutes]
        flagged += kayenta_flag(cand, base, direction)
    return 100.0 * (1 - flagged / len(metrics))


def peer_rollout(
    judge: str, policy: Policy, traffic: Traffic, effect: Effect, seed: int
) -> RunResult:
    """One rollout decided by a peer judge, on the streams `simulate_rollout` draws."""
    plan = plan_for(policy)
    draw = np.random.default_rng([int(seed), 1 << 20])
    phase = float(draw.uniform(0, 2 * math.pi))
    first_live = next((s for s in plan.stages if s.mode == "canary"), None)
    burst_at = float(draw.uniform(0, first_live.window)) if first_live and effect.burst else None
    nominal_p99 = traffic.latency_ms * math.exp(traffic.latency_sigma * 2.3263)
    bounds = {
        "errors": max(2 * traffic.error_rate, traffic.error_rate + 0.005),
        "p99": 1.5 * nominal_p99,
        "kpi": 0.8 * traffic.kpi_mean,
        "flips": 0.02,
    }
    t, served = 0.0, 0.0
    for index, stage in enumerate(plan.stages):
        stream = StageStream(
            traffic,
            effect,
            mode=stage.mode,
            step=stage.step,
            seed=[int(seed), index],
            start=t,
            phase=phase,
            burst_at=burst_at if stage is first_live else None,
        )
        if judge == "kayenta" and stage.mode == "shadow":
            t += stage.window  # no shadow analysis: the phase passes
            continue
        minutes: list[dict] = []
        prev = _state(stream)
        failures, elapsed, outcome = 0, 0.0, None
        per_minute = max(1, round(60 / policy.poll_interval))
        looks = 0
        while elapsed < stage.window and outcome is None:
            stream.advance(policy.poll_interval)
            elapsed += policy.poll_interval
            looks += 1
            if looks % per_minute:
                continue
            cur = _state(stream)
            m = _minute_stats(prev, cur)
            prev = cur
            minutes.append(m)
            if judge == "threshold":
                c = m[1]
                bad = (
                    (stage.mode == "shadow" and m["flips"] > bounds["flips"])
                    or (c["n"] >= 1 and c["errors"] > bounds["errors"])
                    or (stage.mode == "canary" and c["p99"] > bounds["p99"])
                    or c["kpi"] < bounds["kpi"]
                )
                failures += bool(bad)
                if failures >= 3:
                    outcome = "rolled_back"
            elif len(minutes) >= KAYENTA_MIN_MINUTES and kayenta_score(minutes) < 75:
                outcome = "rolled_back"
        if stage.mode == "canary":
            served += stream.requests[1]
        if outcome is None and judge == "kayenta":
            score = kayenta_score(minutes)
            outcome = None if score >= 95 else ("paused" if score >= 75 else "rolled_back")
        t += elapsed
        if outcome is not None:
            return RunResult(outcome, t, stage.name, f"{stage.name}: {judge}", served)
    return RunResult("promoted", t, plan.stages[-1].name, "every step passed", served)


# --------------------------------------------------------------------------- running
def _run(args) -> list[tuple[str, dict]]:
    judge, policy, traffic, effect, seeds = args
    out = []
    for seed in seeds:
        if judge == "this product":
            r = simulate_rollout(policy, traffic, effect, seed)
        else:
            r = peer_rollout(judge, policy, traffic, effect, seed)
        out.append((judge, asdict(r)))
    return out


def exposure_minutes(r: dict, policy: Policy) -> float:
    """Minutes from the candidate's first exposure in the phase that caught it (mirrored
    copies for the shadow, live traffic for a step) to the decision."""
    shadow = policy.shadow.duration if policy.shadow.enabled else 0.0
    return (r["seconds"] - (0.0 if r["stage"] == "shadow" else shadow)) / 60


def summary(rows: list[dict], policy: Policy, runs: int) -> dict:
    counts = {
        k: sum(r["outcome"] == k for r in rows) for k in ("promoted", "rolled_back", "paused")
    }
    minutes = sorted(r["seconds"] / 60 for r in rows)
    rolled = [r for r in rows if r["outcome"] == "rolled_back"]
    stages: dict[str, int] = {}
    for r in rows:
        if r["outcome"] != "promoted":
            stages[f"{r['outcome']}@{r['stage']}"] = (
                stages.get(f"{r['outcome']}@{r['stage']}", 0) + 1
            )
    reasons: dict[str, str] = {}
    for r in rows:
        key = f"{r['outcome']}@{r['stage']}"
        if r["outcome"] != "promoted":
            reasons.setdefault(key, r["reason"])
    return {
        "runs": runs,
        **{k: v / runs for k, v in counts.items()},
        "intervals": {k: wilson(v, runs) for k, v in counts.items()},
        "median_minutes": statistics.median(minutes),
        "p90_minutes": minutes[min(len(minutes) - 1, math.ceil(0.9 * len(minutes)) - 1)],
        "median_rollback_from_exposure": statistics.median(
            exposure_minutes(r, policy) for r in rolled
        )
        if rolled
        else None,
        "median_served_at_rollback": statistics.median(r["candidate_requests"] for r in rolled)
        if rolled
        else None,
        "stages": stages,
        "reasons": reasons,
        "paused_with_time": sum(
            1 for r in rows if r["outcome"] == "paused" and r.get("needed_seconds")
        ),
    }


def run_all(
    runs_scale: float,
    jobs: int,
    seed: int,
    cap: int | None = None,
    other_cap: int | None = None,
    peer_cap: int | None = None,
) -> dict:
    """Every scenario at its rates. `cap` bounds the runs of the 200 req/s rows but the A/A
    headline (identical at 200 req/s keeps its count: the false-rollback rate needs it),
    `other_cap` those at the other rates; `peer_cap` bounds the peers' runs (they replay the
    first seeds of the same streams)."""
    base = load_policy(SHIPPED)
    results = []
    t0 = time.time()
    with ProcessPoolExecutor(jobs) as pool:
        for sc in SCENARIOS:
            for rate in sc.rates:
                traffic = traffic_of(sc, rate)
                good = traffic_of(replace(sc, effects=()), rate)
                policy, which = policy_for(good, base)
                runs = max(20, int((sc.runs if rate == 200 else min(sc.runs, 300)) * runs_scale))
                if rate != 200 and other_cap:
                    runs = min(runs, other_cap)
                elif rate == 200 and cap and sc.name != "identical":
                    runs = min(runs, cap)
                counts = {
                    j: min(runs, peer_cap or runs) if j != JUDGES[0] else runs for j in JUDGES
                }
                effect = parse_effects(list(sc.effects))
                tasks = [
                    (j, policy, traffic, effect, c)
                    for j in JUDGES
                    for c in (list(range(seed + i, seed + counts[j], 16)) for i in range(16))
                    if c
                ]
                started = time.time()
                rows: dict[str, list[dict]] = {j: [] for j in JUDGES}
                for part in pool.map(_run, tasks):
                    for judge, r in part:
                        rows[judge].append(r)
                entry = {
                    "scenario": sc.name,
                    "description": sc.description,
                    "rate": rate,
                    "good": sc.good,
                    "policy": which,
                    "seconds": round(time.time() - started, 1),
                    "judges": {j: summary(rows[j], policy, counts[j]) for j in JUDGES},
                }
                results.append(entry)
                ours = entry["judges"]["this product"]
                print(
                    f"[{time.time() - t0:6.0f} s] {sc.name} @ {rate} req/s: promoted "
                    f"{ours['promoted']:.1%} rolled back {ours['rolled_back']:.1%} paused "
                    f"{ours['paused']:.1%} median {ours['median_minutes']:.1f} min "
                    f"({entry['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return {"results": results, "seed": seed, "wall_seconds": round(time.time() - t0)}


# --------------------------------------------------------------------------- the page
def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def ci(entry: dict, key: str) -> str:
    lo, hi = entry["intervals"][key]
    return f"{entry[key]:.1%} [{lo:.1%}, {hi:.1%}]"


def mins(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def render(data: dict, meta: dict) -> str:
    res = data["results"]
    lines = [
        "# Rollout decisions: whole-rollout outcomes",
        "",
        "Generated by `bench/judge_simulation.py` (rerun it rather than editing this page). "
        f"{meta['command']}; seed {data['seed']}; {data['wall_seconds'] / 60:.0f} min on "
        f"{meta['cpus']} shared cores (load average {meta['load']}).",
        "",
        "Every run is a whole rollout of the shipped policy (`include/policies/iris.yaml`: "
        "shadow 10 min, steps 5% -> 25% -> 50% -> 100% at 10 min each, `on_inconclusive: "
        "extend` up to 30 min a step, then a pause for a human), at 20, 200 and 2000 requests "
        "a second. At 20 req/s the proof step gets the window `model-rollout plan` recommends "
        "(see the policy column). Lognormal latency (median 50 ms, sigma 0.5) binned in the "
        "gateway's histogram buckets, 0.1% errors unless said, conversion 10% where feedback "
        "flows. The monitor looks every 10 s; the time is from the first stage's start "
        "(Airflow's task overhead is not simulated). *this product* is "
        "`model_rollout.decisions` itself, the code the DAG's monitor and gates run; the peers "
        "are described at the end.",
        "",
        "## Good candidates: promoted, rolled back, paused",
        "",
        "| scenario | req/s | policy | judge | runs | promoted [95% CI] | rolled back [95% CI] | paused | median min | p90 min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in (e for e in res if e["good"]):
        for j in JUDGES:
            s = e["judges"][j]
            lines.append(
                f"| {e['scenario']} | {e['rate']} | {e['policy']} | {j} | {s['runs']} | "
                f"{ci(s, 'promoted')} | "
                f"{ci(s, 'rolled_back')} | {pct(s['paused'])} | {mins(s['median_minutes'])} | "
                f"{mins(s['p90_minutes'])} |"
            )
    lines += [
        "",
        "## Bad candidates: rolled back, where and how fast",
        "",
        "Exposure = minutes from the candidate's first exposure in the phase that caught it "
        "(mirrored copies for the shadow, live traffic for a step) to the decision. Served = "
        "live requests the candidate answered before the rollback (median).",
        "",
        "| scenario | req/s | judge | runs | rolled back [95% CI] | promoted | paused | caught in | median min from exposure | median min from start | served |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in (e for e in res if not e["good"]):
        for j in JUDGES:
            s = e["judges"][j]
            where = ", ".join(
                f"{k.split('@')[1]} {v}"
                for k, v in sorted(s["stages"].items())
                if k.startswith("rolled")
            )
            served = s["median_served_at_rollback"]
            lines.append(
                f"| {e['scenario']} | {e['rate']} | {j} | {s['runs']} | {ci(s, 'rolled_back')} | "
                f"{pct(s['promoted'])} | {pct(s['paused'])} | {where or '-'} | "
                f"{mins(s['median_rollback_from_exposure'])} | {mins(s['median_minutes'])} | "
                f"{'-' if served is None else f'{served:,.0f}'} |"
            )
    lines += ["", "## Against the targets", ""] + targets(res) + [""]
    lines += ["## Why runs end as they do (one example reason each)", ""]
    for e in res:
        s = e["judges"]["this product"]
        for k, reason in sorted(s["reasons"].items()):
            lines.append(
                f"- {e['scenario']} @ {e['rate']} req/s, {k} ({s['stages'][k]} runs): {reason}"
            )
    lines += ["", *method_notes(), ""]
    return "\n".join(lines)


def _find(res, name, rate):
    return next((e for e in res if e["scenario"] == name and e["rate"] == rate), None)


def targets(res: list[dict]) -> list[str]:
    out = []
    e = _find(res, "identical", 200)
    if e:
        s = e["judges"]["this product"]
        ok = s["promoted"] >= 0.95 and s["rolled_back"] <= 0.01 and s["median_minutes"] <= 48
        out.append(
            f"- Identical candidate, shipped policy, 200 req/s ({s['runs']} rollouts): promoted "
            f"{ci(s, 'promoted')}, rolled back {ci(s, 'rolled_back')}, paused {pct(s['paused'])} "
            f"(each with the time it would need: {s['paused_with_time']} of "
            f"{round(s['paused'] * s['runs'])}), median {s['median_minutes']:.1f} min vs 1.2 x 40 = "
            f"48 min of windows: **{'met' if ok else 'NOT met'}**."
        )
        lo, hi = s["intervals"]["rolled_back"]
        out.append(
            f"- Whole-rollout false-rollback rate in A/A ({s['runs']} rollouts at 200 req/s): "
            f"{ci(s, 'rolled_back')}; alpha 0.05: **{'met' if hi <= 0.05 else 'NOT met'}** (the "
            f"upper Wilson bound is under alpha). Peers on the same streams: kayenta "
            f"{ci(e['judges']['kayenta'], 'rolled_back')}, threshold "
            f"{ci(e['judges']['threshold'], 'rolled_back')}."
        )
    e = _find(res, "identical", 20)
    if e:
        s = e["judges"]["this product"]
        out.append(
            f"- Identical candidate at 20 req/s with the planner's window ({e['policy']}): "
            f"promoted {ci(s, 'promoted')}: **{'met' if s['promoted'] >= 0.9 else 'NOT met'}** "
            f"(target >= 90%); median {s['median_minutes']:.0f} min."
        )
    for name, rate in (
        ("identical", 2000),
        ("identical, 1% errors", 200),
        ("identical, KPI feedback", 200),
        ("identical, diurnal", 200),
    ):
        e = _find(res, name, rate)
        if e:
            s = e["judges"]["this product"]
            out.append(
                f"- {name} at {rate} req/s: promoted {ci(s, 'promoted')}, rolled back "
                f"{pct(s['rolled_back'])}, paused {pct(s['paused'])}, median {s['median_minutes']:.1f} min."
            )
    for name in (
        "burst of 30 errors",
        "errors 1% -> 2%",
        "latency +20%",
        "p99 +200 ms on 3%",
        "KPI -15%",
        "crash on 8% of rows",
        "shadow flips 5%",
    ):
        e = _find(res, name, 200)
        if not e:
            continue
        s = e["judges"]["this product"]
        late = sum(v for k, v in s["stages"].items() if k.startswith("rolled") and ("step_50" in k))
        ok = s["rolled_back"] >= 0.99 and late == 0
        out.append(
            f"- {name} at 200 req/s: rolled back {ci(s, 'rolled_back')}, none at or after the "
            f"50% step: {late == 0}; median {mins(s['median_rollback_from_exposure'])} min from "
            f"exposure: **{'met' if ok else 'NOT met'}**."
        )
    return out


def method_notes() -> list[str]:
    return [
        "## How this product decides (see docs/architecture.md, decisions)",
        "",
        "- *One alpha for the whole rollout.* Each metric of the shadow phase and each metric "
        "of the live phase is one anytime-valid test over its whole phase (every step, look "
        "and extension); alpha 0.05 is split over these 7 tests (Bonferroni), so the "
        "false-rollback rate of a whole rollout is at most 0.05 however often it looks.",
        "- *Evidence carries over.* Error and tail counts pool every live step with that step's "
        "own share (a mixture over the rate ratio of per-step likelihood ratios, a test "
        'supermartingale across steps); the KPI contrast is stratified by step. "Degraded" '
        "averages the processes started at each step, so a regression that appears only at "
        "50% is not drowned by good evidence from 5%. Latency quantiles are judged per step "
        "(load changes with the step) at alpha / steps.",
        "- *Guards, then a proof.* The shadow and every step before the last live step go on "
        "at their window's end unless a degradation is shown; the shadow and the step before "
        "the last one hold their share instead while a degradation is nearly shown (its "
        "e-value past alpha^(-1/3): a third of the way to a rollback on the log scale) until "
        "the evidence settles it or `max_stage_duration` pauses the rollout (holding earlier "
        "steps too made bad candidates slower to catch: the next small step sees more, "
        "faster). The last live step must show "
        "every applicable metric within tolerance (a metric shown so at any look stays shown: "
        "no flicker at the last look). Undecided at the window's end: `extend` keeps watching "
        "up to `max_stage_duration` when the projection (the judge re-run on the stage's counts "
        "scaled up at the observed rates) says it is within reach, else it pauses "
        "(`after_max_stage_duration`) with the minutes it would need in the reason.",
        "- *The KPI is judged whenever feedback arrives* (not applicable without any), with a "
        "5% relative non-inferiority margin by default.",
        "",
        "## The peers",
        "",
        "- *kayenta*: Kayenta's judge applied per step as Spinnaker would: one-minute "
        "aggregates (error rate, p50, p90, p99, KPI), a two-sided 98% Mann-Whitney interval "
        "of the Hodges-Lehmann shift once 5 minutes exist, High (Low for the KPI) when it "
        "clears 0.25 |HL|; score = share of metrics not flagged; below 75 at any minute rolls "
        "back, at the step's end 95+ goes on, 75-95 pauses (marginal). No shadow analysis. "
        "Minutes without data are skipped (Kayenta's NODATA).",
        "- *threshold*: Flagger / Argo Rollouts' metric checks: per one-minute interval on "
        "the candidate, a failed check when its error rate exceeds max(2x, +0.5 pp) the usual "
        "rate, p99 exceeds 1.5x the usual p99 (live steps only: a shadow's latency is not the "
        "candidate's on live traffic), the KPI falls below 0.8x the usual, or (shadow) "
        "flips exceed 2%; 3 failed checks in a step roll back. Minutes without candidate "
        "requests are skipped. The bounds are an operator's guess; other bounds trade false "
        "rollbacks for misses.",
        "",
        "## Reproduce",
        "",
        "```",
        ".venv/bin/python bench/judge_simulation.py              # all scenarios, writes this page",
        "# this page's run sizes (~70 min on 2 cores): 2000 A/A rollouts at 200 req/s, 100 per",
        "# other row at 200 req/s, 40 at 20 and 2000 req/s, peers at most 100",
        ".venv/bin/python bench/judge_simulation.py --runs 100 --other-runs 40 --peer-runs 100",
        ".venv/bin/python bench/judge_simulation.py --quick --no-write",
        ".venv/bin/python bench/judge_simulation.py --render-only # the page from the last results",
        "model-rollout simulate iris --rate 200 --runs 2000 --json # one scenario, this product",
        "```",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the runs")
    ap.add_argument("--no-write", action="store_true", help="do not write docs/judge.md")
    ap.add_argument("--render-only", action="store_true", help="render the last results")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--runs", type=int, help="at most this many runs per 200 req/s row but A/A")
    ap.add_argument("--other-runs", type=int, help="at most this many runs at other rates")
    ap.add_argument("--peer-runs", type=int, help="at most this many runs per row for the peers")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.render_only:
        data = json.loads(args.results.read_text())
    else:
        data = run_all(
            0.1 if args.quick else 1.0,
            args.jobs,
            args.seed,
            args.runs,
            args.other_runs,
            args.peer_runs,
        )
        data["command"] = " ".join(["bench/judge_simulation.py", *sys.argv[1:]])
        data["load"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # at the run's end
        args.results.write_text(json.dumps(data))
    meta = {
        "command": f"`{data.get('command', 'bench/judge_simulation.py')}`",
        "cpus": os.cpu_count(),
        "load": data.get("load", "not recorded"),
    }
    page = render(data, meta)
    if args.no_write:
        print(page)
    else:
        DOC.write_text(page + "\n")
        print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
