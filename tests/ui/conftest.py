"""Rollouts page tests: Airflow's api-server in-process (simple auth manager, known user).

Airflow runs in the session's one test home (`support.airflow_home`, loaded by tests/conftest.py).
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # ui_support

from support.servers import environment  # noqa: E402
from ui_support import PASSWORD, USER, chromium_path  # noqa: E402


@pytest.fixture
def airflow_api(airflow_db, tmp_path):
    """Base URL of Airflow's api-server (core API, auth, plugins) served in-process by uvicorn.

    Simple auth manager with one admin user (USER / PASSWORD). Env set for the test only.
    """
    import uvicorn
    from support.servers import free_port, wait_http

    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    settings = {
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "rollouts-ui-test-secret-0123456789abcdef",
    }
    with environment(settings):
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        app = create_app("core")
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="airflow-api", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/api/v2/monitor/health", timeout=240)
            yield url
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            purge_cached_app()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium; skips (or fails under CI=true) before any server starts."""
    return chromium_path()
