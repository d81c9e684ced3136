"""The Rollouts page of the Airflow UI (mounted by `model_rollout_plugin` at /model-rollout-ui).

`app` builds the real FastAPI app (`model_rollout.ui.app`) on its first request: every Airflow
component imports plugins, and Airflow's API security module it needs costs seconds to import
anywhere but in the api-server, where it is loaded already.
"""

from __future__ import annotations

from typing import Any

URL_PREFIX = "/model-rollout-ui"


class LazyApp:
    """An ASGI app that imports and delegates to `model_rollout.ui.app:app` when first called."""

    def __init__(self) -> None:
        self._app: Any = None

    def get(self) -> Any:
        if self._app is None:
            from model_rollout.ui.app import app

            self._app = app
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        await self.get()(scope, receive, send)

    def __repr__(self) -> str:
        return "model_rollout.ui.app:app (lazy)"


app = LazyApp()
