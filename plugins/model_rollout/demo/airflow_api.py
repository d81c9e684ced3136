"""The demo's session against the `airflow standalone` it started (`airflow_rest` does the
calls; this only knows where standalone keeps the admin password)."""

from __future__ import annotations

import json
from pathlib import Path

from model_rollout.airflow_rest import AirflowRest

USER = "admin"


class AirflowAPI(AirflowRest):
    """The demo's admin session: the password `airflow standalone` generated on first start."""

    def __init__(self, url: str, password_file: Path):
        super().__init__(url, username=USER)
        self.password_file = Path(password_file)

    def password(self) -> str:
        return json.loads(self.password_file.read_text())[USER]
