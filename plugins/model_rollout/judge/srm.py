"""Sample ratio mismatch: is the observed split the configured one? (Lindon & Malek 2022)

Each routed request lands in the candidate arm with probability rho = its configured share of
the two arms' weight. The Beta(k rho, k (1 - rho)) mixture e-value (the two-arm case of the
Dirichlet-multinomial test; `savvi.Multinomial` computes the same number) is valid at every look.
A mismatch does not mean the candidate is bad: the comparison itself cannot be trusted (broken
sticky routing, a replica that drops traffic, a bug in weights), so the verdict is marked
invalid and the caller stops and alerts rather than rolls back on evidence it cannot trust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import SrmConfig
from .counts import log_evalue_two_sided


@dataclass(frozen=True)
class SrmResult:
    mismatch: bool
    observed_share: float
    expected_share: float
    log_evalue: float
    log_threshold: float
    reason: str

    def to_json(self) -> dict:
        return {
            "mismatch": self.mismatch,
            "observed_share": self.observed_share,
            "expected_share": self.expected_share,
            "log_evalue": self.log_evalue,
            "log_threshold": self.log_threshold,
            "reason": self.reason,
        }


def check_split(n_baseline: float, n_candidate: float, rho: float, cfg: SrmConfig) -> SrmResult:
    """Test the observed request counts against the configured candidate share rho."""
    total = n_baseline + n_candidate
    observed = n_candidate / total if total > 0 else math.nan
    log_e = float(log_evalue_two_sided(n_candidate, total, rho, cfg.concentration))
    log_threshold = math.log(1.0 / cfg.alpha)
    mismatch = log_e >= log_threshold
    if mismatch:
        reason = (
            f"Sample ratio mismatch: the candidate got {observed:.2%} of the two arms' requests "
            f"but is configured for {rho:.2%}; the comparison is invalid."
        )
    else:
        reason = f"Observed split {observed:.2%} is consistent with the configured {rho:.2%}."
    return SrmResult(mismatch, observed, rho, log_e, log_threshold, reason)
