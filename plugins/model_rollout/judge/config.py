"""Judge settings (pydantic v2); the rollout policy embeds `JudgeConfig` as-is, so every field
says what it means and every range is validated with the field's name in the message."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)

CONCENTRATION_FIELD = Field(
    100.0,
    gt=0.0,
    le=1e6,
    description=(
        "Prior concentration k of the Beta mixture: alternatives within about "
        "sqrt(p (1 - p) / k) of the null get most weight. Rarely worth changing."
    ),
)


class ErrorsConfig(BaseModel):
    """Error rate of the candidate against the baseline (count e-process on errors)."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Judge the error rate (requests answered 5xx).")
    max_relative_increase: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description=(
            "Tolerated relative increase of the error rate: 0.2 means a candidate with up to "
            "1.2x the baseline's error rate is not a degradation (unless the absolute floor below "
            "is larger). Why 20%: at 1% errors a 10% tolerance takes hours of traffic to prove at "
            "a few hundred requests a second; `model-rollout plan` shows what a tighter one costs."
        ),
    )
    min_absolute_increase: float = Field(
        0.001,
        ge=0.0,
        le=1.0,
        description=(
            "Increases of the error rate below this absolute amount (0.001 = 0.1 percentage "
            "point) are never a degradation, however significant; it also lets rare-error "
            "services be declared healthy."
        ),
    )


class LatencyConfig(BaseModel):
    """Whole-distribution latency shift, read at a few quantiles (median and p90 by default)."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Judge the latency distribution (median and p90).")
    quantiles: list[float] = Field(
        default_factory=lambda: [0.5, 0.9],
        min_length=1,
        max_length=5,
        description="Quantiles compared between the arms, each strictly between 0 and 1.",
    )
    tolerance: float = Field(
        0.10,
        ge=0.0,
        le=10.0,
        description=(
            "Tolerated relative slow-down at each quantile: 0.10 means up to 1.1x the "
            "baseline's quantile is not a degradation."
        ),
    )
    concentration: float = CONCENTRATION_FIELD

    @field_validator("quantiles")
    @classmethod
    def _quantiles_inside_unit_interval(cls, value: list[float]) -> list[float]:
        bad = [q for q in value if not 0.0 < q < 1.0]
        if bad:
            raise ValueError(f"latency.quantiles must lie strictly between 0 and 1, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"latency.quantiles must be distinct, got {value}")
        return sorted(value)


class TailLatencyConfig(BaseModel):
    """Tail latency: exceedances of the baseline's p99, compared by a count e-process."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Judge the latency tail.")
    quantile: float = Field(
        0.99,
        ge=0.9,
        lt=1.0,
        description="The baseline quantile whose exceedances are counted (0.99 = p99).",
    )
    tolerance: float = Field(
        0.05,
        ge=0.0,
        le=10.0,
        description=(
            "Tolerated relative slow-down of the tail: the candidate's exceedances of tau are "
            "compared with the baseline's exceedances of tau / (1 + tolerance). Tighter than "
            "the median's by default: comparing with the baseline's own tail in the same window "
            "cancels load swings, and tail regressions hurt most."
        ),
    )


class KpiConfig(BaseModel):
    """Business KPI from feedback outcomes (e.g. clicks): a non-inferiority test."""

    model_config = _STRICT

    enabled: bool = Field(
        True,
        description="Judge the feedback outcome whenever feedback arrives (a model that gets none "
        "is not judged on it); false turns the KPI off.",
    )
    direction: Literal["higher_is_better", "lower_is_better"] = Field(
        "higher_is_better", description="Which way the outcome improves."
    )
    margin: float = Field(
        0.05,
        ge=0.0,
        description=(
            "Non-inferiority margin: the candidate may be worse by this much (relative to the "
            "baseline's mean, or in outcome units when margin_kind is 'absolute'). 5% by default: "
            "proving 2% on a 10% click-through rate takes ~300k outcomes per arm; "
            "`model-rollout plan` shows what a tighter margin costs at your traffic."
        ),
    )
    margin_kind: Literal["relative", "absolute"] = Field(
        "relative", description="Whether `margin` is a fraction of the baseline mean or absolute."
    )
    mixture_scale: float = Field(
        0.05,
        gt=0.0,
        le=100.0,
        description=(
            "Spread of the normal mixture over effects, as a fraction of the baseline mean "
            "(0.05: most weight on effects up to about 5%); the baseline's standard deviation "
            "stands in for the mean when the mean is zero."
        ),
    )
    min_feedback: int = Field(
        30,
        ge=2,
        description="Fewest outcomes per arm before any KPI verdict (the normal approximation).",
    )


class ShadowConfig(BaseModel):
    """Paired shadow predictions: flip rate for classifiers, mean |delta| for regressors."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Judge paired shadow predictions (shadow mode only).")
    prediction_kind: Literal["auto", "classifier", "regressor"] = Field(
        "auto",
        description="'auto' reads the shadow arm's outputs kind (categorical -> classifier).",
    )
    max_disagreement: float = Field(
        0.02,
        gt=0.0,
        lt=1.0,
        description="Tolerated share of rows where the shadow's label differs from the primary's.",
    )
    max_mean_abs_delta: float | None = Field(
        None,
        gt=0.0,
        description=(
            "Tolerated mean |shadow - primary| for regressors, in prediction units; a regressor "
            "stays inconclusive until it is set."
        ),
    )
    concentration: float = CONCENTRATION_FIELD


class OutputDriftConfig(BaseModel):
    """Distance between the output distributions of the shadow and the incumbent."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Judge output-distribution drift (shadow mode only).")
    max_total_variation: float = Field(
        0.10,
        gt=0.0,
        lt=1.0,
        description=(
            "Tolerated total-variation distance between the output distributions (0.1 = 10% of "
            "the predictions would have to move)."
        ),
    )
    max_bins: int = Field(
        20,
        ge=2,
        le=200,
        description=(
            "Numeric outputs are merged into at most this many bins (fewer bins, smaller noise "
            "allowance); labels beyond it are merged into the rarest."
        ),
    )


class SrmConfig(BaseModel):
    """Sample ratio mismatch: the observed split against the configured weights."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Check the traffic split (canary mode only).")
    alpha: float = Field(
        0.001,
        gt=0.0,
        lt=0.5,
        description=(
            "False-alarm rate of the split check, separate from the rollback alpha: a mismatch "
            "stops the judging (invalid), it never rolls back by itself."
        ),
    )
    concentration: float = Field(
        100.0,
        gt=0.0,
        le=1e6,
        description="Prior concentration of the Dirichlet (Beta) mixture, as in Lindon & Malek.",
    )


class JudgeConfig(BaseModel):
    """Everything the canary judge needs besides the snapshot."""

    model_config = _STRICT

    alpha: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description=(
            "Bound on the false-rollback rate of a whole rollout (shadow and every step, "
            "extensions included), however often the judge looks; split evenly (Bonferroni) "
            "across the tests of the rollout: each metric of the shadow phase and each metric "
            "of the live phase."
        ),
    )
    min_samples: int = Field(
        1000,
        ge=1,
        description=(
            "Fewest requests per arm (shadow pairs in shadow mode) before any metric may be "
            "declared healthy."
        ),
    )
    errors: ErrorsConfig = Field(default_factory=ErrorsConfig, description="Error rate settings.")
    latency: LatencyConfig = Field(
        default_factory=LatencyConfig, description="Latency distribution settings."
    )
    latency_tail: TailLatencyConfig = Field(
        default_factory=TailLatencyConfig, description="Tail latency settings."
    )
    kpi: KpiConfig = Field(default_factory=KpiConfig, description="Business KPI settings.")
    shadow: ShadowConfig = Field(
        default_factory=ShadowConfig, description="Paired shadow prediction settings."
    )
    output_drift: OutputDriftConfig = Field(
        default_factory=OutputDriftConfig, description="Output-distribution drift settings."
    )
    srm: SrmConfig = Field(default_factory=SrmConfig, description="Sample ratio mismatch check.")

    @model_validator(mode="after")
    def _something_to_judge(self) -> JudgeConfig:
        if not any(
            m.enabled
            for m in (
                self.errors,
                self.latency,
                self.latency_tail,
                self.kpi,
                self.shadow,
                self.output_drift,
            )
        ):
            raise ValueError("judge config: at least one metric must be enabled")
        return self

    def metrics_in_force(self, mode: Literal["canary", "shadow"]) -> list[str]:
        """Names of the metrics judged in `mode`; alpha is split across exactly these."""
        names: list[str] = []
        if self.errors.enabled:
            names.append("errors")
        if self.latency.enabled:
            names.append("latency")
        if self.latency_tail.enabled:
            names.append("latency_tail")
        if mode == "canary" and self.kpi.enabled:
            names.append("kpi")
        if mode == "shadow" and self.shadow.enabled:
            names.append("shadow_agreement")
        if mode == "shadow" and self.output_drift.enabled:
            names.append("output_drift")
        return names
