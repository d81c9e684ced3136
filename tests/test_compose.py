"""docker-compose.yaml and the Dockerfile agree with the project, checked without Docker.

No Docker engine runs here, so nothing is started. What a deployment silently depends on is
checked instead: names that live in code (connection ids, env variables, CLI flags, the
webhook receiver's path, the folders the image copies) are read from the code, never typed
twice, so a rename on either side fails here rather than in the first rollout. Airflow and
MLflow are not imported (their config files are read as text): the whole file stays fast.
`docker compose config` runs too, where the compose plugin exists.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / "docker" / "env.example"
PG_INIT = ROOT / "docker" / "postgres" / "init-databases.sh"
PLUGINS = ROOT / "plugins"
HOOKS = PLUGINS / "model_rollout" / "orchestration" / "hooks.py"

CORE_SERVICES = {
    "postgres",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "gateway",
}
CELERY_SERVICES = {"redis", "airflow-worker"}
# Airflow components that run project code calling the gateway's admin API: tasks
# (LocalExecutor: in the scheduler), triggers (JudgeTrigger) and the Rollouts page.
GATEWAY_CALLERS = {"airflow-scheduler", "airflow-worker", "airflow-triggerer", "airflow-apiserver"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|FERNET|JWT|_KEY$")
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")

# --- compose-style ${VAR} interpolation --------------------------------------------------------
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's rules: ${V}, ${V:-default}, ${V-default}, ${V:?err}, ${V?err}, ${V:+x}, $$."""

    def one(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        value = env.get(name)
        missing = not value if op.startswith(":") else value is None
        if op.endswith("-"):
            return arg if missing else value
        if op.endswith("?"):
            if missing:
                raise KeyError(f"{name} is required: {arg}")
            return value
        if op.endswith("+"):
            return "" if missing else arg
        return value or ""

    return _VAR.sub(one, text)


def strings(node) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def resolve(node, env: Mapping[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env) for v in node]
    return node


def required_vars(raw) -> set[str]:
    return {m for s in strings(raw) for m in REQUIRED.findall(s)}


def dummy_env(raw) -> dict[str, str]:
    """A URL-safe stand-in value for every variable compose refuses to start without."""
    return {name: f"{name.lower().replace('_', '-')}-value" for name in required_vars(raw)}


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


# --- what the code says -----------------------------------------------------------------------
def module_constants(path: Path) -> dict[str, str]:
    """Module-level NAME = "string" assignments (read with ast: no import)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for t in node.targets:
                if isinstance(t, ast.Name) and isinstance(node.value.value, str):
                    out[t.id] = node.value.value
    return out


def env_reads(path: Path) -> set[str]:
    """Names passed to os.environ.get(...) / os.environ[...] in a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and ast.unparse(node.func.value) == "os.environ"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
        if (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(node.slice.value)
    return names


def site_package(name: str) -> Path:
    """A package's folder, found without importing it (Airflow and MLflow take seconds)."""
    spec = importlib.util.find_spec(name)
    assert spec and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services"
    return data


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return resolve(raw, dummy_env(raw))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def raw_services(raw) -> dict[str, dict]:
    return raw["services"]


@pytest.fixture(scope="module")
def plugin_sources() -> str:
    return "\n".join(p.read_text() for p in sorted(PLUGINS.rglob("*.py")))


def listen_port(service: dict) -> int:
    return int(flag(command_of(service), "--port"))


def service_of_url(url: str, services: dict) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname in services, f"{url}: host {parts.hostname!r} is not a service"
    return parts.hostname, parts.port


# --- structure --------------------------------------------------------------------------------
def test_the_stack_is_complete(services):
    """The issue's stack: every component runs by default; Celery only with its profile."""
    missing = CORE_SERVICES - set(services)
    assert not missing, f"services missing: {sorted(missing)}"
    for name in CORE_SERVICES:
        assert not services[name].get("profiles"), f"{name} must run without a profile"
    for name in CELERY_SERVICES:
        assert name in services and "celery" in services[name].get("profiles", []), name


def test_every_service_has_an_image_or_a_build(services):
    """`up` fails late on a service with nothing to run or a missing Dockerfile."""
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"
        build = svc.get("build")
        if build:
            build = {"context": build} if isinstance(build, str) else build
            context = ROOT / build.get("context", ".")
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_depends_on_resolves(services):
    """Start order is the only readiness contract compose has: it must point at real services."""
    graph = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = set(deps)
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            cond = (spec or {}).get("condition", "service_started")
            assert cond in CONDITIONS, f"{name} -> {target}: condition {cond!r}"
            other = services[target]
            if cond == "service_healthy":
                assert other.get("healthcheck"), f"{name} waits for {target} to be healthy"
            if cond == "service_completed_successfully":
                restart = str(other.get("restart", "no"))
                assert restart == "no" or restart.startswith("on-failure"), (
                    f"{target} must exit for {name} to start; restart={restart}"
                )
            # a service outside a profile cannot need one that only runs inside it
            if other.get("profiles") and (spec or {}).get("required", True):
                assert set(svc.get("profiles", [])) & set(other["profiles"]), (
                    f"{name} needs {target}, which only runs with profile {other['profiles']}"
                )

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join((*path, node))}"
        for nxt in graph[node]:
            visit(nxt, (*path, node))

    for name in graph:
        visit(name, ())


def test_volumes_resolve(compose, services):
    """Undeclared named volumes fail; a missing bind source turns into an empty directory."""
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            if isinstance(vol, dict):
                kind, source = vol.get("type", "volume"), vol.get("source", "")
            else:
                source = vol.split(":", 1)[0] if ":" in vol else ""
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "volume" and source:
                assert source in declared, f"{name}: volume {source!r} is not declared"
            if kind == "bind":
                assert (ROOT / source).exists(), f"{name}: bind mount {source} missing"


# --- secrets ----------------------------------------------------------------------------------
def test_secrets_are_placeholders_only(raw, raw_services):
    """Secrets come from the environment; compose must refuse to start without them."""
    for name, svc in raw_services.items():
        for key, value in env_of(svc).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert REQUIRED.fullmatch(value), (
                    f"{name}: {key} must be a required placeholder ${{VAR:?...}}, got {value!r}"
                )
    for text in strings(raw):
        for m in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", text):
            assert REQUIRED.fullmatch(m[1]), f"password in URL {text!r} is not a placeholder"
    for m in _VAR.finditer("\n".join(strings(raw))):
        if m["name"] and SECRET_NAME.search(m["name"]):
            assert m["op"] == ":?", f"${{{m['name']}}} must be required (:?), not defaulted"


def test_env_example_lists_every_setting_without_secrets(raw):
    """The operator's checklist: every variable the file reads, no secret value committed."""
    example = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"\s*#?\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            example[m[1]] = m[2].strip()
    used = {m["name"] for m in _VAR.finditer("\n".join(strings(raw))) if m["name"]}
    missing = used - set(example)
    assert not missing, f"docker/env.example does not mention {sorted(missing)}"
    for name in required_vars(raw):
        assert example[name] == "", f"docker/env.example must leave {name} empty"


# --- the environment agrees with the code -----------------------------------------------------
def test_project_env_names_are_read_by_the_code(services, plugin_sources):
    """A variable nobody reads is a silent misconfiguration (a typo, or a renamed setting)."""
    mlflow_dir = site_package("mlflow")
    mlflow_names = (mlflow_dir / "environment_variables.py").read_text() + (
        mlflow_dir / "cli" / "__init__.py"
    ).read_text()
    for name, svc in services.items():
        if not svc.get("build"):
            continue  # third-party images (postgres, redis): their own variables
        for key in env_of(svc):
            if key.startswith("MODEL_") or key == "MLFLOW_TRACKING_URI":
                assert f'"{key}"' in plugin_sources, f"{name}: {key} is read nowhere in plugins/"
            elif key.startswith("MLFLOW_"):
                assert f'"{key}"' in mlflow_names, f"{name}: MLflow does not know {key}"


def test_airflow_settings_exist(services):
    """Airflow ignores unknown AIRFLOW__X__Y; its components must agree (JWT, Fernet, DB)."""
    airflow_dir = site_package("airflow")
    options = yaml.load(
        (airflow_dir / "config_templates" / "config.yml").read_text(), Loader=yaml.CSafeLoader
    )
    known = {(s, o) for s, body in options.items() for o in (body.get("options") or {})}
    celery = runpy.run_path(str(airflow_dir / "providers" / "celery" / "get_provider_info.py"))
    for s, body in celery["get_provider_info"]().get("config", {}).items():
        known |= {(s, o) for o in body.get("options", {})}
    airflow_services = {n: s for n, s in services.items() if n.startswith("airflow-")}
    shared: dict[str, set[str]] = {}
    for name, svc in airflow_services.items():
        env = env_of(svc)
        for key, value in env.items():
            if key.startswith("AIRFLOW__"):
                section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
                assert (section, option) in known, f"{name}: Airflow has no option {key}"
                shared.setdefault(key, set()).add(value)
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", f"{name}: default executor"
    # one JWT secret, one Fernet key, one database...: components must not disagree
    differing = {k: v for k, v in shared.items() if len(v) > 1}
    assert not differing, f"Airflow components disagree on {sorted(differing)}"
    incomplete = {k for k in shared if any(k not in env_of(s) for s in airflow_services.values())}
    assert not incomplete, f"set on some Airflow components only: {sorted(incomplete)}"


def test_the_connections_the_hooks_use_are_provided(services, raw_services):
    """Tasks and triggers find MLflow and the gateway through the hooks' connection ids."""
    consts = module_constants(HOOKS)
    conn_ids = {k: v for k, v in consts.items() if k.endswith("_CONN_ID")}
    assert len(conn_ids) >= 2, f"no connection ids found in {HOOKS}"
    fallbacks = env_reads(HOOKS)
    token_env = next(n for n in fallbacks if "TOKEN" in n)
    runs = {"MLFLOW_CONN_ID": ["mlflow", "server"], "GATEWAY_CONN_ID": ["model-gateway"]}
    for name, svc in services.items():
        if not name.startswith("airflow-"):
            continue
        env = env_of(svc)
        for const, conn_id in conn_ids.items():
            key = f"AIRFLOW_CONN_{conn_id.upper()}"
            assert key in env, f"{name}: connection {conn_id} ({key}) not provided"
            conn = json.loads(env[key])
            assert conn.get("conn_type") == "http", f"{name}: {key} conn_type"
            target = conn["host"]
            assert target in services, f"{name}: {key} host {target!r} is not a service"
            assert conn["port"] == listen_port(services[target]), f"{name}: {key} port"
            expected = runs.get(const)
            if expected:
                cmd = command_of(services[target])
                assert cmd[: len(expected)] == expected, f"{key} points at {target}: {cmd}"
            if const == "GATEWAY_CONN_ID" and name in GATEWAY_CALLERS and not conn.get("password"):
                # no token in the connection: the hook falls back to the env variable
                assert token_env in env, f"{name} calls the gateway but has no {token_env}"
                assert (
                    env_of(raw_services[name])[token_env]
                    == (env_of(raw_services[target])[token_env])
                ), f"{name} and {target} must take {token_env} from the same variable"
        if "MLFLOW_TRACKING_URI" in env:
            host, port = service_of_url(env["MLFLOW_TRACKING_URI"], services)
            assert port == listen_port(services[host])


def test_postgres_urls_match_the_databases_created(services, raw_services):
    """Each URL names a role and database the init script creates, with a driver installed."""
    m = re.search(r"for name in ([\w ]+); do", PG_INIT.read_text())
    assert m, f"no database list in {PG_INIT}"
    databases = set(m[1].split())
    pg = services["postgres"]
    init_vars = {k for k in env_of(pg) if not k.startswith("POSTGRES_")}
    assert init_vars == {f"{db.upper()}_DB_PASSWORD" for db in databases}, init_vars
    assert any(
        "docker-entrypoint-initdb.d" in v and PG_INIT.name in v for v in pg.get("volumes", [])
    ), "the init script is not mounted into postgres"
    # who opens each URL: SQLAlchemy needs its driver module; the gateway hands it to libpq
    consumers = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlalchemy",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "sqlalchemy",
        "MLFLOW_BACKEND_STORE_URI": "sqlalchemy",
        "MODEL_GATEWAY_STORE_URL": "libpq",
    }
    drivers = {"psycopg": "psycopg", "psycopg_async": "psycopg", "psycopg2": "psycopg2"}
    seen = set()
    for name, svc in services.items():
        env = env_of(svc)
        urls = {k: v for k, v in env.items() if k in consumers}
        if flag(command_of(svc), "--backend-store-uri"):
            urls["MLFLOW_BACKEND_STORE_URI"] = flag(command_of(svc), "--backend-store-uri")
        for key, url in urls.items():
            parts = urlsplit(url)
            scheme, _, driver = parts.scheme.partition("+")
            assert scheme == "postgresql", f"{name}: {key} is not PostgreSQL: {url}"
            if consumers[key] == "libpq":
                assert not driver, f"{name}: {key} goes to libpq, no +driver: {url}"
            else:
                module = drivers.get(driver or "psycopg2", driver)
                assert importlib.util.find_spec(module), f"{name}: {key} needs {module}"
            assert parts.hostname == "postgres" and parts.hostname in services
            db = parts.path.lstrip("/")
            assert db in databases, f"{name}: {key} names database {db!r}, not created"
            assert parts.username == db, f"{name}: {key} should log in as role {db}"
            raw_url = env_of(raw_services[name]).get(key) or flag(
                command_of(raw_services[name]), "--backend-store-uri"
            )
            var = REQUIRED.search(raw_url)[1]
            assert var == f"{db.upper()}_DB_PASSWORD", f"{name}: {key} password from {var}"
            given = REQUIRED.fullmatch(env_of(raw_services["postgres"]).get(var, ""))
            assert given and given[1] == var, f"postgres does not receive {var} for its init"
            seen.add(db)
        sync = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        if sync and not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"):
            # Airflow derives postgresql+asyncpg, which uv.lock does not install
            assert importlib.util.find_spec("asyncpg"), f"{name}: set the _ASYNC URL"
    assert seen == databases, f"databases created but unused, or missing: {databases ^ seen}"


# --- command lines ----------------------------------------------------------------------------
def test_gateway_replicas_share_one_store(services, monkeypatch):
    """The gateway's own parser accepts the command; replicas must share the PostgreSQL store."""
    from model_rollout.gateway.cli import build_parser

    svc = services["gateway"]
    cmd = command_of(svc)
    assert cmd[0] == "model-gateway", cmd
    for key in list(os.environ):
        if key.startswith(("MODEL_GATEWAY_", "MLFLOW_")):
            monkeypatch.delenv(key)
    for key, value in env_of(svc).items():
        monkeypatch.setenv(key, value)
    try:
        args = build_parser().parse_args(cmd[1:])  # flag defaults read the env, as in the image
    except SystemExit as e:
        pytest.fail(f"model-gateway rejects the compose command line {cmd[1:]}: exit {e.code}")
    assert args.host == "0.0.0.0", "the gateway must listen beyond the container's loopback"
    replicas = int((svc.get("deploy") or {}).get("replicas", 1))
    assert replicas >= 2, "several replicas: the point of the PostgreSQL store"
    assert args.store_url, "replicas without --store-url would each keep their own SQLite"
    assert urlsplit(args.store_url).hostname == "postgres"
    assert args.mlflow_tracking_uri, "models:/ URIs need the tracking server"
    host, port = service_of_url(args.mlflow_tracking_uri, services)
    assert port == listen_port(services[host])
    published = [str(p) for p in svc.get("ports", [])]
    assert all(p.endswith(f":{args.port}") for p in published), published


def test_model_rollout_commands_reach_the_receiver(services, raw_services):
    """MLflow must deliver to the receiver's real path, signed with the secret it verifies."""
    from model_rollout.cli import build_parser

    plugin = (PLUGINS / "model_rollout_plugin.py").read_text()
    prefix = re.search(r'"app":\s*webhook_app,\s*"url_prefix":\s*"([^"]+)"', plugin)[1]
    receiver = (PLUGINS / "model_rollout" / "webhooks" / "receiver.py").read_text()
    route = re.search(r'@api\.post\(\s*"([^"]+)"', receiver)[1]
    secret_env = module_constants(PLUGINS / "model_rollout" / "webhooks" / "settings.py")[
        "SECRET_ENV"
    ]
    api = services["airflow-apiserver"]
    assert secret_env in env_of(api), f"the receiver on the api-server needs {secret_env}"
    registered = 0
    for name, svc in services.items():
        cmd = command_of(svc)
        if cmd[:1] != ["model-rollout"]:
            continue
        try:
            args = build_parser().parse_args(cmd[1:])
        except SystemExit as e:
            pytest.fail(f"{name}: model-rollout rejects {cmd[1:]}: exit {e.code}")
        if args.command != "register-webhook":
            continue
        registered += 1
        host, port = service_of_url(args.url, services)
        assert host == "airflow-apiserver" and port == listen_port(api), args.url
        assert urlsplit(args.url).path == prefix + route, f"{args.url} is not the receiver"
        env = env_of(svc)
        assert args.secret_env in env, f"{name}: {args.secret_env} not set"
        assert (
            env_of(raw_services[name])[args.secret_env]
            == (env_of(raw_services["airflow-apiserver"])[secret_env])
        ), "MLflow must sign with the secret the receiver verifies"
        assert "MLFLOW_TRACKING_URI" in env or args.tracking_uri, f"{name}: which MLflow?"
        mlflow_env = env_of(services["mlflow"])
        schemes = mlflow_env.get("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "https").split(",")
        assert urlsplit(args.url).scheme in [s.strip() for s in schemes]
        # the receiver's address on the compose network is private
        assert mlflow_env.get("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "").lower() == "true"
    assert registered == 1, "one service should register the MLflow webhook"


def test_mlflow_server_admits_its_clients(services, raw_services):
    """MLflow refuses Host headers it does not know (403): clients here say `mlflow:5000`."""
    svc = services["mlflow"]
    cmd = command_of(svc)
    assert cmd[:2] == ["mlflow", "server"], cmd
    assert flag(cmd, "--host") == "0.0.0.0"
    env = env_of(svc)
    assert env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false"
    key = env_of(raw_services["mlflow"]).get("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "")
    assert REQUIRED.fullmatch(key), "several MLflow workers need one webhook encryption key"
    artifacts = flag(cmd, "--artifacts-destination") or env.get("MLFLOW_ARTIFACTS_DESTINATION")
    mounts = [v.split(":")[1] for v in svc.get("volumes", []) if isinstance(v, str)]
    assert artifacts in mounts, f"artifacts at {artifacts} are not on a volume ({mounts})"
    # MLflow checks the Host header (fnmatch when the pattern has "*", else exact)
    allowed = [h.strip() for h in env.get("MLFLOW_SERVER_ALLOWED_HOSTS", "").split(",")]
    allowed += [h.strip() for h in (flag(cmd, "--allowed-hosts") or "").split(",") if h]
    urls = [env_of(s).get("MLFLOW_TRACKING_URI") for s in services.values()]
    urls += [
        "http://{host}:{port}".format(**json.loads(env_of(s)["AIRFLOW_CONN_MLFLOW_DEFAULT"]))
        for s in services.values()
        if "AIRFLOW_CONN_MLFLOW_DEFAULT" in env_of(s)
    ]
    for url in filter(None, urls):
        host = urlsplit(url).netloc
        ok = any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed)
        assert ok, f"MLflow would refuse Host {host!r} (allowed: {allowed})"


# --- the image --------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def test_the_image_holds_what_compose_runs(services):
    """The folders compose points Airflow at must be the ones the Dockerfile copies."""
    instrs = dockerfile_instructions()
    assert instrs[0] == ("FROM", "python:3.11-slim"), instrs[0]
    runs = " ".join(rest for i, rest in instrs if i == "RUN")
    assert "uv sync --frozen --no-dev" in runs, "install from uv.lock, without dev tools"
    # model_rollout.policy finds include/ beside plugins/: the project must stay editable
    assert "--no-editable" not in runs
    workdir = Path("/")
    copied: dict[str, str] = {}  # source -> destination in the image
    for instr, rest in instrs:
        if instr == "WORKDIR":
            workdir = workdir / rest
        if instr == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            dest = parts[-1]
            for src in parts[:-1]:
                target = dest if dest.startswith("/") else str(workdir / dest)
                if dest.endswith("/") and not src.endswith("/"):
                    target = str(Path(target) / Path(src).name)
                copied[src.rstrip("/")] = target.rstrip("/")
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = [
        "dags",
        "plugins",
        "include",
        "pyproject.toml",
        "uv.lock",
        pyproject["project"]["readme"],
    ]
    for src in needed:
        assert src in copied, f"the Dockerfile does not copy {src}"
    extras = re.findall(r"--extra (\S+)", runs)
    for extra in extras:
        assert extra in pyproject["project"].get("optional-dependencies", {}), extra
    env = env_of(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == copied["dags"]
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == copied["plugins"]
    # Airflow imports $AIRFLOW_HOME/config/airflow_local_settings.py (the preload) at start
    settings = copied.get("docker/airflow_local_settings.py", "")
    assert settings == f"{env['AIRFLOW_HOME']}/config/airflow_local_settings.py", settings
    policies = env["MODEL_ROLLOUT_POLICIES"]
    assert policies == f"{copied['include']}/policies"
    assert list((ROOT / "include" / "policies").glob("*.y*ml")), "no policy to roll out"
    if any(command_of(s)[:2] == ["airflow", "celery"] for s in services.values()):
        celery = [
            e
            for e in extras
            for d in pyproject["project"]["optional-dependencies"][e]
            if d.startswith("apache-airflow-providers-celery")
        ]
        assert celery, "the celery profile needs the Celery provider in the image"
    for name, svc in services.items():
        for word in command_of(svc):
            if word.startswith(f"{workdir}/"):
                src = str(Path(word).relative_to(workdir))
                assert src in copied, f"{name} runs {word}, which the image does not contain"


def test_executor_default_and_celery_profile(services):
    """The celery profile's worker must find its broker."""
    worker = services["airflow-worker"]
    assert command_of(worker)[:3] == ["airflow", "celery", "worker"]
    broker = env_of(worker)["AIRFLOW__CELERY__BROKER_URL"]
    assert urlsplit(broker).hostname == "redis" and "redis" in services


# --- docker compose itself, where it exists ---------------------------------------------------
def test_docker_compose_config(raw):
    """Compose's own validation, where the plugin exists (not on these machines)."""
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("`docker compose` is not installed here (no Docker engine either)")
    env = {**os.environ, **dummy_env(raw)}
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--profile", "celery", "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
