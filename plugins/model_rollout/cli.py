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
    print(f"{len(files) - bad} valid, {bad} invalid")
    return 1 if bad else 0


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


# name -> (add the parser, run it)
SUBCOMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "register-webhook": (_add_register_webhook, register_webhook),
    "validate-policies": (_add_validate_policies, validate_policies),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-rollout", description="Operate model_rollout: webhooks, policies."
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
