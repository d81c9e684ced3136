"""Airflow test environment: a throwaway AIRFLOW_HOME with a migrated SQLite metadata DB.

Set at import time, before anything imports airflow, so every test in this folder parses the
real dags/ folder with the real plugins/ folder on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if "airflow" not in sys.modules:  # else another conftest configured it: share its DB
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
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return settings.SQL_ALCHEMY_CONN
