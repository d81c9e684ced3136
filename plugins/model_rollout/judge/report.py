"""Fixed-horizon report on raw request logs, for the humans reading the evidence afterwards.

This is a single look at a finished window, so classical tests are the right tool here (and
would be the wrong one inside the monitor, where they are peeked at every few seconds): Fisher's
exact test on errors, Mann-Whitney U and the Hodges-Lehmann shift on latency, percentile
bootstrap intervals for quantile ratios and for the KPI difference. Bootstrap and the
Hodges-Lehmann estimate run on a bounded random subsample of each arm, so the report costs the
same on a million rows as on ten thousand (the subsample size is recorded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .verdict import json_safe

REQUIRED_COLUMNS = ("version", "latency_ms", "error")


def _subsample(values: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if values.size <= limit:
        return values
    return rng.choice(values, size=limit, replace=False)


def _bootstrap_ratio(base, cand, q, resamples, rng, alpha, point):
    """Percentile bootstrap interval of quantile(cand, q) / quantile(base, q) (on subsamples)."""
    if base.size == 0 or cand.size == 0:
        return math.nan, (math.nan, math.nan)
    boot_b = np.quantile(base[rng.integers(0, base.size, (resamples, base.size))], q, axis=1)
    boot_c = np.quantile(cand[rng.integers(0, cand.size, (resamples, cand.size))], q, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boot_c / boot_b
    lo, hi = np.nanquantile(ratios, [alpha / 2, 1 - alpha / 2])
    return point, (float(lo), float(hi))


def _hodges_lehmann(base: np.ndarray, cand: np.ndarray) -> float:
    """Median of all pairwise differences cand - base (on the subsample)."""
    if base.size == 0 or cand.size == 0:
        return math.nan
    return float(np.median(np.subtract.outer(cand, base)))


def fixed_horizon_report(
    log: pd.DataFrame,
    *,
    baseline: str,
    candidate: str,
    alpha: float = 0.05,
    resamples: int = 1000,
    max_rows: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two versions on a request log with columns version, latency_ms, error[, outcome].

    `outcome` (optional) is the feedback value, NaN where none arrived. Returns a JSON-safe dict
    (no NaN) with per-arm summaries and the tests; `report_markdown` renders it.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"request log lacks column(s) {missing}; expected {REQUIRED_COLUMNS}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if resamples < 10 or max_rows < 10:
        raise ValueError("resamples and max_rows must be at least 10")
    rng = np.random.default_rng(seed)
    versions = log["version"].astype(str)
    arms = {
        "baseline": log[versions == str(baseline)],
        "candidate": log[versions == str(candidate)],
    }
    summary: dict[str, Any] = {}
    latencies: dict[str, np.ndarray] = {}
    for label, frame in arms.items():
        lat = pd.to_numeric(frame["latency_ms"], errors="coerce").to_numpy(dtype=float)
        lat = lat[np.isfinite(lat)]
        latencies[label] = lat
        errors = frame["error"].fillna(False).astype(bool)
        outcome = (
            pd.to_numeric(frame["outcome"], errors="coerce").dropna()
            if "outcome" in frame
            else pd.Series(dtype=float)
        )
        summary[label] = {
            "version": str(baseline if label == "baseline" else candidate),
            "requests": int(len(frame)),
            "errors": int(errors.sum()),
            "error_rate": float(errors.mean()) if len(frame) else math.nan,
            "latency_p50_ms": float(np.quantile(lat, 0.5)) if lat.size else math.nan,
            "latency_p90_ms": float(np.quantile(lat, 0.9)) if lat.size else math.nan,
            "latency_p99_ms": float(np.quantile(lat, 0.99)) if lat.size else math.nan,
            "feedback": int(outcome.size),
            "outcome_mean": float(outcome.mean()) if outcome.size else math.nan,
        }

    report: dict[str, Any] = {
        "kind": "fixed-horizon (one look; not for use inside the monitor)",
        "alpha": alpha,
        "arms": summary,
    }

    b, c = summary["baseline"], summary["candidate"]
    if b["requests"] and c["requests"]:
        table = [
            [c["errors"], c["requests"] - c["errors"]],
            [b["errors"], b["requests"] - b["errors"]],
        ]
        _, p_value = stats.fisher_exact(table, alternative="two-sided")
        diff = c["error_rate"] - b["error_rate"]
        se = math.sqrt(
            c["error_rate"] * (1 - c["error_rate"]) / c["requests"]
            + b["error_rate"] * (1 - b["error_rate"]) / b["requests"]
        )
        z = stats.norm.ppf(1 - alpha / 2)
        report["errors"] = {
            "test": "Fisher exact (two-sided)",
            "p_value": float(p_value),
            "difference": diff,
            "interval": [diff - z * se, diff + z * se],
        }

    lat_b, lat_c = latencies["baseline"], latencies["candidate"]
    if lat_b.size and lat_c.size:
        mw = stats.mannwhitneyu(lat_c, lat_b, alternative="two-sided")
        sub_b, sub_c = _subsample(lat_b, max_rows, rng), _subsample(lat_c, max_rows, rng)
        ratios = {}
        for q in (0.5, 0.9, 0.99):
            with np.errstate(divide="ignore", invalid="ignore"):
                full = float(np.quantile(lat_c, q) / np.quantile(lat_b, q))
            point, interval = _bootstrap_ratio(sub_b, sub_c, q, resamples, rng, alpha, full)
            ratios[f"p{round(q * 100)}"] = {"ratio": point, "interval": list(interval)}
        report["latency"] = {
            "test": "Mann-Whitney U (two-sided), all rows",
            "p_value": float(mw.pvalue),
            "prob_candidate_slower": float(mw.statistic / (lat_b.size * lat_c.size)),
            "hodges_lehmann_shift_ms": _hodges_lehmann(sub_b, sub_c),
            "quantile_ratios": ratios,
            "bootstrap": {"resamples": resamples, "rows_per_arm": int(max(sub_b.size, sub_c.size))},
        }

    if "outcome" in log.columns:
        out = {
            label: pd.to_numeric(frame["outcome"], errors="coerce").dropna().to_numpy(dtype=float)
            for label, frame in arms.items()
        }
        if out["baseline"].size >= 2 and out["candidate"].size >= 2:
            welch = stats.ttest_ind(out["candidate"], out["baseline"], equal_var=False)
            sb, sc = (_subsample(out[k], max_rows, rng) for k in ("baseline", "candidate"))
            boot = sc[rng.integers(0, sc.size, (resamples, sc.size))].mean(axis=1) - sb[
                rng.integers(0, sb.size, (resamples, sb.size))
            ].mean(axis=1)
            lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
            diff = float(out["candidate"].mean() - out["baseline"].mean())
            se = math.sqrt(
                out["candidate"].var(ddof=1) / out["candidate"].size
                + out["baseline"].var(ddof=1) / out["baseline"].size
            )
            z = stats.norm.ppf(1 - alpha / 2)
            report["kpi"] = {
                "test": "Welch t (two-sided), all rows",
                "p_value": float(welch.pvalue),
                "difference": diff,
                "interval": [diff - z * se, diff + z * se],
                "bootstrap_interval": [float(lo), float(hi)],
                "bootstrap_rows_per_arm": int(max(sb.size, sc.size)),
            }
    return json_safe(report)


def report_markdown(report: dict[str, Any]) -> str:
    """Render `fixed_horizon_report` output as a short markdown page."""
    lines = [f"# Fixed-horizon comparison ({report['kind']})", ""]
    lines.append("| arm | version | requests | error rate | p50 ms | p90 ms | p99 ms | KPI mean |")
    lines.append("|---|---|---|---|---|---|---|---|")

    def fmt(x: Any, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    for label, arm in report["arms"].items():
        lines.append(
            f"| {label} | {arm['version']} | {arm['requests']} | {fmt(arm['error_rate'], '.3%')} "
            f"| {fmt(arm['latency_p50_ms'], '.1f')} | {fmt(arm['latency_p90_ms'], '.1f')} "
            f"| {fmt(arm['latency_p99_ms'], '.1f')} | {fmt(arm['outcome_mean'], '.4g')} |"
        )
    lines.append("")
    for key in ("errors", "latency", "kpi"):
        if key in report:
            section = report[key]
            lines.append(f"- **{key}**: {section['test']}, p = {fmt(section['p_value'], '.3g')}")
            if key == "latency":
                for name, r in section["quantile_ratios"].items():
                    lo, hi = r["interval"]
                    lines.append(
                        f"  - {name} ratio {fmt(r['ratio'], '.3f')} "
                        f"[{fmt(lo, '.3f')}, {fmt(hi, '.3f')}] (bootstrap)"
                    )
    return "\n".join(lines) + "\n"
