"""The demo's story: three services, three model versions, two rollouts, one summary.

Why every step waits on a real signal (a health endpoint, a DAG run appearing, a task state)
instead of sleeping: on a busy 2-core machine start-up times vary by a factor of two, and a
demo that guesses either wastes minutes or fails. Every wait is bounded and says what it
waited for when it gives up.

State is fresh on every run: the work dir's MLflow database, gateway store and Airflow home
are deleted first (after stopping whatever a previous demo left running), so version numbers,
run ids and the webhook's dedupe table always start from scratch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import requests

from model_rollout.demo.airflow_api import USER, AirflowAPI
from model_rollout.demo.progress import RunReport, RunWatcher, metric_lines
from model_rollout.demo.services import Service, Services, check_port_free, http_ok

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
MODEL = "iris"
DAG_ID = f"model_rollout__{MODEL}"
WATCHER_DAG_ID = "model_rollout_watcher"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the three services (tests pick free ones; the demo uses these)."""

    mlflow: int = 5080
    gateway: int = 8790
    airflow: int = 8080

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow}"

    @property
    def webhook_url(self) -> str:
        return f"{self.airflow_url}/model-rollout/webhooks/mlflow"


TRAFFIC_RATE = 100.0  # requests per second, every one with a feedback outcome
CONVERSION = 0.4  # share of answered requests whose (synthetic) user converts
STATE_DIRS = ("mlflow", "gateway", "airflow", "policies", "logs")

# Windows compressed from minutes to seconds; judge settings sized for ~100 req/s on a busy
# 2-core machine (see docs/demo.md): 20% of 100 req/s gives enough requests in 25 s for every
# metric to be called healthy; an 8% crash rate is caught after 6-10 s of mirrored traffic. Looks
# every 6 s, not 2: a trigger firing within ~5 s of its deferral hits Airflow 3.3.2's stale
# defer-exit race (apache/airflow#67287: the resumed monitor is marked failed), which still
# rolls back but loses the judge's reason; the first look (just after deferral) comes too early
# to decide, the second comes after that race's window.
POLICY = """\
# Written by `make demo` (model_rollout.demo); the demo points MODEL_ROLLOUT_POLICIES here.
model: iris
trigger: {event: alias, alias: challenger}
steps: [20, 50, 100]
step_duration: 25
poll_interval: 6
on_inconclusive: extend
after_max_stage_duration: rollback
task_retries: 1
retry_delay: 5
shadow: {enabled: true, duration: 20}
staging: {sample_requests: 20, latency_budget_p99_ms: 1000}
holdout: {path: data/iris_holdout.csv, target: species, metric: accuracy, tolerance: 0.03}
approval: {required: false}
stability_window: 1h
judge:
  alpha: 0.05
  min_samples: 80
  errors: {max_relative_increase: 0.5, min_absolute_increase: 0.02}
  latency: {quantiles: [0.5], tolerance: 3.0}
  latency_tail: {enabled: false}
  kpi: {enabled: true, margin: 0.5, min_feedback: 40}
  shadow: {max_disagreement: 0.05}
  output_drift: {max_total_variation: 0.2}
"""


# Airflow imports $AIRFLOW_HOME/config/airflow_local_settings.py in every component at start.
LOCAL_SETTINGS = """\
\"\"\"Written by `make demo`: import once, at start, what rollout tasks and monitors import.

LocalExecutor forks its workers from the scheduler and every task process from a worker, so
what the scheduler imports here is inherited and no task pays again for mlflow, sklearn and
pandas (~5 s idle, up to ~50 s on a busy 2-core machine). The triggerer gets the judge's
statistics (scipy), which its first look at a window would otherwise import in its event loop.
Only modules that do not import Airflow: this runs while Airflow itself is being imported.
\"\"\"

import sys

_COMPONENT = sys.argv[1] if len(sys.argv) > 1 else ""
if _COMPONENT in ("scheduler", "triggerer", "dag-processor", "api-server"):
    import model_rollout.policy  # noqa: F401  (what parsing the DAG file and webhooks need)
if _COMPONENT == "triggerer":
    from model_rollout.judge import evaluate  # noqa: F401
if _COMPONENT == "scheduler":
    import mlflow.pyfunc  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    import model_rollout.registry  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.linear_model  # noqa: F401
"""


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where to look."""


@dataclass
class Secrets:
    """Generated per demo, stored 0600 in the work dir, never printed."""

    gateway_token: str
    webhook_secret: str
    mlflow_fernet_key: str

    @classmethod
    def create(cls, path: Path) -> Secrets:
        s = cls(
            gateway_token=secrets.token_urlsafe(32),
            webhook_secret=secrets.token_urlsafe(32),
            mlflow_fernet_key=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(s.__dict__, f)
        return s


def _env(extra: dict[str, str]) -> dict[str, str]:
    """os.environ with the venv's bin/ first on PATH (airflow and mlflow spawn their tools).

    Airflow settings of the calling shell (or test process) are dropped: the services run on
    the demo's own embedded defaults, whatever AIRFLOW__* the caller has set.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_HOME"
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _gateway_supports(flag: str) -> bool:
    """Whether this build's `model-gateway` knows `flag` (options come and go between builds)."""
    try:
        out = subprocess.run(
            [str(VENV_BIN / "model-gateway"), "--help"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return flag in out


class Demo:
    """One run of `make demo` up to its summary (the caller decides when services stop).

    :param workdir: where state, logs, pidfiles and secrets go (`.demo/`).
    :param ports: the services' loopback ports (the end-to-end tests pick free ones).
    :param policies: policy YAML per model, written to the policies folder Airflow reads.
    :param traffic_rate: live requests per second, each with a feedback outcome.
    """

    def __init__(
        self,
        workdir: Path,
        ports: Ports = Ports(),
        policies: dict[str, str] | None = None,
        traffic_rate: float = TRAFFIC_RATE,
    ):
        self.workdir = Path(workdir).resolve()
        self.ports = ports
        self.policies = policies if policies is not None else {MODEL: POLICY}
        self.traffic_rate = traffic_rate
        self.sec: Secrets | None = None
        self.services = Services(self.workdir)
        self.t0 = time.monotonic()
        self.traffic = None
        self.api = AirflowAPI(
            self.ports.airflow_url,
            self.workdir / "airflow" / "simple_auth_manager_passwords.json.generated",
        )
        self.reports: list[tuple[str, str, RunReport]] = []  # (role, description, report)
        self.models: dict[str, tuple[str, str]] = {}  # role -> (version, description)
        self.webhook_line = ""
        self._thread_error: BaseException | None = None

    def say(self, msg: str) -> None:
        elapsed = time.monotonic() - self.t0
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {msg}", flush=True)

    # -- set-up -------------------------------------------------------------------------------
    def fresh_state(self) -> Secrets:
        stopped = self.services.stop_all(self.say)
        if stopped:
            self.say(f"stopped {stopped} service(s) left by a previous demo")
        for d in STATE_DIRS:
            shutil.rmtree(self.workdir / d, ignore_errors=True)
        for d in STATE_DIRS:
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        for model, text in self.policies.items():
            (self.workdir / "policies" / f"{model}.yaml").write_text(text)
        (self.workdir / "airflow" / "config").mkdir()
        (self.workdir / "airflow" / "config" / "airflow_local_settings.py").write_text(
            LOCAL_SETTINGS
        )
        self.sec = Secrets.create(self.workdir / "secrets.json")
        return self.sec

    def service_defs(self, sec: Secrets) -> tuple[Service, Service, Service]:
        w = self.workdir
        gateway_extra = []
        if _gateway_supports("--shadow-in-process"):
            # one process on 2 cores: a niced shadow worker process per version would load its
            # model again and, on a busy machine, starve (its first copies then time out)
            gateway_extra.append("--shadow-in-process")
        mlflow = Service(
            name="mlflow",
            cmd=[
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{w / 'mlflow' / 'mlflow.db'}",
                "--default-artifact-root",
                str(w / "mlflow" / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.mlflow),
                "--workers",
                "1",
            ],
            port=self.ports.mlflow,
            ready=lambda: http_ok(f"{self.ports.mlflow_url}/health"),
            cwd=w / "mlflow",
            env=_env(
                {
                    # no server-side jobs here; their consumers cost ~250 MB each
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": sec.mlflow_fernet_key,
                    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
                    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
                }
            ),
        )
        gateway = Service(
            name="gateway",
            cmd=[
                str(VENV_BIN / "model-gateway"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.gateway),
                "--data-dir",
                str(w / "gateway"),
                "--mlflow-tracking-uri",
                self.ports.mlflow_url,
                "--log-level",
                "warning",
                *gateway_extra,
            ],
            port=self.ports.gateway,
            ready=lambda: http_ok(f"{self.ports.gateway_url}/healthz"),
            env=_env(
                {
                    "MODEL_GATEWAY_TOKEN": sec.gateway_token,
                    "MLFLOW_TRACKING_URI": self.ports.mlflow_url,
                    "MLFLOW_REGISTRY_URI": self.ports.mlflow_url,
                }
            ),
        )
        airflow = Service(
            name="airflow",
            cmd=[str(VENV_BIN / "airflow"), "standalone"],
            port=self.ports.airflow,
            ready=self.api.health_problem,
            cwd=w / "airflow",
            leader_signal=signal.SIGINT,  # standalone's own shutdown: SIGTERM to each part
            env=_env(
                {
                    "AIRFLOW_HOME": str(w / "airflow"),
                    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__CORE__PARALLELISM": "4",
                    # DAG files import the judge (scipy, pandas): ~15 s on a busy machine
                    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
                    "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "300",
                    # the DAG files do not change during a demo: parse once, not every 30 s
                    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.ports.airflow_url}/execution/",
                    "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__API__PORT": str(self.ports.airflow),
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__API__BASE_URL": self.ports.airflow_url,
                    "MODEL_ROLLOUT_POLICIES": str(w / "policies"),
                    "MODEL_ROLLOUT_WEBHOOK_SECRET": sec.webhook_secret,
                    "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                        {"conn_type": "http", "host": "127.0.0.1", "port": self.ports.mlflow}
                    ),
                    "AIRFLOW_CONN_MODEL_GATEWAY_DEFAULT": json.dumps(
                        {
                            "conn_type": "http",
                            "host": "127.0.0.1",
                            "port": self.ports.gateway,
                            "password": sec.gateway_token,
                        }
                    ),
                    "MLFLOW_TRACKING_URI": self.ports.mlflow_url,
                    "MLFLOW_REGISTRY_URI": self.ports.mlflow_url,
                    "MODEL_GATEWAY_URL": self.ports.gateway_url,
                    "MODEL_GATEWAY_TOKEN": sec.gateway_token,
                }
            ),
        )
        return mlflow, gateway, airflow

    def register_models(self) -> None:
        """v1 incumbent (champion), v2 healthy candidate, v3 degraded candidate.

        MLflow's chatter (run links, warnings) goes to logs/models.log, not the terminal.
        """
        log = self.services.log_dir / "models.log"
        with (
            open(log, "a") as out,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            logging.getLogger("mlflow").setLevel(logging.ERROR)
            self._register_models()
        for v, d in self.models.values():
            self.say(f"model    {MODEL} v{v} registered ({d})")

    def _register_models(self) -> None:
        from model_rollout.demo import models

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        v1 = models.register_sklearn(
            self.ports.mlflow_url, 1.0, "incumbent: LogisticRegression C=1"
        )
        from mlflow import MlflowClient

        MlflowClient(self.ports.mlflow_url, self.ports.mlflow_url).set_registered_model_alias(
            MODEL, "champion", v1.version
        )
        v2 = models.register_sklearn(
            self.ports.mlflow_url, 2.0, "healthy: LogisticRegression C=2 (retrained)"
        )
        seed = models.holdout_safe_seed()
        v3 = models.register_crashing(self.ports.mlflow_url, 2.0, models.FAIL_SHARE, seed)
        self.models = {
            "incumbent": (v1.version, v1.description),
            "healthy": (v2.version, v2.description),
            "degraded": (v3.version, "degraded: " + v3.description),
        }

    def serve_incumbent(self, token: str) -> None:
        """Production today: v1 serves 100% in the gateway before any rollout."""
        from model_rollout.backends.gateway import GatewayBackend

        v1 = self.models["incumbent"][0]
        backend = GatewayBackend(self.ports.gateway_url, token)
        backend.deploy(MODEL, v1)
        backend.set_traffic(MODEL, {v1: 100}, [], staging=None)
        self.say(f"gateway  {MODEL} v{v1} loaded and serving 100% of live traffic")

    def start_traffic(self) -> None:
        from model_rollout.demo.models import COLUMNS, live_rows
        from model_rollout.loadgen import Traffic

        rows = live_rows()
        rng = random.Random(7)
        order = [rng.randrange(len(rows)) for _ in range(10_000)]

        def payload(i: int):
            row = rows[order[i % len(order)]]
            return {"dataframe_split": {"columns": COLUMNS, "data": [row]}}, f"user-{i % 5000}"

        self.traffic = Traffic(
            self.ports.gateway_url,
            MODEL,
            payload,
            rate=self.traffic_rate,
            max_requests=int(self.traffic_rate * 900),
            max_seconds=900,
            conversion={"*": CONVERSION},
            workers=4,
            seed=11,
        ).start()
        self.say(
            f"traffic  {self.traffic_rate:.0f} req/s of iris rows to {self.ports.gateway_url}, each answer "
            f"followed by a feedback outcome ({CONVERSION:.0%} convert)"
        )

    def wait_for_dag(self, timeout: float = 300.0) -> None:
        """Until the DAG processor has parsed the rollout DAG (it imports the judge: slow)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.dag(DAG_ID) is not None:
                return
            time.sleep(2.0)
        errors = [e for e in self.api.import_errors() if "model_rollout_dags" in e["filename"]]
        detail = f": {errors[0]['stack_trace'][-800:]}" if errors else ""
        raise DemoError(f"DAG {DAG_ID} did not show up in Airflow within {timeout:.0f} s{detail}")

    def register_webhook(self, sec: Secrets) -> None:
        """`model-rollout register-webhook` (the product's CLI): MLflow -> the Airflow plugin.

        Runs while Airflow still starts (MLflow does not call the URL when it is registered);
        `test_webhook` checks the whole path once Airflow is up.
        """
        cmd = [
            str(VENV_BIN / "model-rollout"),
            "register-webhook",
            "--url",
            self.ports.webhook_url,
            "--tracking-uri",
            self.ports.mlflow_url,
            "--policies",
            str(self.workdir / "policies"),
        ]
        env = _env({"MODEL_ROLLOUT_WEBHOOK_SECRET": sec.webhook_secret})
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise DemoError(f"model-rollout register-webhook failed:\n{p.stdout}{p.stderr}")
        self.webhook_line = p.stdout.strip().splitlines()[-1]

    def test_webhook(self) -> None:
        """MLflow's signed test delivery to the receiver: 202 means secret and URL agree."""
        from mlflow import MlflowClient

        client = MlflowClient(self.ports.mlflow_url, self.ports.mlflow_url)
        hook = next(w for w in client.list_webhooks(max_results=100) if w.name == "model-rollout")
        result = client.test_webhook(hook.webhook_id)
        if not result.success:
            raise DemoError(
                f"MLflow's test delivery to {self.ports.webhook_url} failed: "
                f"{result.error_message or result.response_status} {result.response_body or ''}"
            )
        self.say(f"webhook  {self.webhook_line}")
        self.say(f"webhook  MLflow's signed test delivery: HTTP {result.response_status}")

    # -- rollouts -----------------------------------------------------------------------------
    def rollout(self, role: str, token: str) -> RunReport:
        """Set the challenger alias (MLflow fires the webhook) and follow the run to its end."""
        from mlflow import MlflowClient

        version, description = self.models[role]
        run_id = f"rollout__v{version}"
        print(flush=True)
        self.say(f"=== rollout of v{version}, the {description}")
        MlflowClient(self.ports.mlflow_url, self.ports.mlflow_url).set_registered_model_alias(
            MODEL, "challenger", version
        )
        self.say(f"mlflow   alias challenger -> v{version} set; waiting for the webhook's run")
        run = RunWatcher.wait_for_run(self.api, DAG_ID, run_id, timeout=90)
        if run is None:
            raise DemoError(
                f"no run {run_id} 90 s after setting the alias: the MLflow webhook did not "
                f"reach Airflow (see {self.services.log_path('mlflow')} and "
                f"{self.services.log_path('airflow')})"
            )
        by = run.get("triggering_user_name") or "?"
        self.say(f"airflow  run {run_id} created by {by} ({run.get('state')})")
        watcher = RunWatcher(
            self.api, self.ports.gateway_url, token, MODEL, DAG_ID, run_id, version, self.say
        )
        try:
            report = watcher.watch(timeout=420)
        except TimeoutError as e:
            raise DemoError(
                f"{e}; its task logs are in {self.workdir / 'airflow' / 'logs' / ('dag_id=' + DAG_ID)}"
            ) from None
        outcome = "PROMOTED" if report.state == "success" else "ROLLED BACK"
        if report.state != "success" and report.stage == "staging":
            outcome = "BLOCKED"
        self.say(f"=== v{version}: {outcome}" + (f" ({report.reason})" if report.reason else ""))
        self.reports.append((role, description, report))
        return report

    # -- summary ------------------------------------------------------------------------------
    def summary(self) -> str:
        from mlflow import MlflowClient

        client = MlflowClient(self.ports.mlflow_url, self.ports.mlflow_url)
        aliases = client.get_registered_model(MODEL).aliases
        by_version = {str(v): a for a, v in aliases.items()}
        lines = ["", "=" * 100, "SUMMARY", "=" * 100]
        lines.append(f"{'version':<8}{'role':<11}{'outcome':<13}{'alias':<11}reason / evidence")
        for role in ("incumbent", "healthy", "degraded"):
            if role not in self.models:
                continue
            v = self.models[role][0]
            tags = dict(client.get_model_version(MODEL, v).tags)
            state = tags.get("rollout.state", "serving" if role == "incumbent" else "-")
            if role == "incumbent":
                why = "was champion before the demo"
                if state == "standby":
                    why += f"; standby since v{tags.get('rollout.replaced_by')} was promoted"
            elif state == "promoted":
                why = tags.get("rollout.summary", "")
            else:
                why = tags.get("rollout.reason", "")
            lines.append(
                f"v{v:<7}{role:<11}{state.upper().replace('_', ' '):<13}{by_version.get(v, '-'):<11}{why[:160]}"
            )
        lines.append("")
        for role, _desc, rep in self.reports:
            v = rep.candidate
            took = (rep.ended_at or 0) - (rep.started_at or 0)
            live = rep.answered.get(f"{v} primary", 0)
            mirrored = rep.answered.get(f"{v} shadow", 0)
            errs = rep.errors.get(f"{v} primary", 0) + rep.errors.get(f"{v} shadow", 0)
            lines.append(
                f"v{v} ({role}): run {rep.run_id} {rep.state} in {took:.0f} s; the candidate "
                f"answered {live} live requests and {mirrored} mirrored copies, {errs} errors"
            )
            if rep.first_traffic_at and rep.restored_at:
                detect = (
                    f"the monitor ended degraded after {rep.detected_at - rep.first_traffic_at:.1f} s, "
                    if rep.detected_at
                    else ""
                )
                lines.append(
                    f"    time from degradation to rollback: v{v} got its first traffic "
                    f"({rep.stage}) at {time.strftime('%H:%M:%S', time.localtime(rep.first_traffic_at))}; "
                    f"{detect}100% was back on v{rep.incumbent} after "
                    f"{rep.restored_at - rep.first_traffic_at:.1f} s"
                )
                for d in rep.decisions:
                    if d.get("outcome") == "degraded":
                        lines.append(f"    the judge at {d.get('stage')}, per metric:")
                        lines.extend(
                            f"      {m[:150]}" for m in metric_lines(d.get("verdict") or {})
                        )
                if live == 0 and mirrored:
                    lines.append(
                        "    caught in shadow: no user ever got an answer from it (mirrored copies only)"
                    )
        if self.traffic is not None:
            st = self.traffic.stats
            failed = sum(st.failed.values())
            lines.append(
                f"traffic: {st.sent} requests sent, {st.ok} answered, {failed} failed "
                f"({dict(st.failed) or 'none'}), {st.feedback} feedback outcomes"
            )
        lines.append("")
        try:
            password = self.api.password()
        except (OSError, ValueError, KeyError):
            password = f"(see {self.api.password_file})"
        lines.append(
            f"Airflow UI     {self.ports.airflow_url}/dags/{DAG_ID}   login {USER} / {password}"
        )
        try:
            pages = [p for p in self.api.plugin_pages() if "rollout" in p[0].lower()]
        except requests.RequestException:
            pages = []
        if pages:
            for name, url in pages:
                lines.append(f"{name:<15}{url}   (same login)")
        else:
            lines.append(
                "Rollouts page  not in this build (the Airflow plugin adds no UI page yet); "
                "the DAG's grid view above shows every stage"
            )
        lines.append(f"MLflow UI      {self.ports.mlflow_url}/#/models/{MODEL}   (no login)")
        lines.append(
            f"Gateway        {self.ports.gateway_url}/admin/models/{MODEL}/route   "
            f"(admin token in {self.workdir / 'secrets.json'})"
        )
        lines.append(f"Logs           {self.services.log_dir}")
        wall = time.monotonic() - self.t0
        lines.append(f"Demo wall time {int(wall // 60)} min {wall % 60:.0f} s")
        lines.append("=" * 100)
        return "\n".join(lines)

    def _capture(self, fn, *args) -> None:
        """Run `fn` in a thread; its exception is re-raised by the main thread later."""
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self._thread_error = e

    # -- the whole story ----------------------------------------------------------------------
    def run(self) -> int:
        """Set up, run both rollouts, print the summary; the exit code of `make demo`."""
        sec = self.start()
        self.rollout("healthy", sec.gateway_token)
        self.rollout("degraded", sec.gateway_token)
        self.traffic.stop()
        print(self.summary(), flush=True)
        return 0

    def start(self) -> Secrets:
        """Fresh state, the three services up, models registered, webhook checked, traffic on."""
        self.say(f"model_rollout demo; state, logs and secrets in {self.workdir}")
        sec = self.fresh_state()
        mlflow_svc, gateway_svc, airflow_svc = self.service_defs(sec)
        for svc in (mlflow_svc, gateway_svc, airflow_svc):
            check_port_free(svc.port, svc.name)  # all free before any starts
        for svc in (mlflow_svc, gateway_svc, airflow_svc):
            self.services.start(svc)
        self.say(
            f"started  MLflow :{self.ports.mlflow}, gateway :{self.ports.gateway}, airflow standalone "
            f":{self.ports.airflow} (logs in {self.services.log_dir})"
        )
        took = self.services.wait_ready(mlflow_svc, timeout=240)
        self.say(f"ready    MLflow ({took:.0f} s)")
        hook = threading.Thread(target=self._capture, args=(self.register_webhook, sec))
        hook.start()
        self.register_models()
        self.services.wait_ready(gateway_svc, timeout=120)
        self.serve_incumbent(sec.gateway_token)
        took = self.services.wait_ready(airflow_svc, timeout=420)
        self.say(f"ready    airflow standalone ({took:.0f} s, all components healthy)")
        self.api.login()
        self.wait_for_dag()
        self.api.unpause(DAG_ID)
        # The registry watcher (a safety net for missed webhooks) would also start the runs a
        # few seconds after the webhook; paused, every run here provably comes from the webhook.
        self.api.set_paused(WATCHER_DAG_ID, True)
        self.say(f"airflow  DAG {DAG_ID} parsed and unpaused ({WATCHER_DAG_ID} paused)")
        t = time.monotonic()
        self.api.warm_up_execution_api()
        self.say(f"airflow  execution API answered ({time.monotonic() - t:.0f} s)")
        hook.join(timeout=300)
        if self._thread_error is not None:
            raise self._thread_error
        self.test_webhook()
        time.sleep(1.5)  # MLFLOW_WEBHOOK_CACHE_TTL=1: the server sees the new webhook
        self.start_traffic()
        time.sleep(3.0)  # the incumbent's arm has data before any candidate gets traffic
        return sec
