"""`model-rollout` command line: operator chores that are not DAG runs.

One function per subcommand, registered in `SUBCOMMANDS`; add yours there. Each returns the
process exit code (0 ok, 1 the check or action failed, 2 bad usage or configuration).
Heavy imports (mlflow, airflow) happen inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from model_rollout.webhooks.events import ALIAS_CREATED, EVENTS_FOR_TRIGGER

DEFAULT_WEBHOOK_NAME = "model-rollout"
DEFAULT_SECRET_ENV = "MODEL_ROLLOUT_WEBHOOK_SECRET"
_MAX_WEBHOOK_PAGES = 100


def _err(msg: str) -> None:
    print(f"model-rollout: {msg}", file=sys.stderr)


# --- register-webhook --------------------------------------------------------------------
def _events_from_policies(folder: str | None) -> list[str]:
    """The webhook events the policies' triggers listen to (stage triggers need none)."""
    from model_rollout.policy import PolicyError, load_policy, policy_files

    wanted = set()
    for path in policy_files(folder):
        try:
            event = EVENTS_FOR_TRIGGER.get(load_policy(path).trigger.event)
        except PolicyError:
            continue  # validate-policies reports these
        if event:
            wanted.add(event)
    return sorted(wanted) or [ALIAS_CREATED]


def _tracking_uri(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from model_rollout.orchestration.hooks import MlflowRegistryHook

    return MlflowRegistryHook().tracking_uri()


def _find_webhooks(client, name: str) -> list:
    found, token = [], None
    for _ in range(_MAX_WEBHOOK_PAGES):
        page = client.list_webhooks(max_results=100, page_token=token)
        found.extend(w for w in page if w.name == name)
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda w: w.creation_timestamp or 0)


def register_webhook(args: argparse.Namespace) -> int:
    """Create the MLflow webhook, or update the one with this name (idempotent)."""
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        _err(
            f"env {args.secret_env} is empty: set it to the secret the receiver verifies "
            f"(the same value as the api-server's MODEL_ROLLOUT_WEBHOOK_SECRET)"
        )
        return 2
    if not args.url.startswith(("http://", "https://")):
        _err(f"--url must be an http(s) URL, got {args.url!r}")
        return 2
    events = sorted({e.strip() for e in args.events if e.strip()}) if args.events else None
    events = events or _events_from_policies(args.policies)
    uri = _tracking_uri(args.tracking_uri)
    if not uri:
        _err(
            "no MLflow tracking URI: pass --tracking-uri, set MLFLOW_TRACKING_URI or mlflow_default"
        )
        return 2

    from mlflow import MlflowClient
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.exceptions import MlflowException

    for e in events:
        try:
            WebhookEvent.from_str(e)
        except Exception:
            _err(f"--events: unknown MLflow webhook event {e!r} (e.g. {ALIAS_CREATED})")
            return 2
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    status = "DISABLED" if args.disabled else "ACTIVE"
    try:
        existing = _find_webhooks(client, args.name)
        if not existing:
            hook = client.create_webhook(
                name=args.name,
                url=args.url,
                events=events,
                description=args.description,
                secret=secret,
                status=status,
            )
            action = "created"
        else:
            if len(existing) > 1:
                others = ", ".join(w.webhook_id for w in existing[1:])
                _err(f"several webhooks are named {args.name!r}; updating the oldest, not {others}")
            current = existing[0]
            same = (
                current.url == args.url
                and sorted(str(e) for e in current.events) == events
                and str(current.status) == status
                and (current.description or "") == (args.description or "")
            )
            hook = client.update_webhook(
                current.webhook_id,
                url=args.url,
                events=events,
                description=args.description,
                secret=secret,  # cannot be read back: always (re)applied
                status=status,
            )
            action = "unchanged (secret re-applied)" if same else "updated"
        result = client.test_webhook(hook.webhook_id) if args.test else None
    except MlflowException as e:  # refused, or unreachable (MLflow wraps connection errors)
        _err(f"registering the webhook at MLflow {uri} failed: {e.message}")
        return 1
    except Exception as e:
        _err(f"registering the webhook at MLflow {uri} failed: {e}")
        return 1
    print(
        f"{action}: webhook {hook.webhook_id} {hook.name!r} -> {hook.url} "
        f"events={','.join(str(e) for e in hook.events)} status={hook.status}"
    )
    if result is not None:
        if not result.success:
            detail = (
                result.error_message or f"HTTP {result.response_status}: {result.response_body}"
            )
            _err(f"test delivery failed: {detail}")
            return 1
        print(f"test delivery: HTTP {result.response_status}")
    return 0


# --- validate-policies -------------------------------------------------------------------
def validate_policies(args: argparse.Namespace) -> int:
    """Load every policy file; print each problem; exit 1 if any."""
    from pathlib import Path

    from model_rollout.policy import PolicyError, load_policy, policies_dir, policy_files

    folder = Path(args.folder) if args.folder else policies_dir()
    if not folder.is_dir():
        _err(f"policy folder {folder} does not exist")
        return 2
    files = policy_files(folder)
    if not files:
        print(f"no policies in {folder} (*.yaml, *.yml)")
        return 0
    bad = 0
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as e:
            bad += 1
            print(f"FAIL {path}\n{e}\n")
            continue
        print(f"ok   {path} -> {policy.dag_id} (trigger: {policy.trigger.event})")
        if policy.expected_traffic is not None:  # do the windows fit the planned traffic?
            from model_rollout.decisions.planner import plan_rollout
            from model_rollout.decisions.traffic import Traffic

            traffic = Traffic(**policy.expected_traffic.model_dump())
            for warning in plan_rollout(policy, traffic).warnings:
                print(f"     warning at {traffic.rate:g} req/s: {warning}")
    print(f"{len(files) - bad} valid, {bad} invalid")
    return 1 if bad else 0


# --- plan / simulate ---------------------------------------------------------------------
_TRAFFIC_FLAGS = ("rate", "error_rate", "latency_ms", "latency_sigma", "feedback_share", "kpi_mean")


def _policy(args: argparse.Namespace):
    from model_rollout.policy import load_policy_for

    return load_policy_for(args.model, args.policies)


def _traffic(args: argparse.Namespace, policy):
    """Traffic from the flags, else what the gateway observed (--observed), else the policy's
    expected_traffic; a ValueError says what is missing."""
    from dataclasses import fields, replace

    from model_rollout.decisions.traffic import Traffic, observed_traffic

    if args.observed:
        import time

        from model_rollout.orchestration.hooks import ServingHook

        metrics = ServingHook(policy.serving).metrics()
        base = observed_traffic(
            metrics.snapshot(policy.model, time.time() - args.observed), args.observed
        )
    elif policy.expected_traffic is not None:
        base = Traffic(**policy.expected_traffic.model_dump())
    elif args.rate is None:
        raise ValueError(
            f"no traffic to plan for: give --rate (requests per second), --observed SECONDS, "
            f"or expected_traffic in {policy.model}'s policy"
        )
    else:
        base = Traffic(rate=args.rate)
    known = {f.name for f in fields(Traffic)}
    given = {k: getattr(args, k) for k in _TRAFFIC_FLAGS if getattr(args, k) is not None}
    return replace(base, **{k: v for k, v in given.items() if k in known})


def _print_json(doc) -> None:
    import json

    print(json.dumps(doc, indent=2, allow_nan=False, default=str))


def plan(args: argparse.Namespace) -> int:
    """What each stage needs at the traffic, the expected time, warnings, a recommendation."""
    from model_rollout.decisions.planner import plan_rollout
    from model_rollout.policy import PolicyError

    try:
        policy = _policy(args)
        traffic = _traffic(args, policy)
    except (PolicyError, ValueError) as e:
        _err(str(e))
        return 2
    except Exception as e:  # the gateway for --observed
        _err(f"reading the observed traffic failed: {e}")
        return 1
    report = plan_rollout(policy, traffic)
    if args.json:
        _print_json(report.to_json())
        return 0
    t = traffic
    print(
        f"{policy.model}: {t.rate:g} req/s, {t.error_rate:.3%} errors, median "
        f"{t.latency_ms:g} ms, feedback on {t.feedback_share:.0%}"
        + (f" (KPI mean {t.kpi_mean:g})" if t.feedback_share else "")
    )
    print(
        f"alpha {policy.judge.alpha:g} over the whole rollout: {len(report.tests)} tests at "
        f"{report.alpha_per_test:.4f} each"
    )
    print(f"{'stage':<12} {'role':<6} {'window':>7} {'max':>7} {'cand. req.':>11}  decides")
    for row in report.stages:
        decides = "never" if row.decides_minutes is None else f"{row.decides_minutes:.1f} min"
        print(
            f"{row.stage:<12} {row.role:<6} {row.window_minutes:>5.0f} m {row.max_minutes:>5.0f} m "
            f"{row.candidate_requests:>11,.0f}  {decides}: {row.note}"
        )
    expected = report.expected_minutes
    print(
        "expected time to a decision for a good candidate: "
        + ("no decision" if expected is None else f"{expected:.0f} min")
        + f" (windows: {report.windows_minutes:.0f} min)"
    )
    for w in report.warnings:
        print(f"warning: {w}")
    return 0


def simulate(args: argparse.Namespace) -> int:
    """Whole rollouts through the real decision code; shares of each end, time to decide."""
    from model_rollout.decisions.simulate import print_progress, simulate, summarise
    from model_rollout.decisions.traffic import parse_effects
    from model_rollout.policy import PolicyError

    try:
        policy = _policy(args)
        traffic = _traffic(args, policy)
        effect = parse_effects(args.effect or [])
    except (PolicyError, ValueError) as e:
        _err(str(e))
        return 2
    except Exception as e:
        _err(f"reading the observed traffic failed: {e}")
        return 1
    if args.runs < 1 or args.runs > 1_000_000:
        _err(f"--runs must be between 1 and 1000000, got {args.runs}")
        return 2
    progress = None if args.quiet else print_progress
    results = simulate(
        policy, traffic, effect, runs=args.runs, seed=args.seed, jobs=args.jobs, progress=progress
    )
    summary = summarise(results)
    if args.json:
        from dataclasses import asdict

        _print_json(
            {
                "model": policy.model,
                "traffic": asdict(traffic),
                "effect": effect.describe(),
                "seed": args.seed,
                **summary.to_json(),
            }
        )
        return 0
    print(
        f"{policy.model}: {args.runs} rollouts of a candidate with {effect.describe()} at {traffic.rate:g} req/s"
    )
    for key in ("promoted", "rolled_back", "paused"):
        lo, hi = summary.intervals[key]
        print(f"  {key:<12} {getattr(summary, key):7.2%}  [95% CI {lo:.2%}, {hi:.2%}]")
    print(
        f"  time to a decision: median {summary.median_decision_minutes:.1f} min, "
        f"p90 {summary.p90_decision_minutes:.1f} min"
    )
    for where, n in sorted(summary.stages.items(), key=lambda kv: -kv[1]):
        print(f"  {n} x {where}: {summary.example_reasons[where]}")
    return 0


def _add_traffic_flags(p) -> None:
    p.add_argument("model", help="registered model name (its policy is read)")
    p.add_argument("--policies", help="policy folder (default: MODEL_ROLLOUT_POLICIES)")
    p.add_argument("--rate", type=float, help="requests per second")
    p.add_argument("--error-rate", type=float, help="the incumbent's error rate (0.001 = 0.1%%)")
    p.add_argument("--latency-ms", type=float, help="the incumbent's median latency")
    p.add_argument("--latency-sigma", type=float, help="spread of log latency (default 0.5)")
    p.add_argument("--feedback-share", type=float, help="share of requests with an outcome")
    p.add_argument("--kpi-mean", type=float, help="mean outcome, e.g. a CTR of 0.1")
    p.add_argument(
        "--observed",
        type=float,
        metavar="SECONDS",
        help="take the traffic the gateway saw in the last SECONDS (flags still override)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_plan(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="what each stage needs at a traffic, and the expected time to a decision",
        description="For the model's policy and a request rate (given, observed, or the "
        "policy's expected_traffic): each stage's expected traffic, when the proof step would "
        "show a good candidate within tolerance, warnings where a window is too short, and "
        "the window that lets ~95%% of good candidates decide in time.",
    )
    _add_traffic_flags(p)


def _add_simulate(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate whole rollouts through the real decision code",
        description="Simulate RUNS rollouts of a candidate (identical to the incumbent unless "
        "--effect says otherwise) through the monitor and gate code the DAG runs; print the "
        "shares promoted / rolled back / paused with Wilson intervals and the time to decide.",
    )
    _add_traffic_flags(p)
    p.add_argument(
        "--effect",
        action="append",
        metavar="EFFECT",
        help="errors=2x, crash=8%%, latency=+20%%, tail=+200ms@3%%, kpi=-15%%, flips=5%% "
        "(repeatable)",
    )
    p.add_argument("--runs", type=int, default=200, help="rollouts (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default %(default)s)")
    p.add_argument("--jobs", type=int, help="processes (default: the machine's cores)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


# --- backends ----------------------------------------------------------------------------
ROLE_TITLES = {"router": "traffic routers", "deployer": "deployers", "metrics": "metric sources"}


def backends(args: argparse.Namespace) -> int:
    """List the registered routers, deployers and metric sources with their capabilities."""
    import json

    from model_rollout.backends.catalog import describe

    found = describe()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for role, rows in found.items():
            print(f"{ROLE_TITLES[role]} (serving.{role}):")
            for row in rows:
                what = row.get("error") or ", ".join(row["capabilities"]) or "no capabilities"
                print(f"  {row['name']:<12} {row['object']}\n  {'':<12} {what}")
    return 1 if any("error" in r for rows in found.values() for r in rows) else 0


def _add_backends(sub) -> None:
    p = sub.add_parser(
        "backends",
        help="list the installed traffic routers, deployers and metric sources",
        description="Every implementation registered through the entry point groups "
        "model_rollout.routers / .deployers / .metric_sources, with what it can do; a policy "
        "names them in `serving`. Exits 1 when one of them fails to import.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


# --- wiring ------------------------------------------------------------------------------
def _add_register_webhook(sub) -> None:
    p = sub.add_parser(
        "register-webhook",
        help="create or update the MLflow registry webhook that starts rollouts",
        description="Create the MLflow webhook named --name, or update it (idempotent). "
        "Events default to those the policies' triggers listen to.",
    )
    p.add_argument(
        "--url",
        required=True,
        help="receiver URL, e.g. http://airflow:8080/model-rollout/webhooks/mlflow",
    )
    p.add_argument(
        "--name", default=DEFAULT_WEBHOOK_NAME, help="webhook name (the idempotency key)"
    )
    p.add_argument(
        "--secret-env",
        default=DEFAULT_SECRET_ENV,
        help="env variable holding the signing secret (default: %(default)s)",
    )
    p.add_argument(
        "--events",
        nargs="+",
        metavar="EVENT",
        help="e.g. model_version_alias.created model_version.created model_version_tag.set",
    )
    p.add_argument("--policies", help="policy folder used to derive the events")
    p.add_argument(
        "--tracking-uri", help="MLflow URI (default: MLFLOW_TRACKING_URI / mlflow_default)"
    )
    p.add_argument("--description", default="model_rollout: starts rollout DAG runs")
    p.add_argument("--disabled", action="store_true", help="register it with status DISABLED")
    p.add_argument("--test", action="store_true", help="send MLflow's test delivery afterwards")


def _add_validate_policies(sub) -> None:
    p = sub.add_parser(
        "validate-policies",
        help="validate every rollout policy file",
        description="Load each *.yaml/*.yml policy; print errors naming file and field.",
    )
    p.add_argument(
        "folder",
        nargs="?",
        help="policy folder (default: MODEL_ROLLOUT_POLICIES or include/policies)",
    )


# --- operator controls (status, promote, abort, retry) -----------------------------------
def _controls(args: argparse.Namespace):
    from model_rollout.controls import Controls
    from model_rollout.policy import load_policy_for

    return Controls(args.model, policy=load_policy_for(args.model, args.policies))


def _control(args: argparse.Namespace, action) -> int:
    """Run one control; its refusal or a missing policy/login is a message and exit 1/2."""
    import json

    from model_rollout.controls import ControlError
    from model_rollout.policy import PolicyError

    try:
        out = action(_controls(args))
    except ControlError as e:
        _err(str(e))
        return 1
    except (PolicyError, PermissionError, LookupError) as e:
        _err(str(e))
        return 2
    if args.json:
        print(json.dumps(out, default=str))
    elif isinstance(out, str):
        print(out)
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


def status(args: argparse.Namespace) -> int:
    """The model's newest rollout; with --watch, again every --every s until it ends."""
    import dataclasses
    import json
    import time

    from model_rollout.policy import PolicyError

    try:
        ctl = _controls(args)
    except PolicyError as e:
        _err(str(e))
        return 2
    deadline = time.monotonic() + args.timeout
    last = None
    while True:
        try:
            st = ctl.status()
        except PermissionError as e:
            _err(str(e))
            return 2
        text = json.dumps(dataclasses.asdict(st)) if args.json else "\n".join(st.lines())
        if text != last:
            print(text, flush=True)
            last = text
        if not args.watch or st.state not in ("running", "queued"):
            return 0
        if time.monotonic() > deadline:
            _err(f"still {st.state} after --timeout {args.timeout:g} s")
            return 1
        time.sleep(args.every)


def promote(args: argparse.Namespace) -> int:
    """End the stage waiting for a verdict as passed (a manual decision)."""
    return _control(args, lambda c: c.promote(full=args.full, user=args.user))


def abort(args: argparse.Namespace) -> int:
    """100% back to the incumbent now; the run then ends rolled back."""
    return _control(args, lambda c: c.abort(args.user))


def pause(args: argparse.Namespace) -> int:
    """Hold at the current traffic; the monitor still rolls back on a degradation."""
    return _control(args, lambda c: c.pause(args.user))


def resume(args: argparse.Namespace) -> int:
    """Let the held stage end again."""
    return _control(args, lambda c: c.resume())


def retry(args: argparse.Namespace) -> int:
    """A new rollout run of a version."""
    return _control(args, lambda c: {"run_id": c.retry(args.version)})


def _control_parser(sub, name: str, help_text: str):
    p = sub.add_parser(
        name,
        help=help_text,
        description=f"{help_text[0].upper()}{help_text[1:].replace('%%', '%')}. Talks to Airflow's REST API "
        "(AIRFLOW_API_URL with AIRFLOW_API_TOKEN or AIRFLOW_API_USERNAME/AIRFLOW_API_PASSWORD), "
        "MLflow and the policy's traffic router.",
    )
    p.add_argument("model", help="registered model name")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--policies", help="policy folder (default: MODEL_ROLLOUT_POLICIES)")
    return p


def _add_status(sub) -> None:
    p = _control_parser(sub, "status", "a model's rollout: stage, traffic split, last decision")
    p.add_argument("--watch", action="store_true", help="print each change until it ends")
    p.add_argument("--every", type=float, default=5.0, help="seconds between looks (--watch)")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="stop watching after s")


def _add_promote(sub) -> None:
    p = _control_parser(sub, "promote", "pass the stage waiting for a verdict (Mark success)")
    p.add_argument(
        "--full", action="store_true", help="and every later stage: straight to the cutover"
    )
    p.add_argument("--user", help="who promotes (default: the login name)")


def _add_abort(sub) -> None:
    p = _control_parser(sub, "abort", "100%% back to the incumbent now, then roll the run back")
    p.add_argument("--user", help="who aborts (default: the login name)")


def _add_pause(sub) -> None:
    p = _control_parser(
        sub, "pause", "hold at the current traffic (the monitor still rolls back on harm)"
    )
    p.add_argument("--user", help="who pauses (default: the login name)")


def _add_resume(sub) -> None:
    _control_parser(sub, "resume", "let a paused rollout's stages end again")


def _add_retry(sub) -> None:
    p = _control_parser(sub, "retry", "start a new rollout run of a version")
    p.add_argument("version", help="model version to roll out")


# name -> (add the parser, run it)
SUBCOMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "register-webhook": (_add_register_webhook, register_webhook),
    "validate-policies": (_add_validate_policies, validate_policies),
    "plan": (_add_plan, plan),
    "simulate": (_add_simulate, simulate),
    "backends": (_add_backends, backends),
    "status": (_add_status, status),
    "promote": (_add_promote, promote),
    "abort": (_add_abort, abort),
    "pause": (_add_pause, pause),
    "resume": (_add_resume, resume),
    "retry": (_add_retry, retry),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-rollout",
        description="Operate model_rollout: webhooks, policies, plans, simulations, backends.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _run in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return SUBCOMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
