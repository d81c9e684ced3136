"""Per-model rollout policy: one YAML file per registered model, validated with clear errors.

Why pydantic: every field is checked at DAG-parse time, so a typo in a policy breaks that one
DAG's import with a message naming the file, the field and what was expected, instead of a
rollout failing half way through.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from model_rollout.judge.config import JudgeConfig

POLICIES_ENV = "MODEL_ROLLOUT_POLICIES"
MAX_DURATION_SECONDS = 100 * 365.25 * 86400.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# what an error message shows of a bad value: enough to recognise it, never the whole of a
# huge or self-referencing YAML structure (a repr of those can take forever)
class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() refuses ints beyond 4300 digits; nobody reads 40
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 80, 80, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


def _short_repr(value: object) -> str:
    return _REPR.repr(value)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90", "30s", "10m", "1.5h", "2d".

    At most MAX_DURATION_SECONDS (100 years): anything longer (or infinite, or NaN) cannot
    be a task timeout, a retry delay or a sleep (Python's timedelta and timeouts refuse it).
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s', '10m' or '1h', got a boolean")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
            seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        else:
            raise ValueError(
                f"expected a duration such as 30, '30s', '10m' or '1h', got {_short_repr(value)}"
            )
    except OverflowError:  # an integer too large for a float
        seconds = math.inf
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"expected a duration >= 0, got {_short_repr(value)}")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(
            f"expected a duration of at most 100 years ({MAX_DURATION_SECONDS:.0f} s), "
            f"got {_short_repr(value)}"
        )
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
# YAML reads a bare `on`/`off` as a boolean: take it as the word the user wrote
Batching = Annotated[
    Literal["auto", "off", "on"],
    BeforeValidator(lambda v: ("on" if v else "off") if isinstance(v, bool) else v),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """Which registry event starts a rollout of a version."""

    event: Literal["alias", "version_created", "tag", "stage"] = Field(
        "alias",
        description="alias: an alias (default 'challenger') set on a version; version_created: "
        "any new version; tag: a version tag set to a value; stage: legacy stage transition.",
    )
    alias: str = Field("challenger", description="Alias that starts a rollout (event=alias).")
    tag_key: str = Field("rollout.request", description="Tag key (event=tag).")
    tag_value: str = Field("true", description="Tag value (event=tag).")
    stage: str = Field("Staging", description="Legacy stage (event=stage; polled, no webhook).")


class Holdout(_Strict):
    """Offline validation: candidate and incumbent scored on the same labelled dataset."""

    path: str = Field(
        ...,
        description="CSV or Parquet file (relative to the project's include/ folder, or absolute), "
        "or an MLflow artifact URI (runs:/<run_id>/<path>).",
    )
    target: str = Field(..., description="Column holding the true label / value.")
    metric: Literal["accuracy", "f1_macro", "rmse", "mae"] = "accuracy"
    tolerance: float = Field(
        0.01,
        ge=0,
        description="How much worse than the incumbent the candidate may score (absolute).",
    )
    min_score: float | None = Field(
        None, description="Floor for the candidate's score (first rollout: the only check)."
    )


class Staging(_Strict):
    """Integration tests through the gateway's staging slot."""

    sample_requests: int = Field(50, ge=1, le=10_000, description="Requests sent to staging.")
    latency_budget_p99_ms: float = Field(
        250.0, gt=0, description="p99 latency the candidate must stay within on staging."
    )
    require_signature_compatible: bool = Field(
        True, description="Candidate input signature must accept what the incumbent accepts."
    )


class Shadow(_Strict):
    """Mirror live traffic to the candidate and compare paired predictions before any user sees it."""

    enabled: bool = True
    duration: Duration = Field(600.0, description="How long the shadow phase lasts.")
    judge_latency: bool = Field(
        False,
        description="Also judge latency on the shadow copies. Off by default: the gateway runs "
        "shadows deprioritised (a niced worker), so their latency is not the candidate's "
        "latency on live traffic; the canary judges that.",
    )


class ExpectedTraffic(_Strict):
    """The traffic the policy is planned for: the defaults of `model-rollout plan` / `simulate`
    (and what `validate-policies` checks the windows against). Not used by a running rollout,
    which judges the traffic it sees."""

    rate: float = Field(..., gt=0, le=1e7, description="Requests per second of the model.")
    error_rate: float = Field(0.001, ge=0, lt=1, description="The incumbent's error rate.")
    latency_ms: float = Field(50.0, gt=0, le=1e6, description="The incumbent's median latency.")
    latency_sigma: float = Field(
        0.5, gt=0, le=5, description="Spread of log latency (0.5: p90 about 1.9x the median)."
    )
    feedback_share: float = Field(
        0.0, ge=0, le=1, description="Share of answered requests that get a business outcome."
    )
    kpi_mean: float = Field(
        0.1, ge=0, le=1, description="Mean outcome (e.g. a click-through rate of 0.1)."
    )


NOTIFY_EVENTS = ("rolled_back", "blocked", "promoted", "paused", "needs_approval")


class Notification(_Strict):
    """Who is told what, through one of Airflow's notifiers (orchestration/notify.py)."""

    on: list[Literal["rolled_back", "blocked", "promoted", "paused", "needs_approval"]] = Field(
        ..., min_length=1, description=f"Events that send it: {', '.join(NOTIFY_EVENTS)}."
    )
    notifier: Literal["smtp", "slack", "apprise"] = Field(
        ...,
        description="smtp (Airflow's SmtpNotifier), slack (SlackWebhookNotifier) or apprise "
        "(AppriseNotifier); slack and apprise need the `notify` extra.",
    )
    conn_id: str | None = Field(
        None,
        min_length=1,
        description="The notifier's Airflow connection (default smtp_default, "
        "slack_default, apprise_default).",
    )
    to: list[str] = Field(default_factory=list, description="E-mail recipients (smtp).")
    from_email: str | None = Field(
        None, description="E-mail sender (smtp; default: the connection's from_email)."
    )

    @model_validator(mode="after")
    def _recipients(self) -> Notification:
        if self.notifier == "smtp" and not self.to:
            raise ValueError("notifier smtp needs 'to': a list of e-mail addresses")
        if self.notifier != "smtp" and (self.to or self.from_email):
            raise ValueError(f"'to' and 'from_email' are for smtp, not {self.notifier}")
        return self


class Approval(_Strict):
    """Optional human approval (Airflow human-in-the-loop) before the cutover."""

    required: bool = False
    timeout: Duration = Field(86400.0, gt=0, description="How long to wait for a human.")


class Serving(_Strict):
    """Which serving stack the rollout drives: implementations chosen by entry point name
    (`model-rollout backends` lists them), configured by Airflow connections."""

    router: str = Field("gateway", description="Traffic router (weights, mirror, staging).")
    deployer: str = Field("gateway", description="Deploys and retires versions.")
    metrics: str = Field("gateway", description="Metric source the judge reads.")
    conn_id: str | None = Field(
        None,
        min_length=1,
        description="Connection of router and deployer (default: their own, e.g. "
        "model_gateway_default, model_serving_default).",
    )
    metrics_conn_id: str | None = Field(
        None,
        min_length=1,
        description="Connection of the metric source (default: conn_id when the source is the "
        "router's implementation, else its own, e.g. prometheus_default).",
    )
    router_options: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the router (docs/backends.md)."
    )
    deployer_options: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the deployer (docs/backends.md)."
    )
    metrics_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the metric source, e.g. Prometheus metric names and labels.",
    )

    @field_validator("router", "deployer", "metrics")
    @classmethod
    def _registered(cls, v: str, info) -> str:
        from model_rollout.backends.catalog import UnknownBackend, implementation

        try:
            implementation(info.field_name, v)
        except UnknownBackend as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _options_fit(self) -> Serving:
        from model_rollout.backends.catalog import implementation

        for role in ("router", "deployer", "metrics"):
            try:
                implementation(role, getattr(self, role)).parse_options(
                    getattr(self, f"{role}_options")
                )
            except ValueError as e:
                raise ValueError(f"serving.{role}_options: {e}") from None
        return self

    @property
    def metrics_connection(self) -> str | None:
        return self.metrics_conn_id or (self.conn_id if self.metrics == self.router else None)


class Policy(_Strict):
    """Everything a rollout of one registered model needs to know, in one file."""

    model: str = Field(..., description="Registered model name in MLflow.")
    trigger: Trigger = Field(default_factory=Trigger)
    steps: list[int] = Field(
        default_factory=lambda: [5, 25, 50, 100],
        description="Candidate traffic percentages; strictly increasing, the last one 100.",
    )
    step_duration: Duration = Field(900.0, description="Monitor window of each step.")
    step_durations: dict[int, Duration] = Field(
        default_factory=dict, description="Per-step window override, keyed by percentage."
    )
    poll_interval: Duration = Field(
        10.0, gt=0, description="How often the monitor asks the judge during a window."
    )
    on_inconclusive: Literal["extend", "pause", "rollback"] = Field(
        "extend",
        description="What the last step does when its window ends before the judge has shown "
        "every metric within tolerance: extend it as long as the planner says is needed "
        "(bounded by max_stage_duration), pause for a human (who sees how much more traffic "
        "it would take), or roll back (saying how much more it would have taken). Earlier "
        "steps and the shadow only guard against harm: they go on unless a degradation is shown.",
    )
    max_stage_duration: Duration | None = Field(
        None,
        gt=0,
        description="Longest a step may run with its extension (default: 3x its window). Past "
        "it, or when the evidence needed is predicted to take longer, after_max_stage_duration "
        "applies.",
    )
    after_max_stage_duration: Literal["pause", "rollback"] = Field(
        "pause",
        description="What an extended step that still cannot decide does: pause for a human or "
        "roll back.",
    )
    shadow: Shadow = Field(default_factory=Shadow)
    staging: Staging = Field(default_factory=Staging)
    holdout: Holdout | None = None
    approval: Approval = Field(default_factory=Approval)
    notify: list[Notification] = Field(
        default_factory=list, description="Notifications on rollout events (none by default)."
    )
    batching: Batching = Field(
        "auto",
        description="How the serving gateway answers concurrent requests to this model's "
        "versions: auto shares predict calls only where every answer stays what `mlflow models "
        "serve` gives the request alone; off predicts each request alone; on shares calls "
        "whenever requests have the same columns (fastest; float outputs may then differ in "
        "the last digits, and models whose output depends on other rows see them).",
    )
    stability_window: Duration = Field(
        86400.0, description="How long the previous champion stays in standby."
    )
    first_rollout: Literal["smoke_then_promote", "block"] = Field(
        "smoke_then_promote",
        description="No champion yet (nothing to compare against): promote after the staging "
        "checks alone, or refuse and leave the first champion to a human.",
    )
    task_retries: int = Field(1, ge=0, le=10, description="Retries of each acting task.")
    retry_delay: Duration = Field(10.0, description="Wait between retries.")
    task_timeout: Duration = Field(
        3600.0, gt=0, description="Execution timeout of each non-waiting task."
    )
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    serving: Serving = Field(
        default_factory=Serving, description="Router, deployer and metric source to use."
    )
    expected_traffic: ExpectedTraffic | None = Field(
        None, description="The traffic the policy is planned for (plan / simulate defaults)."
    )

    @field_validator("model")
    @classmethod
    def _model_name(cls, v: str) -> str:
        if not _MODEL_NAME.match(v):
            raise ValueError(
                "expected a registered model name of letters, digits, '_', '-', '.', got " + repr(v)
            )
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("expected at least one step, e.g. [5, 25, 50, 100]")
        if any(not 0 < s <= 100 for s in v):
            raise ValueError(f"expected percentages in 1..100, got {_short_repr(v)}")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"expected strictly increasing steps, got {_short_repr(v)}")
        if v[-1] != 100:
            raise ValueError(
                f"expected the last step to be 100 (the cutover), got {_short_repr(v)}"
            )
        return v

    @model_validator(mode="after")
    def _overrides_name_steps(self) -> Policy:
        unknown = sorted(set(self.step_durations) - set(self.steps))
        if unknown:
            raise ValueError(
                f"step_durations names steps {_short_repr(unknown)} that are not in steps {self.steps}"
            )
        return self

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.model)

    def window_for(self, step: int) -> float:
        """Monitor window (s) of a traffic step."""
        return self.step_durations.get(step, self.step_duration)

    def max_duration_for(self, window: float) -> float:
        """How long a stage with this window may run in all, extension included."""
        if self.on_inconclusive != "extend":
            return window
        limit = self.max_stage_duration if self.max_stage_duration is not None else 3 * window
        return max(limit, window)

    @property
    def inconclusive_action(self) -> Literal["pause", "rollback"]:
        """What an undecided stage finally does (after any extension)."""
        if self.on_inconclusive == "extend":
            return self.after_max_stage_duration
        return self.on_inconclusive

    def judge_settings(self, mode: str) -> dict:
        """The judge's settings for a stage ("shadow" or "canary") as a dict.

        Shadow copies run deprioritised in the gateway, so their latency is judged only when
        `shadow.judge_latency` says so; the canary judges latency on live traffic.
        """
        cfg = self.judge.model_dump(mode="json")
        if mode == "shadow" and not self.shadow.judge_latency:
            cfg["latency"]["enabled"] = False
            cfg["latency_tail"]["enabled"] = False
        return cfg

    def unsupported(self) -> list[str]:
        """What this policy asks of its serving stack that the stack cannot do (one sentence
        each, naming the field); empty when the stack can run it."""
        from model_rollout.backends import capabilities
        from model_rollout.backends.catalog import capabilities as offered

        roles = ("router", "deployer", "metrics")
        return capabilities.missing(
            self,
            {
                r: offered(r, getattr(self.serving, r), getattr(self.serving, f"{r}_options"))
                for r in roles
            },
        )

    @property
    def canary_steps(self) -> list[int]:
        """Steps that are judged against the incumbent (all but the final 100%)."""
        return [s for s in self.steps if s < 100]


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, field and expectation."""


def dag_id_for(model: str) -> str:
    """The contract: one DAG per registered model."""
    return f"model_rollout__{model}"


def policies_dir() -> Path:
    """`MODEL_ROLLOUT_POLICIES`, else `include/policies` beside the `plugins/` folder."""
    env = os.environ.get(POLICIES_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "include" / "policies"


def include_dir() -> Path:
    """The project's include/ folder (relative holdout paths are resolved against it)."""
    return Path(__file__).resolve().parents[2] / "include"


class _Loader(yaml.SafeLoader):
    """yaml.safe_load's loader, but a scalar YAML resolves and Python cannot build (a date
    2024-13-45, an integer of 5000 digits) is a YAML error with its line, not a ValueError;
    and only true/false are booleans (YAML 1.2), so `on:` (a notification's events) stays a
    key instead of becoming True as YAML 1.1 would have it."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_short_repr(node.value)}: {e}", node.start_mark
            ) from None


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _describe(err: ValidationError, path: Path) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        got_s = "" if e["type"] == "missing" else f" (got {_short_repr(got)})"
        lines.append(f"{path}: field '{loc}': {msg}{got_s}")
    return "invalid rollout policy\n" + "\n".join(lines)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate one policy file; the model defaults to the file's stem."""
    p = Path(path)
    try:
        # bytes: YAML itself decodes them (UTF-8/16) and says where a bad byte is
        raw = yaml.load(p.read_bytes(), Loader=_Loader)
    except yaml.YAMLError as e:
        raise PolicyError(f"{p}: not valid YAML: {e}") from e
    except OSError as e:
        raise PolicyError(f"{p}: cannot read the policy file: {e}") from e
    except RecursionError:
        raise PolicyError(f"{p}: not valid YAML: nested too deeply") from None
    if raw is None:  # an empty file: every default
        raw = {}
    if not isinstance(raw, dict):  # `[]`, `0` or `false` are not an empty policy
        raise PolicyError(f"{p}: expected a mapping of policy fields, got {type(raw).__name__}")
    raw.setdefault("model", p.stem)
    if raw["model"] != p.stem:
        raise PolicyError(
            f"{p}: field 'model': expected the file name's stem {p.stem!r}, "
            f"got {_short_repr(raw['model'])}"
        )
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as e:
        raise PolicyError(_describe(e, p)) from None
    except RecursionError:  # pydantic guards its own recursion; a validator of ours may not
        raise PolicyError(f"{p}: a field is nested too deeply to validate") from None
    problems = policy.unsupported()
    if problems:
        lines = "\n".join(f"{p}: {x}" for x in problems)
        raise PolicyError(f"rollout policy asks what its serving stack cannot do\n{lines}")
    return policy


def policy_files(folder: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every `*.yaml` / `*.yml` policy in the folder, sorted."""
    d = Path(folder) if folder else policies_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_policy_for(model: str, folder: str | os.PathLike[str] | None = None) -> Policy:
    """The policy of one registered model, or a PolicyError saying where it was looked for."""
    d = Path(folder) if folder else policies_dir()
    for suffix in (".yaml", ".yml"):
        if (d / f"{model}{suffix}").is_file():
            return load_policy(d / f"{model}{suffix}")
    raise PolicyError(f"no rollout policy for model {model!r}: expected {d / (model + '.yaml')}")
