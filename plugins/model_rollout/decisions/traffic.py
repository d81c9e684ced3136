"""Synthetic traffic shaped like the gateway's statistics: for the planner and the simulator.

A stage's traffic is drawn interval by interval (Poisson arrivals split by the weights,
binomial errors and outcomes, latencies binned into the gateway's own histogram buckets,
mirrored copies and label flips for a shadow) and read as the gateway's snapshot of the stage,
so the judge sees exactly the input it sees in production. `expected=True` gives the expected
counts instead of draws (the planner's deterministic view).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import ndtr

from model_rollout.histogram import LATENCY_BUCKETS, LATENCY_GROWTH, LATENCY_MIN_MS, latency_bucket

BASELINE, CANDIDATE = "1", "2"


@dataclass(frozen=True)
class Traffic:
    """What a service's traffic looks like (the incumbent's behaviour).

    :param rate: requests per second (all of the model's live traffic).
    :param error_rate: share of requests answered with an error.
    :param latency_ms: median latency; lognormal with `latency_sigma`.
    :param feedback_share: share of answered requests that get a business outcome (0: none).
    :param kpi_mean: mean outcome (a click-through rate: outcomes are 0/1).
    :param feedback_delay: outcomes arrive uniformly this many seconds after the answer.
    :param labels: the incumbent's output label distribution (shadow drift).
    :param diurnal: amplitude of a daily swing common to both arms (0.5: rate and error rate
        +-50%, latency +-15%, KPI +-20%) over `diurnal_period` seconds, at a phase drawn per run.
    """

    rate: float = 200.0
    error_rate: float = 0.001
    latency_ms: float = 50.0
    latency_sigma: float = 0.5
    feedback_share: float = 0.0
    kpi_mean: float = 0.10
    feedback_delay: tuple[float, float] = (5.0, 20.0)
    labels: tuple[float, ...] = (0.6, 0.3, 0.1)
    diurnal: float = 0.0
    diurnal_period: float = 3600.0


@dataclass(frozen=True)
class Effect:
    """How the candidate differs from the incumbent (none: an identical candidate)."""

    error_factor: float = 1.0
    crash_share: float = 0.0
    latency_factor: float = 1.0
    tail_ms: float = 0.0
    tail_share: float = 0.0
    kpi_factor: float = 1.0
    flip_rate: float = 0.0
    burst: int = 0  # requests failed in a row, once, at a random moment of the first live step

    def describe(self) -> str:
        parts = []
        if self.burst:
            parts.append(f"burst={self.burst}")
        if self.error_factor != 1.0:
            parts.append(f"errors={self.error_factor:g}x")
        if self.crash_share:
            parts.append(f"crash={self.crash_share:.3g}")
        if self.latency_factor != 1.0:
            parts.append(f"latency={self.latency_factor - 1:+.0%}")
        if self.tail_share:
            parts.append(f"tail=+{self.tail_ms:g}ms@{self.tail_share:.3g}")
        if self.kpi_factor != 1.0:
            parts.append(f"kpi={self.kpi_factor - 1:+.0%}")
        if self.flip_rate:
            parts.append(f"flips={self.flip_rate:.3g}")
        return ", ".join(parts) or "identical"


_PCT = r"([0-9]*\.?[0-9]+)\s*%"
_EFFECTS = {
    "errors": (re.compile(r"^([0-9]*\.?[0-9]+)\s*x$"), "errors=2x (the error rate times 2)"),
    "crash": (re.compile(rf"^{_PCT}$"), "crash=8% (the candidate fails 8% of rows)"),
    "latency": (re.compile(rf"^([+-]){_PCT}$"), "latency=+20% (every latency times 1.2)"),
    "tail": (
        re.compile(rf"^\+([0-9]*\.?[0-9]+)\s*ms\s*@\s*{_PCT}$"),
        "tail=+200ms@3% (3% of requests 200 ms slower)",
    ),
    "kpi": (re.compile(rf"^([+-]){_PCT}$"), "kpi=-15% (the outcome mean 15% lower)"),
    "flips": (re.compile(rf"^{_PCT}$"), "flips=5% (5% of rows get another label)"),
    "burst": (re.compile(r"^([0-9]+)$"), "burst=30 (30 requests fail in a row, once)"),
}


def parse_effects(specs: list[str] | tuple[str, ...]) -> Effect:
    """Effect from `name=value` strings; a ValueError names the bad one and the forms known."""
    effect = Effect()
    known = "; ".join(example for _, example in _EFFECTS.values())
    for spec in specs:
        name, _, value = str(spec).partition("=")
        name, value = name.strip(), value.strip()
        if name not in _EFFECTS:
            raise ValueError(f"unknown effect {spec!r}: expected one of {known}")
        m = _EFFECTS[name][0].match(value)
        if not m:
            raise ValueError(f"effect {spec!r}: expected the form {_EFFECTS[name][1]}")
        if name == "errors":
            effect = replace(effect, error_factor=float(m.group(1)))
        elif name == "crash":
            effect = replace(effect, crash_share=float(m.group(1)) / 100)
        elif name == "latency":
            sign = 1 if m.group(1) == "+" else -1
            effect = replace(effect, latency_factor=1 + sign * float(m.group(2)) / 100)
        elif name == "tail":
            effect = replace(effect, tail_ms=float(m.group(1)), tail_share=float(m.group(2)) / 100)
        elif name == "kpi":
            sign = 1 if m.group(1) == "+" else -1
            effect = replace(effect, kpi_factor=1 + sign * float(m.group(2)) / 100)
        elif name == "flips":
            effect = replace(effect, flip_rate=float(m.group(1)) / 100)
        else:
            effect = replace(effect, burst=int(m.group(1)))
    if not (
        effect.error_factor >= 0 and 0 <= effect.crash_share <= 1 and effect.latency_factor > 0
    ):
        raise ValueError(f"effects out of range: {effect}")
    if not (0 <= effect.tail_share <= 1 and 0 <= effect.flip_rate <= 1 and effect.kpi_factor >= 0):
        raise ValueError(f"effects out of range: {effect}")
    return effect


def _bucket_probs(traffic: Traffic, factor: float, tail_ms: float, tail_share: float):
    """(first bucket index, P(bucket)) of the latency of one arm."""
    mu, sigma = math.log(traffic.latency_ms * factor), traffic.latency_sigma
    lo = latency_bucket(math.exp(mu - 6 * sigma))
    hi = latency_bucket(math.exp(mu + 6 * sigma) + tail_ms)
    hi = min(max(hi, lo + 1), LATENCY_BUCKETS - 1)
    edges = LATENCY_MIN_MS * LATENCY_GROWTH ** np.arange(lo, hi + 2)
    cdf = ndtr((np.log(edges) - mu) / sigma)
    if tail_share:
        shifted = np.where(edges > tail_ms, np.log(np.maximum(edges - tail_ms, 1e-300)), -np.inf)
        cdf = (1 - tail_share) * cdf + tail_share * ndtr((shifted - mu) / sigma)
    cdf[0], cdf[-1] = 0.0, 1.0
    return lo, np.diff(cdf)


class StageStream:
    """Cumulative synthetic statistics of one stage.

    :param mode: "canary" (the candidate gets `step`% of live traffic) or "shadow" (the
        incumbent answers everything and every request is mirrored to the candidate).
    :param seed: a seed sequence entry; the same seed gives the same stream whatever watches it.
    :param expected: expected counts instead of draws.
    :param start: the stage's start in the rollout (seconds; the diurnal swing's clock).
    :param phase: the diurnal swing's phase (radians), the same for every stage of a run.
    :param burst_at: seconds into the stage at which `effect.burst` requests fail in a row.
    """

    def __init__(
        self,
        traffic: Traffic,
        effect: Effect,
        *,
        mode: str,
        step: int | None,
        seed=None,
        expected: bool = False,
        start: float = 0.0,
        phase: float = 0.0,
        burst_at: float | None = None,
    ):
        self.traffic, self.effect, self.mode = traffic, effect, mode
        self.start, self.phase, self.burst_at = start, phase, burst_at
        self.share = 1.0 if mode == "shadow" else (step or 0) / 100.0
        self.weights = (
            {BASELINE: 100} if mode == "shadow" else {BASELINE: 100 - step, CANDIDATE: step}
        )
        self.rng = np.random.default_rng(seed)
        self.expected = expected
        self.t = 0.0
        base_lo, base_p = _bucket_probs(traffic, 1.0, 0.0, 0.0)
        cand_lo, cand_p = _bucket_probs(
            traffic, effect.latency_factor, effect.tail_ms, effect.tail_share
        )
        self.lo = min(base_lo, cand_lo)
        size = max(base_lo + base_p.size, cand_lo + cand_p.size) - self.lo
        self.probs = np.zeros((2, size))
        self.probs[0, base_lo - self.lo : base_lo - self.lo + base_p.size] = base_p
        self.probs[1, cand_lo - self.lo : cand_lo - self.lo + cand_p.size] = cand_p
        self.hist = np.zeros((2, size))
        self.requests = np.zeros(2)
        self.errors = np.zeros(2)
        self.fb_count = np.zeros(2)
        self.fb_sum = np.zeros(2)
        self.pending: list[tuple[float, np.ndarray, np.ndarray]] = []  # (due, counts, clicks)
        self.pairs = self.agree = 0.0
        labels = np.asarray(traffic.labels, dtype=float)
        self.labels = labels / labels.sum()
        k = self.labels.size
        self.flipped = self.labels * (1 - effect.flip_rate) + effect.flip_rate * (
            1 - self.labels
        ) / max(k - 1, 1)
        self.outputs = np.zeros((2, k))
        self.p_error = np.array(
            [
                traffic.error_rate,
                min(1.0, traffic.error_rate * effect.error_factor + effect.crash_share),
            ]
        )
        self.ctr = np.array([traffic.kpi_mean, min(1.0, traffic.kpi_mean * effect.kpi_factor)])

    # draws, or their expectations
    def _poisson(self, lam):
        return np.asarray(lam if self.expected else self.rng.poisson(lam), dtype=float)

    def _binomial(self, n, p):
        if self.expected:
            return np.asarray(n, dtype=float) * p
        return np.asarray(self.rng.binomial(np.asarray(n, dtype=np.int64), p), dtype=float)

    def _multinomial(self, n, p):
        if self.expected:
            return float(n) * np.asarray(p)
        return self.rng.multinomial(int(n), p).astype(float)

    def advance(self, seconds: float) -> None:
        """`seconds` more of traffic (and the outcomes that arrive meanwhile)."""
        tr = self.traffic
        swing = 0.0
        if tr.diurnal:
            clock = self.start + self.t + seconds / 2
            swing = tr.diurnal * math.sin(2 * math.pi * clock / tr.diurnal_period + self.phase)
        arrivals = float(self._poisson(tr.rate * (1 + swing) * seconds))
        if self.mode == "shadow":
            n = np.array([arrivals, arrivals])  # every request mirrored
        else:
            cand = float(self._binomial(arrivals, self.share))
            n = np.array([arrivals - cand, cand])
        errors = self._binomial(n, np.minimum(self.p_error * (1 + swing), 1.0))
        if self.burst_at is not None and self.t < self.burst_at <= self.t + seconds:
            n[1] += self.effect.burst  # the candidate fails a run of requests
            errors[1] += self.effect.burst
        ok = n - errors
        probs = self.probs
        if swing:  # latency +-30% of the swing: shift the histograms by whole buckets
            shift = int(round(math.log1p(0.3 * swing) / math.log(LATENCY_GROWTH)))
            probs = np.roll(probs, shift, axis=1) if shift else probs
        for arm in (0, 1):
            self.hist[arm] += self._multinomial(ok[arm], probs[arm])
        self.requests += n
        self.errors += errors
        if self.mode == "shadow":
            answered = float(ok[1])  # copies the candidate answered pair with the primary
            flips = float(self._binomial(answered, self.effect.flip_rate))
            self.pairs += answered
            self.agree += answered - flips
            self.outputs[0] += self._multinomial(ok[0], self.labels)
            self.outputs[1] += self._multinomial(answered, self.flipped)
        elif tr.feedback_share > 0:
            got = self._binomial(ok, tr.feedback_share)
            clicks = self._binomial(got, np.clip(self.ctr * (1 + 0.4 * swing), 0.0, 1.0))
            low, high = tr.feedback_delay
            delay = (low + high) / 2 if self.expected else self.rng.uniform(low, high)
            self.pending.append((self.t + seconds / 2 + delay, got, clicks))
        self.t += seconds
        arrived = [p for p in self.pending if p[0] <= self.t]
        self.pending = [p for p in self.pending if p[0] > self.t]
        for _, got, clicks in arrived:
            self.fb_count += got
            self.fb_sum += clicks

    def snapshot(self) -> dict:
        """The gateway's snapshot of the stage so far (docs/architecture.md)."""
        arms = []
        for i, version in enumerate((BASELINE, CANDIDATE)):
            arm = "shadow" if (self.mode == "shadow" and i == 1) else "primary"
            nz = np.nonzero(self.hist[i])[0]
            entry = {
                "version": version,
                "arm": arm,
                "requests": float(self.requests[i]),
                "errors": float(self.errors[i]),
                "rejected": 0,
                "latency": {"counts": {str(self.lo + j): float(self.hist[i, j]) for j in nz}},
            }
            if self.fb_count[i] > 0:
                entry["feedback"] = {
                    "count": float(self.fb_count[i]),
                    "sum": float(self.fb_sum[i]),
                    "sum_sq": float(self.fb_sum[i]),
                }
            if self.mode == "shadow":
                entry["outputs"] = {
                    "kind": "categorical",
                    "counts": {str(k): float(v) for k, v in enumerate(self.outputs[i])},
                }
            arms.append(entry)
        pairs = []
        if self.mode == "shadow":
            pairs.append(
                {
                    "shadow_version": CANDIDATE,
                    "primary_version": BASELINE,
                    "pairs": self.pairs,
                    "agree": self.agree,
                    "abs_delta_sum": self.pairs - self.agree,
                    "abs_delta_sq_sum": self.pairs - self.agree,
                }
            )
        return {
            "model": "simulated",
            "since": 0.0,
            "until": self.t,
            "weights": dict(self.weights),
            "shadows": [CANDIDATE] if self.mode == "shadow" else [],
            "arms": arms,
            "pairs": pairs,
        }


def observed_traffic(snapshot: dict, seconds: float) -> Traffic:
    """The traffic a gateway snapshot over the last `seconds` shows (live arms, all versions):
    rate, error rate, latency median and spread (from p50 and p90), feedback share, KPI mean."""
    from model_rollout.judge.histograms import inverse_cdf
    from model_rollout.judge.snapshot import pooled_arm, read_arm

    live = [a for a in snapshot.get("arms") or [] if a.get("arm") == "primary"]
    requests = sum(float(a.get("requests") or 0) for a in live)
    if requests <= 0 or seconds <= 0:
        raise ValueError(
            f"the gateway saw no live request of {snapshot.get('model')!r} in the last "
            f"{seconds:.0f} s: give --rate instead"
        )
    errors = sum(float(a.get("errors") or 0) for a in live)
    pooled = pooled_arm([read_arm(a) for a in live])  # either latency form (schema 2)
    p50 = p90 = math.nan
    if pooled.latency_cnt is not None and pooled.latency_total > 0:
        log_x, cum = pooled.latency_points
        q = inverse_cdf(log_x, cum, [0.5 * pooled.latency_total, 0.9 * pooled.latency_total])
        p50, p90 = (math.exp(float(x)) for x in q)
    sigma = math.log(p90 / p50) / 1.2816 if p50 > 0 and p90 > p50 else 0.5
    fb = [a.get("feedback") or {} for a in live]
    fb_count = sum(float(f.get("count") or 0) for f in fb)
    fb_sum = sum(float(f.get("sum") or 0) for f in fb)
    return Traffic(
        rate=requests / seconds,
        error_rate=errors / requests,
        latency_ms=p50 if p50 > 0 else 50.0,  # NaN > 0 is False
        latency_sigma=min(max(sigma, 0.05), 5.0),
        feedback_share=min(fb_count / requests, 1.0),
        kpi_mean=min(max(fb_sum / fb_count, 0.0), 1.0) if fb_count else 0.1,
    )
