"""Who is told when a rollout rolls back, is blocked, promoted, paused or needs approval.

Through Airflow's own notifiers, not hand-written HTTP: the policy's `notify` entries name
one (smtp: `SmtpNotifier` of the smtp provider that comes with Airflow; slack:
`SlackWebhookNotifier`; apprise: `AppriseNotifier` — those two from the `notify` extra),
configured by an Airflow connection, so credentials never sit in a policy. Every message
carries the model, version, stage, reason, the version's page in MLflow (the evidence is in
its tags) and the Rollouts page. A notifier that fails is logged and never fails the task
that sent it: a rollback is not undone because the mail server was down.
"""

from __future__ import annotations

import html
import logging
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

from model_rollout.policy import Notification, Policy

log = logging.getLogger(__name__)

TITLES = {
    "rolled_back": "rolled back",
    "blocked": "blocked before any traffic",
    "promoted": "promoted",
    "paused": "paused for a human",
    "needs_approval": "waiting for approval",
}


@dataclass(frozen=True)
class RolloutEvent:
    """What one notification says (also the `model_rollout` key of the notifier's context)."""

    event: str
    model: str
    version: str
    stage: str
    reason: str
    evidence_url: str
    page_url: str

    @property
    def title(self) -> str:
        return f"[model_rollout] {self.model} v{self.version} {TITLES[self.event]}"

    @property
    def text(self) -> str:
        return (
            f"{self.title}\n"
            f"model: {self.model}\nversion: {self.version}\nstage: {self.stage}\n"
            f"reason: {self.reason}\nevidence: {self.evidence_url}\n"
            f"rollouts page: {self.page_url}\n"
        )

    @property
    def html(self) -> str:
        rows = "".join(
            f"<tr><th align=left>{k}</th><td>{html.escape(v)}</td></tr>"
            for k, v in (
                ("model", self.model),
                ("version", self.version),
                ("stage", self.stage),
                ("reason", self.reason),
            )
        )
        return (
            f"<p>{html.escape(self.title)}</p><table>{rows}</table>"
            f'<p><a href="{html.escape(self.evidence_url)}">evidence (MLflow)</a> · '
            f'<a href="{html.escape(self.page_url)}">Rollouts page</a></p>'
        )


def event_for(
    event: str, model: str, version: str, stage: str, reason: str, tracking_uri: str = ""
) -> RolloutEvent:
    """The event with its links: the version's MLflow page and the Rollouts page (Airflow's
    `[api] base_url`)."""
    from airflow.configuration import conf

    from model_rollout.ui import URL_PREFIX as UI_PREFIX

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    query = urlencode({"model": model, "version": version})
    mlflow = tracking_uri.rstrip("/")
    evidence = (
        f"{mlflow}/#/models/{quote(model)}/versions/{quote(str(version))}"
        if mlflow.startswith("http")
        else f"models:/{model}/{version} (tags rollout.*)"
    )
    return RolloutEvent(
        event, model, str(version), stage, reason, evidence, f"{base}{UI_PREFIX}/?{query}"
    )


def notifier(n: Notification, event: RolloutEvent):
    """The Airflow notifier of one `notify` entry; its templates read the event from the
    context (`model_rollout`), so a reason holding braces is never taken for Jinja."""
    if n.notifier == "smtp":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(
            to=n.to,
            from_email=n.from_email,
            subject="{{ model_rollout.title }}",
            html_content="{{ model_rollout.html }}",
            smtp_conn_id=n.conn_id or "smtp_default",
        )
    if n.notifier == "slack":
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(
            slack_webhook_conn_id=n.conn_id or "slack_default", text="{{ model_rollout.text }}"
        )
    from airflow.providers.apprise.notifications.apprise import AppriseNotifier

    return AppriseNotifier(
        title="{{ model_rollout.title }}",
        body="{{ model_rollout.text }}",
        apprise_conn_id=n.conn_id or "apprise_default",
    )


def send(policy: Policy, event: RolloutEvent, context: dict[str, Any] | None = None) -> int:
    """Send `event` through every entry of the policy that listens to it; the number sent.
    A failing notifier is logged, not raised."""
    sent = 0
    for n in policy.notify:
        if event.event not in n.on:
            continue
        ctx = {**(context or {}), "model_rollout": _Rendered(event)}
        try:
            notifier(n, event)(ctx)
        except Exception as e:  # a notification never decides a rollout's outcome
            log.warning(
                "notify %s via %s failed: %s: %s", event.event, n.notifier, type(e).__name__, e
            )
            continue
        sent += 1
    return sent


class _Rendered(dict):
    """The event as Jinja sees it: fields and the title/text/html renderings."""

    def __init__(self, event: RolloutEvent):
        super().__init__(asdict(event), title=event.title, text=event.text, html=event.html)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
