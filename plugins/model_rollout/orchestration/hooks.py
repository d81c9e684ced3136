"""Airflow hooks for the systems a rollout talks to, resolved from connections or env.

Connections (the contract): `mlflow_default` (tracking URI) and `model_gateway_default`
(gateway URL, admin token in the password field). Env fallbacks: `MLFLOW_TRACKING_URI`,
`MODEL_GATEWAY_URL`, `MODEL_GATEWAY_TOKEN`. Secrets never appear in logs or reprs. The
serving stack itself (router, deployer, metric source) is whatever the policy names
(`ServingHook`); the gateway is only the default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from model_rollout.backends import Deployer, MetricSource, TrafficRouter
    from model_rollout.policy import Serving

MLFLOW_CONN_ID = "mlflow_default"
GATEWAY_CONN_ID = "model_gateway_default"


def _connection(conn_id: str):
    """The Airflow connection, or None when it is not defined (env fallback then applies)."""
    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException and friends: not configured
        return None


def _url_of(conn) -> str:
    extra = conn.extra_dejson or {}
    for key in ("tracking_uri", "url", "endpoint_url"):
        if extra.get(key):
            return str(extra[key]).rstrip("/")
    scheme = conn.schema if conn.schema in ("http", "https") else "http"
    if conn.conn_type in ("https",):
        scheme = "https"
    host = conn.host or ""
    if "://" in host:
        return host.rstrip("/")
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"


def connection_url(conn_id: str) -> tuple[str, str]:
    """(URL, password) of an Airflow connection; ("", "") when it is not defined."""
    conn = _connection(conn_id)
    if conn is None or not (conn.host or (conn.extra_dejson or {}).get("url")):
        return "", ""
    return _url_of(conn), conn.password or ""


def connection_settings(conn_id: str) -> dict[str, Any]:
    """An Airflow connection's extra fields plus `url` and `password` ({} when undefined)."""
    conn = _connection(conn_id)
    if conn is None:
        return {}
    out = dict(conn.extra_dejson or {})
    if conn.host or out.get("url"):
        out["url"] = _url_of(conn)
    if conn.password:
        out["password"] = conn.password
    return out


@dataclass(frozen=True)
class GatewayEndpoint:
    """Where the gateway is and how to authenticate to its admin API."""

    url: str
    token: str

    def __repr__(self) -> str:
        return f"GatewayEndpoint(url={self.url!r}, token=***)"


class MlflowRegistryHook(BaseHook):
    """MLflow tracking/registry server from connection `mlflow_default`.

    :param mlflow_conn_id: Airflow connection id holding the tracking URI (host/port, or
        extra `tracking_uri`).
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = MLFLOW_CONN_ID
    conn_type = "http"
    hook_name = "MLflow registry"

    def __init__(self, mlflow_conn_id: str = MLFLOW_CONN_ID):
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    def tracking_uri(self) -> str:
        conn = _connection(self.mlflow_conn_id)
        if conn is not None and (conn.host or (conn.extra_dejson or {}).get("tracking_uri")):
            return _url_of(conn)
        return os.environ.get("MLFLOW_TRACKING_URI", "")

    def get_conn(self):
        """A `model_rollout.registry.Registry` bound to the tracking URI."""
        from model_rollout.registry import Registry

        return Registry(self.tracking_uri())


class GatewayHook(BaseHook):
    """The model gateway's admin API from connection `model_gateway_default`.

    :param gateway_conn_id: Airflow connection id: host/port (or extra `url`) of the gateway,
        admin token in the password field.
    """

    conn_name_attr = "gateway_conn_id"
    default_conn_name = GATEWAY_CONN_ID
    conn_type = "http"
    hook_name = "Model gateway"

    def __init__(self, gateway_conn_id: str = GATEWAY_CONN_ID):
        super().__init__()
        self.gateway_conn_id = gateway_conn_id

    def endpoint(self) -> GatewayEndpoint:
        conn = _connection(self.gateway_conn_id)
        if conn is not None and (conn.host or (conn.extra_dejson or {}).get("url")):
            return GatewayEndpoint(
                _url_of(conn), conn.password or os.environ.get("MODEL_GATEWAY_TOKEN", "")
            )
        return GatewayEndpoint(
            os.environ.get("MODEL_GATEWAY_URL", ""), os.environ.get("MODEL_GATEWAY_TOKEN", "")
        )

    def get_conn(self):
        """The gateway as a traffic router (router, deployer and metric source in one)."""
        from model_rollout.backends.catalog import open_backend

        return open_backend("router", "gateway", self.gateway_conn_id)


class ServingHook(BaseHook):
    """The serving stack a policy names: its router, deployer and metric source, each found
    by name (`model_rollout.backends.catalog`) and configured by its connection. One
    instance serves every role that names the same implementation and connection.

    :param serving: the policy's `serving` section (default: the embedded gateway).
    :param timeout: the longest one call may take, retries included (None: what a task can
        afford; see `TrafficRouter.from_connection`).
    """

    hook_name = "Model rollout serving stack"

    def __init__(
        self, serving: Serving | dict[str, Any] | None = None, *, timeout: float | None = None
    ):
        super().__init__()
        self.timeout = timeout
        from model_rollout.policy import Serving

        self.serving = (
            serving if isinstance(serving, Serving) else Serving.model_validate(serving or {})
        )
        self._open: dict[tuple[type, str, str], Any] = {}

    def _backend(self, role: str, conn_id: str | None) -> Any:
        from model_rollout.backends.catalog import implementation

        cls = implementation(role, getattr(self.serving, role))
        options = getattr(self.serving, f"{role}_options")
        key = (cls, conn_id, json.dumps(options, sort_keys=True, default=str))
        if key not in self._open:
            self._open[key] = cls.from_connection(conn_id, timeout=self.timeout, options=options)
        return self._open[key]

    def router(self) -> TrafficRouter:
        return self._backend("router", self.serving.conn_id)

    def deployer(self) -> Deployer:
        return self._backend("deployer", self.serving.conn_id)

    def metrics(self) -> MetricSource:
        return self._backend("metrics", self.serving.metrics_connection)

    def get_conn(self) -> TrafficRouter:
        return self.router()
