"""Notifications from the policy through Airflow's notifiers (issue #14).

Two whole rollouts under dag.test() (real MLflow, real gateway): one promoted, one rolled back.
Each policy names two notifiers: Airflow's `SmtpNotifier` sending to a real SMTP server
(aiosmtpd on loopback) and the Apprise provider's `AppriseNotifier` posting Apprise's JSON to
a real HTTP receiver on loopback. Each rollout must deliver exactly one e-mail and one POST
naming the model, version, stage, reason, the evidence link and the Rollouts page link.
"""

from __future__ import annotations

import json
import threading
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from support.models import register_iris_version
from support.rollout_env import POLICY, champion_serving, live_only_failure_seed, rollout_env, run
from support.servers import environment, free_port

NOTIFY = """notify:
  - {on: [rolled_back, promoted], notifier: smtp, conn_id: smtp_test, to: [ops@example.test],
     from_email: rollouts@example.test}
  - {on: [rolled_back, promoted], notifier: apprise, conn_id: apprise_test}
"""
MODELS = ("nt_healthy", "nt_errors")


class Inbox:
    """aiosmtpd handler: every message delivered, parsed."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(message_from_bytes(envelope.content, policy=email_policy))
        return "250 OK"


class Receiver(ThreadingHTTPServer):
    """Records the JSON bodies POSTed to it (Apprise's json:// target)."""

    def __init__(self):
        self.bodies = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's hook name
                n = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)


@pytest.fixture(scope="module")
def channels():
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    conns = {
        "AIRFLOW_CONN_SMTP_TEST": json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp.port,
                "extra": {"disable_ssl": True, "disable_tls": True},
            }
        ),
        "AIRFLOW_CONN_APPRISE_TEST": json.dumps(
            {
                "conn_type": "apprise",
                "extra": {"config": {"path": f"json://127.0.0.1:{receiver.server_port}/notify"}},
            }
        ),
    }
    try:
        with environment(conns):
            yield inbox, receiver
    finally:
        smtp.stop()
        receiver.shutdown()


@pytest.fixture(scope="module")
def env(mlflow_server, airflow_db, tmp_path_factory, channels):
    policies = {m: POLICY.format(shadow="false", kpi="false") + NOTIFY for m in MODELS}
    with rollout_env(
        mlflow_server,
        tmp_path_factory.mktemp("nt-policies"),
        tmp_path_factory.mktemp("nt-gateway"),
        policies,
    ) as e:
        yield e


def delivered(channels, model: str) -> tuple[list, list]:
    inbox, receiver = channels
    mails = [m for m in inbox.messages if model in str(m["Subject"])]
    posts = [b for b in receiver.bodies if model in b.get("title", "")]
    return mails, posts


def assert_fields(mails, posts, model, version, stage, reason_part, tracking_uri):
    assert len(mails) == 1 and len(posts) == 1, (mails, posts)
    mail = mails[0]
    assert mail["To"] == "ops@example.test" and mail["From"] == "rollouts@example.test"
    body = mail.get_body(preferencelist=("html", "plain")).get_content()
    post = posts[0]["message"]
    evidence = f"{tracking_uri.rstrip('/')}/#/models/{model}/versions/{version}"
    page = f"/model-rollout-ui/?model={model}&amp;version={version}"
    for text, page_link in ((body, page), (post, page.replace("&amp;", "&"))):
        assert model in text and f"{version}" in text, text
        assert stage in text and reason_part in text, text
        assert evidence in text and page_link in text, text


def test_a_promotion_sends_one_mail_and_one_post(env, channels):
    model = "nt_healthy"
    champion_serving(env, model)
    v2 = register_iris_version(env.tracking_uri, model, kind="good")
    dr, st, _ = run(env, model, v2)
    assert st["cutover"] == "success", st
    mails, posts = delivered(channels, model)
    assert "promoted" in str(mails[0]["Subject"]) if mails else False, mails
    assert_fields(mails, posts, model, v2, "cutover", "step_50: healthy", env.tracking_uri)


def test_a_rollback_sends_one_mail_and_one_post(env, channels):
    model = "nt_errors"
    champion_serving(env, model)
    v2 = register_iris_version(
        env.tracking_uri, model, kind="raises", p=0.15, seed=live_only_failure_seed(0.15)
    )
    dr, st, _ = run(env, model, v2)
    assert st["rollback.record"] == "success", st
    mails, posts = delivered(channels, model)
    assert "rolled back" in str(mails[0]["Subject"]) if mails else False, mails
    assert_fields(mails, posts, model, v2, "canary_25", "errors", env.tracking_uri)
