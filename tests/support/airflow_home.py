"""The one Airflow test home of a test session: a throwaway AIRFLOW_HOME whose SQLite metadata
DB is migrated once, with the real dags/ and plugins/ folders.

Importing this module sets the environment, so it must be imported before anything imports
airflow: tests/conftest.py does it first thing, and its `airflow_db` fixture is then the only
one (tests/dags, tests/webhooks and tests/ui used to carry a copy each, and each migrated its
own database when run alone but shared the first one's when run together).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

if "airflow" not in sys.modules:  # else airflow already read its settings: share its DB
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-test-")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
    os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("MODEL_ROLLOUT_POLICIES", str(ROOT / "include" / "policies"))


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Migrate the metadata DB this process uses, once per session (~10 s)."""
    from airflow import settings

    env = dict(
        os.environ,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=settings.SQL_ALCHEMY_CONN,
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    )
    subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return settings.SQL_ALCHEMY_CONN
