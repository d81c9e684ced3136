"""Policy loading: defaults, durations, and errors that name the file, field and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from model_rollout.policy import (
    Policy,
    PolicyError,
    load_policy,
    load_policy_for,
    parse_duration,
    policy_files,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_shipped_policies_validate():
    files = policy_files(ROOT / "include" / "policies")
    assert files
    for f in files:
        assert load_policy(f).model == f.stem


def test_defaults_and_dag_id(tmp_path):
    p = load_policy(write(tmp_path, "churn", "{}"))
    assert p.model == "churn"
    assert p.dag_id == "model_rollout__churn"
    assert p.steps == [5, 25, 50, 100]
    assert p.canary_steps == [5, 25, 50]
    assert p.trigger.event == "alias" and p.trigger.alias == "challenger"
    assert p.batching == "auto"
    assert load_policy(write(tmp_path, "fast", "batching: on")).batching == "on"  # YAML's True
    assert load_policy(write(tmp_path, "exact", "batching: off")).batching == "off"


@pytest.mark.parametrize(
    "value,seconds",
    [
        (30, 30.0),
        ("30", 30.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("250ms", 0.25),
        (0, 0.0),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


def test_step_windows_compress_to_seconds(tmp_path):
    p = load_policy(
        write(tmp_path, "m", "step_duration: 2\nstep_durations: {25: 3s}\nshadow: {duration: 1}\n")
    )
    assert p.window_for(5) == 2.0 and p.window_for(25) == 3.0 and p.shadow.duration == 1.0


@pytest.mark.parametrize(
    "text,field,expected",
    [
        ("steps: [5, 25, 50]", "steps", "last step to be 100"),
        ("steps: [25, 5, 100]", "steps", "strictly increasing"),
        ("steps: [0, 100]", "steps", "1..100"),
        ("step_duration: soon", "step_duration", "duration such as"),
        ("on_inconclusive: shrug", "on_inconclusive", "'extend', 'pause' or 'rollback'"),
        ("stepz: [5, 100]", "stepz", "Extra inputs are not permitted"),
        ("holdout: {path: x.csv}", "holdout.target", "Field required"),
        ("judge: {alpha: 2}", "judge.alpha", ""),
        ("step_durations: {7: 10}", "(top level)", "not in steps"),
        ("batching: sometimes", "batching", "'auto', 'off' or 'on'"),
    ],
)
def test_invalid_policy_names_file_field_and_expectation(tmp_path, text, field, expected):
    path = write(tmp_path, "bad", text)
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    msg = str(e.value)
    assert str(path) in msg
    assert f"field '{field}'" in msg
    assert expected in msg


def test_model_field_must_match_file_name(tmp_path):
    with pytest.raises(PolicyError, match="file name's stem 'a'"):
        load_policy(write(tmp_path, "a", "model: b"))


def test_not_yaml_and_not_mapping(tmp_path):
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(write(tmp_path, "a", "steps: [5, 25"))
    with pytest.raises(PolicyError, match="expected a mapping"):
        load_policy(write(tmp_path, "b", "- 1\n- 2\n"))


def test_folder_from_env(tmp_path, monkeypatch):
    write(tmp_path, "fraud", "steps: [10, 100]")
    monkeypatch.setenv("MODEL_ROLLOUT_POLICIES", str(tmp_path))
    assert [p.stem for p in policy_files()] == ["fraud"]
    assert load_policy_for("fraud").steps == [10, 100]
    with pytest.raises(PolicyError, match="no rollout policy for model 'nope'"):
        load_policy_for("nope")


def test_policy_is_frozen():
    p = Policy(model="x")
    with pytest.raises(ValidationError):
        p.steps = [100]  # type: ignore[misc]


def test_serving_defaults_to_the_embedded_gateway(tmp_path):
    s = load_policy(write(tmp_path, "svc", "{}")).serving
    assert (s.router, s.deployer, s.metrics) == ("gateway", "gateway", "gateway")
    # each backend then opens its own default connection (model_gateway_default)
    assert s.conn_id is None and s.metrics_connection is None


def test_the_metric_source_shares_the_routers_connection_only_when_it_is_the_same_system(
    tmp_path,
):
    same = load_policy(write(tmp_path, "svc", "serving: {conn_id: gw_eu}")).serving
    assert same.metrics_connection == "gw_eu"
    nginx = (
        "serving: {router: nginx, deployer: mlserver, metrics: prometheus, conn_id: edge, "
        "metrics_options: {preset: mlserver}}\n"
        "judge: {shadow: {enabled: false}, output_drift: {enabled: false}, "
        "kpi: {enabled: false}}"
    )
    other = load_policy(write(tmp_path, "svc", nginx)).serving
    assert other.conn_id == "edge" and other.metrics_connection is None  # prometheus_default


def test_what_a_prometheus_source_offers_follows_its_metric_mapping(tmp_path):
    # MLServer's metrics hold no prediction pairs: a judged shadow cannot run on them
    text = (
        "serving: {router: nginx, deployer: mlserver, metrics: prometheus, "
        "metrics_options: {preset: mlserver}}\n"
    )
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, "svc", text + "judge: {kpi: {enabled: false}}"))
    msg = str(err.value)
    assert "field 'judge.shadow.enabled' needs a metric source that pairs" in msg
    assert "serving.metrics 'prometheus' cannot" in msg
    ok = "judge: {shadow: {enabled: false}, output_drift: {enabled: false}, kpi: {enabled: false}}"
    assert load_policy(write(tmp_path, "svc", text + ok)).unsupported() == []
    # the gateway's own metrics through Prometheus still pair
    gw = "serving: {metrics: prometheus}\njudge: {output_drift: {enabled: false}}"
    assert load_policy(write(tmp_path, "svc", gw)).unsupported() == []


def test_a_metric_that_is_not_a_name_with_matchers_names_the_field(tmp_path):
    text = (
        "serving: {metrics: prometheus, metrics_options: {preset: custom, "
        "requests: 'sum(rate(x[5m]))', model_label: m, version_label: v}}"
    )
    with pytest.raises(PolicyError, match="requests: 'sum"):
        load_policy(write(tmp_path, "svc", text))


def test_an_unknown_router_names_the_field_and_the_installed_ones(tmp_path):
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, "svc", "serving: {router: istio}"))
    msg = str(err.value)
    assert "field 'serving.router'" in msg and "no router named 'istio'" in msg
    assert "registered: gateway, memory" in msg


def test_a_policy_asking_what_its_stack_cannot_do_fails_naming_the_field(tmp_path):
    # the in-memory source counts no output distribution, which the shadow's drift check needs
    text = "serving: {router: memory, deployer: memory, metrics: memory}"
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, "svc", text))
    msg = str(err.value)
    assert "field 'judge.output_drift.enabled' needs a metric source that counts" in msg
    assert "serving.metrics 'memory' cannot" in msg and "output_distribution" in msg
    # turning the check off (or the shadow) makes it runnable
    ok = load_policy(write(tmp_path, "svc", text + "\njudge: {output_drift: {enabled: false}}"))
    assert ok.unsupported() == []
    assert load_policy(write(tmp_path, "svc", text + "\nshadow: {enabled: false}")).serving
