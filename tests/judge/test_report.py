"""Fixed-horizon report on raw request logs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from model_rollout.judge import fixed_horizon_report, report_markdown


def _log(n=20_000, slow=1.0, seed=0):
    rng = np.random.default_rng(seed)
    version = np.where(rng.random(n) < 0.1, "2", "1")
    latency = rng.lognormal(np.log(50), 0.5, n) * np.where(version == "2", slow, 1.0)
    outcome = np.where(rng.random(n) < 0.5, (rng.random(n) < 0.1).astype(float), np.nan)
    return pd.DataFrame(
        {
            "version": version,
            "latency_ms": latency,
            "error": rng.random(n) < 0.01,
            "outcome": outcome,
        }
    )


def test_report_matches_scipy_and_finds_a_slowdown():
    log = _log(slow=1.3)
    report = fixed_horizon_report(log, baseline="1", candidate="2", resamples=200, max_rows=1000)
    json.dumps(report, allow_nan=False)
    base = log[log.version == "1"].latency_ms
    cand = log[log.version == "2"].latency_ms
    assert report["latency"]["p_value"] == pytest.approx(stats.mannwhitneyu(cand, base).pvalue)
    p50 = report["latency"]["quantile_ratios"]["p50"]
    assert p50["interval"][0] < 1.3 < p50["interval"][1] + 0.05
    assert report["latency"]["hodges_lehmann_shift_ms"] > 0
    assert report["arms"]["candidate"]["requests"] == int((log.version == "2").sum())
    errors = log[log.version == "2"].error
    assert report["arms"]["candidate"]["error_rate"] == pytest.approx(errors.mean())
    assert "kpi" in report and report["kpi"]["interval"][0] < report["kpi"]["difference"]
    text = report_markdown(report)
    assert "| candidate | 2 |" in text and "p50 ratio" in text


def test_report_on_an_empty_candidate_and_missing_columns():
    log = _log()
    report = fixed_horizon_report(log, baseline="1", candidate="9", resamples=50, max_rows=100)
    assert report["arms"]["candidate"]["requests"] == 0
    assert "latency" not in report and "errors" not in report
    json.dumps(report, allow_nan=False)
    report_markdown(report)
    with pytest.raises(ValueError, match="latency_ms"):
        fixed_horizon_report(log.drop(columns="latency_ms"), baseline="1", candidate="2")
