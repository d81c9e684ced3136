"""PostgreSQL for tests: the machine's server at 127.0.0.1:5432 (trust auth, database `test`)."""

from __future__ import annotations

import os
import socket

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> str:
    """URL of the local PostgreSQL; skip without one, but fail when CI=true (CI must run it)."""
    url = os.environ.get("MODEL_ROLLOUT_TEST_PG_URL", DEFAULT_URL)
    if not postgres_answers():
        msg = "PostgreSQL does not answer on 127.0.0.1:5432"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; CI=true requires it")
        pytest.skip(msg)
    return url
