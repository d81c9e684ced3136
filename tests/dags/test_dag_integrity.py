"""Every file in dags/ imports cleanly, fast, and without dragging mlflow in at parse time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py"))


def test_there_are_dag_files():
    assert DAG_FILES, "dags/ has no DAG files"


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_without_mlflow(path: Path):
    """Import the file in a fresh interpreter: no error, and `mlflow` not imported by it."""
    code = (
        "import sys, runpy\n"
        f"runpy.run_path({str(path)!r})\n"
        "heavy = [m for m in ('mlflow', 'sklearn', 'torch') if m in sys.modules]\n"
        "assert not heavy, f'imported at parse time: {heavy}'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


def test_dagbag_has_no_import_errors_and_one_dag_per_policy(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from model_rollout.policy import dag_id_for, policy_files

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    expected = {dag_id_for(p.stem) for p in policy_files()} | {"model_rollout_decommission"}
    assert expected <= set(bag.dag_ids)
    for dag_id in expected - {"model_rollout_decommission"}:
        dag = bag.get_dag(dag_id)
        assert dag.max_active_runs == 1
        assert "version" in dag.params
        assert {"resolve", "cutover", "rollback.restore_traffic", "staging.gate"} <= set(
            dag.task_ids
        )
