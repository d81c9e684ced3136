"""The Rollouts page: a FastAPI app mounted on Airflow's api-server, behind Airflow's auth.

Routes (under the mount prefix, `/model-rollout-ui`):
- `GET /` the HTML page (`?model=&version=` one rollout, `?window=<s>` last N seconds,
  `?refresh=<s>` reload every s seconds);
  not signed in -> redirect to the auth manager's login page, back here afterwards.
- `GET /api/rollouts` the same data as JSON (same query parameters); 401/403 without a token.
- `GET /icon.svg` the nav icon (public).

Authentication is Airflow's: `GetUserDep` reads the `Authorization: Bearer` JWT or the `_token`
cookie the login page sets. The user must also be allowed to read DAG runs.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_rollout.ui import data as ui_data
from model_rollout.ui import page

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#64748b" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M3 20h18"/>'
    '<path d="M5 16l4-5 4 3 6-8"/><circle cx="19" cy="6" r="1.5"/></svg>'
)

_sources: ui_data.Sources | None = None


def sources() -> ui_data.Sources:
    """The page's data sources (connections `mlflow_default`, `model_gateway_default`)."""
    global _sources
    if _sources is None:
        _sources = ui_data.default_sources()
    return _sources


def _airflow_base() -> str:
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="/") or "/").path.rstrip("/")


def _page_path(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") + "/"


def _allowed(user) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, user=user
    )


def _login_redirect(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(get_auth_manager().get_url_login(next_url=here), status_code=303)


app = FastAPI(title="model_rollout: Rollouts page", docs_url=None, redoc_url=None)


@app.exception_handler(StarletteHTTPException)
async def _auth_to_login(request: Request, exc: StarletteHTTPException) -> Response:
    """The HTML page sends a visitor without a valid token to Airflow's login page."""
    is_page = request.url.path.rstrip("/") == _page_path(request).rstrip("/")
    if exc.status_code in (401, 403) and is_page and request.method == "GET":
        return _login_redirect(request)
    return await http_exception_handler(request, exc)


Window = Annotated[float | None, Query(ge=10, le=ui_data.MAX_WINDOW)]


def _collect(model: str | None, version: str | None, window: float | None) -> dict:
    return ui_data.collect(sources(), model=model, version=version, window=window)


@app.get("/", response_class=HTMLResponse)
def rollouts_page(
    request: Request,
    user: GetUserDep,
    model: str | None = None,
    version: str | None = None,
    window: Window = None,
    refresh: Annotated[int | None, Query(ge=5, le=3600)] = None,
) -> Response:
    """The Rollouts page (`refresh=<s>` reloads it every s seconds)."""
    if not _allowed(user):
        return HTMLResponse(
            "<h1>403</h1><p>You may not read DAG runs, so not this page either.</p>", 403
        )
    data = _collect(model, version, window)
    links = page.Links(_airflow_base(), _page_path(request), data.get("tracking_uri"))
    query = {"model": model, "version": version, "window": window}
    html = page.render(data, links, user=user.get_name(), query=query, refresh=refresh)
    return HTMLResponse(html)


@app.get("/api/rollouts")
def rollouts_json(
    user: GetUserDep,
    model: str | None = None,
    version: str | None = None,
    window: Window = None,
) -> JSONResponse:
    """The page's data as JSON."""
    if not _allowed(user):
        raise HTTPException(403, "not allowed to read DAG runs")
    return JSONResponse(_collect(model, version, window))


@app.get("/icon.svg", include_in_schema=False)
def icon() -> Response:
    """Nav icon."""
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
