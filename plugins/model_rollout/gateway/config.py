"""Gateway settings, in one place so the CLI, tests and benchmarks build the same service."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Settings:
    """Everything the gateway needs to start.

    :param data_dir: folder for the SQLite store (request log, routes, statistics).
    :param token: admin bearer token; None only with ``insecure_no_token``.
    :param store_url: PostgreSQL URL; when set, the store lives there instead of SQLite so
        several replicas can share routes, request log and statistics.
    :param store_schema: PostgreSQL schema to use (created if missing); None: the server default.
    :param mlflow_tracking_uri: where ``models:/`` URIs resolve; None: MLflow's own default.
    :param flush_interval: seconds between batched writes of log rows and statistics.
    :param route_poll_interval: seconds between checks for route changes made by other replicas.
    :param max_batch_rows: most rows coalesced into one pyfunc predict call.
    :param max_pending_rows: rows that may wait in one version's queue; a request arriving
        when that many wait gets 503 OVERLOADED (its own rows are not counted, so a single
        large request is always served).
    :param max_body_bytes: largest scoring request body; a larger one gets 413 naming this limit
        (default 100 MiB, the limit of MLflow's own serving container).
    :param batching: batching mode of versions loaded without one (auto | off | on; see
        `batching.py`).
    :param predict_timeout: seconds a request waits for its model before a 504.
    :param shadow_queue_size: mirrored requests that may wait per shadow version; more are dropped.
    :param shadow_batch_wait: seconds a shadow worker lets copies pile up before predicting, so
        shadows run as few large batches and cost the primary path little CPU.
    :param shadow_process: run each shadow version in its own worker process (niced by
        ``shadow_nice``) so shadow work never holds the gateway's GIL; False keeps shadows in a
        thread of the gateway (one process, less memory).
    :param switch_interval: the interpreter's GIL switch interval (seconds); shorter than
        Python's 5 ms default so a predict thread cannot stall the event loop for long.
    :param log_queue_limit: request-log rows that may wait for the writer before new ones are
        dropped (and counted) rather than letting memory grow without bound.
    :param replica_id: names this process's statistics rows; unique per start.
    """

    data_dir: Path
    token: str | None = field(default=None, repr=False)
    insecure_no_token: bool = False
    store_url: str | None = None
    store_schema: str | None = None
    mlflow_tracking_uri: str | None = None
    flush_interval: float = 0.25
    route_poll_interval: float = 0.5
    max_batch_rows: int = 256
    max_pending_rows: int = 20_000
    max_body_bytes: int = 100 * 1024 * 1024
    batching: str = "auto"
    predict_timeout: float = 60.0
    upstream_timeout: float = 30.0
    shadow_queue_size: int = 1000
    shadow_batch_wait: float = 0.1
    switch_interval: float = 0.001
    shadow_process: bool = True
    shadow_nice: int = 10
    log_queue_limit: int = 1_000_000
    reload_retry_interval: float = 5.0
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not self.token and not self.insecure_no_token:
            raise ValueError(
                "an admin token is required: set MODEL_GATEWAY_TOKEN "
                "(or pass insecure_no_token=True for a local experiment)"
            )

    @classmethod
    def from_env(cls, data_dir: str | Path, **overrides) -> Settings:
        """Settings with token, store URL and tracking URI taken from the environment."""
        values = {
            "token": os.environ.get("MODEL_GATEWAY_TOKEN") or None,
            "store_url": os.environ.get("MODEL_GATEWAY_STORE_URL") or None,
            "store_schema": os.environ.get("MODEL_GATEWAY_STORE_SCHEMA") or None,
            "mlflow_tracking_uri": os.environ.get("MLFLOW_TRACKING_URI") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(data_dir=Path(data_dir), **values)
