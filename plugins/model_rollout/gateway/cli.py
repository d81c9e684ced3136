"""`model-gateway`: run the gateway with uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _size(text: str) -> int:
    """Bytes from '1048576', '512K', '100M' or '1G' (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        n = int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive size in bytes such as 104857600, 512K or 100M; got {text!r}"
        )
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="model-gateway",
        description="Serve MLflow model versions with weighted, sticky routing, shadows, "
        "request log and streaming statistics. Admin token from MODEL_GATEWAY_TOKEN.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8790)
    p.add_argument("--data-dir", required=True, help="folder for the SQLite store")
    p.add_argument(
        "--store-url",
        default=os.environ.get("MODEL_GATEWAY_STORE_URL"),
        help="PostgreSQL URL (env MODEL_GATEWAY_STORE_URL); shared by several replicas",
    )
    p.add_argument(
        "--store-schema",
        default=os.environ.get("MODEL_GATEWAY_STORE_SCHEMA"),
        help="PostgreSQL schema (env MODEL_GATEWAY_STORE_SCHEMA; created if missing)",
    )
    p.add_argument(
        "--mlflow-tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking/registry URI for models:/ URIs (env MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--flush-interval", type=float, default=0.25, help="seconds between store writes"
    )
    p.add_argument(
        "--route-poll-interval", type=float, default=0.5, help="seconds between route checks"
    )
    p.add_argument(
        "--max-batch-rows", type=int, default=256, help="most rows in one shared predict call"
    )
    p.add_argument(
        "--max-pending-rows",
        type=int,
        default=20_000,
        help="rows that may wait per version; requests arriving beyond get 503 OVERLOADED",
    )
    p.add_argument(
        "--max-body-size",
        type=_size,
        default=100 * 1024 * 1024,
        help="largest scoring request body in bytes (suffixes K, M, G: powers of 1024); "
        "larger ones get 413. Default 100M, the limit of MLflow's serving container",
    )
    p.add_argument(
        "--batching",
        choices=("auto", "off", "on"),
        default="auto",
        help="batching of versions loaded without their own 'batching' setting: auto shares "
        "predict calls only where answers stay identical to mlflow models serve's; off "
        "predicts every request alone; on shares calls whenever requests have the same columns",
    )
    p.add_argument(
        "--predict-timeout",
        type=float,
        default=60.0,
        help="seconds a request waits for its model before a 504 (mlflow models serve's "
        "default request timeout is 60 s too)",
    )
    p.add_argument("--shadow-queue-size", type=int, default=1000)
    p.add_argument(
        "--shadow-in-process",
        action="store_true",
        help="predict shadows in a thread of the gateway instead of one niced worker process each",
    )
    p.add_argument("--shadow-nice", type=int, default=10, help="nice increment of shadow workers")
    p.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="run without an admin token (admin API open to anyone who can connect)",
    )
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    token = os.environ.get("MODEL_GATEWAY_TOKEN") or None
    if token is None and not args.insecure_no_token:
        print(
            "model-gateway: set MODEL_GATEWAY_TOKEN to the admin token "
            "(or pass --insecure-no-token for a local experiment)",
            file=sys.stderr,
        )
        return 2
    from model_rollout.gateway.app import create_app
    from model_rollout.gateway.config import Settings

    settings = Settings(
        data_dir=args.data_dir,
        token=token,
        insecure_no_token=args.insecure_no_token,
        store_url=args.store_url or None,
        store_schema=args.store_schema or None,
        mlflow_tracking_uri=args.mlflow_tracking_uri or None,
        flush_interval=args.flush_interval,
        route_poll_interval=args.route_poll_interval,
        max_batch_rows=args.max_batch_rows,
        max_pending_rows=args.max_pending_rows,
        max_body_bytes=args.max_body_size,
        batching=args.batching,
        predict_timeout=args.predict_timeout,
        shadow_queue_size=args.shadow_queue_size,
        shadow_process=not args.shadow_in_process,
        shadow_nice=args.shadow_nice,
    )
    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop=loop,
        http=http,
        access_log=False,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
