"""`model-rollout` CLI: validate-policies on real files, register-webhook on a real MLflow server."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from model_rollout.cli import main

GOOD = "model: {name}\nsteps: [10, 100]\ntrigger:\n  event: {event}\n"
# register-webhook tests never deliver: the webhook is DISABLED, and an https URL with a public
# IP literal passes MLflow's URL checks whatever MLFLOW_WEBHOOK_* the shared server runs with.
URL = "https://93.184.215.14/model-rollout/webhooks/mlflow"


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    return d


def test_validate_policies_ok(folder, capsys):
    (folder / "iris.yaml").write_text(GOOD.format(name="iris", event="alias"))
    (folder / "fraud.yml").write_text(GOOD.format(name="fraud", event="stage"))
    assert main(["validate-policies", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "ok   " in out and "model_rollout__iris (trigger: alias)" in out
    assert "2 valid, 0 invalid" in out


def test_validate_policies_names_file_and_field(folder, capsys):
    (folder / "iris.yaml").write_text(GOOD.format(name="iris", event="alias"))
    (folder / "bad.yaml").write_text("model: bad\nsteps: [50, 20]\nsurprise: 1\n")
    (folder / "broken.yaml").write_text("steps: [\n")
    assert main(["validate-policies", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {folder / 'bad.yaml'}" in out
    assert "field 'steps'" in out and "field 'surprise'" in out
    assert "not valid YAML" in out
    assert "1 valid, 2 invalid" in out


def test_validate_policies_folder_problems(tmp_path, folder, capsys):
    assert main(["validate-policies", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["validate-policies", str(folder)]) == 0
    assert "no policies" in capsys.readouterr().out


def test_the_console_script_returns_the_exit_code(folder):
    (folder / "bad.yaml").write_text("model: other\n")
    exe = Path(sys.executable).parent / "model-rollout"
    r = subprocess.run(
        [str(exe), "validate-policies", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, r.stderr
    assert "expected the file name's stem 'bad'" in r.stdout


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "register-webhook" in out and "validate-policies" in out


@pytest.fixture
def webhook_name(mlflow_server):
    """A unique webhook name; every webhook with it is deleted afterwards."""
    from mlflow import MlflowClient

    name = f"model-rollout-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    for w in client.list_webhooks(max_results=100):
        if w.name == name:
            client.delete_webhook(w.webhook_id)


def _named(mlflow_server, name):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    return [w for w in client.list_webhooks(max_results=100) if w.name == name]


def test_register_webhook_creates_then_updates_idempotently(
    mlflow_server, webhook_name, monkeypatch, folder, capsys
):
    monkeypatch.setenv("MY_SECRET", "s3cret")
    (folder / "a.yaml").write_text(GOOD.format(name="a", event="version_created"))
    (folder / "b.yaml").write_text(GOOD.format(name="b", event="tag"))
    (folder / "c.yaml").write_text(GOOD.format(name="c", event="stage"))
    base = [
        "register-webhook",
        "--url",
        URL,
        "--name",
        webhook_name,
        "--secret-env",
        "MY_SECRET",
        "--tracking-uri",
        mlflow_server,
        "--disabled",
    ]
    assert main([*base, "--policies", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("created: webhook ")
    [hook] = _named(mlflow_server, webhook_name)
    assert hook.url == URL
    assert sorted(str(e) for e in hook.events) == ["model_version.created", "model_version_tag.set"]
    assert str(hook.status) == "DISABLED"

    assert main([*base, "--policies", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("unchanged (secret re-applied): ")
    [again] = _named(mlflow_server, webhook_name)
    assert again.webhook_id == hook.webhook_id

    assert main([*base, "--events", "model_version_alias.created"]) == 0
    assert capsys.readouterr().out.startswith("updated: ")
    [updated] = _named(mlflow_server, webhook_name)
    assert updated.webhook_id == hook.webhook_id
    assert [str(e) for e in updated.events] == ["model_version_alias.created"]


def test_register_webhook_configuration_errors(mlflow_server, webhook_name, monkeypatch, capsys):
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    args = [
        "register-webhook",
        "--url",
        URL,
        "--name",
        webhook_name,
        "--tracking-uri",
        mlflow_server,
    ]
    assert main([*args, "--secret-env", "NO_SUCH_SECRET"]) == 2
    assert "env NO_SUCH_SECRET is empty" in capsys.readouterr().err
    monkeypatch.setenv("S", "x")
    assert main([*args[:2], "ftp://x", *args[3:], "--secret-env", "S"]) == 2
    capsys.readouterr()
    assert main([*args, "--secret-env", "S", "--events", "model_version.exploded"]) == 2
    assert "unknown MLflow webhook event 'model_version.exploded'" in capsys.readouterr().err
    assert _named(mlflow_server, webhook_name) == []


def test_register_webhook_unreachable_mlflow(monkeypatch, capsys):
    monkeypatch.setenv("S", "x")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    args = ["register-webhook", "--url", URL, "--secret-env", "S", "--tracking-uri"]
    assert main([*args, "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "at MLflow http://127.0.0.1:9 failed" in err
    assert "Connection refused" in err


def test_backends_lists_routers_deployers_and_metric_sources():
    import json

    exe = Path(sys.executable).parent / "model-rollout"
    r = subprocess.run(
        [str(exe), "backends", "--json"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    for role in ("router", "deployer", "metrics"):
        names = {row["name"] for row in found[role]}
        assert {"gateway", "memory"} <= names, (role, names)
    gateway = next(row for row in found["router"] if row["name"] == "gateway")
    assert "mirror" in gateway["capabilities"] and "kpi_feedback" not in gateway["capabilities"]


def test_a_third_party_package_adds_a_router_through_its_entry_points(
    tmp_path, monkeypatch, capsys
):
    """A distribution on the path that declares `model_rollout.routers` entry points: its
    router is listed and opened by name; one that fails to import is named, exit 1."""
    (tmp_path / "acme_router.py").write_text(
        "from model_rollout.backends.memory import MemoryBackend\n\n\n"
        "class AcmeRouter(MemoryBackend):\n"
        '    """Acme\'s mesh."""\n'
    )
    info = tmp_path / "acme_router-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-router\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[model_rollout.routers]\nacme = acme_router:AcmeRouter\nbroken = acme_missing:Nope\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["backends"]) == 1
    out = capsys.readouterr().out
    assert "acme         acme_router:AcmeRouter" in out
    assert "broken" in out and "ModuleNotFoundError" in out
    from model_rollout.backends import catalog

    assert catalog.open_backend("router", "acme").route("m").generation == 0
