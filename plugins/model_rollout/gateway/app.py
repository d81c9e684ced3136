"""The ASGI application: data-plane endpoints, health, metrics, and the admin routes.

`create_app(settings)` is what the CLI serves and what tests may run in-process.
"""

from __future__ import annotations

import contextlib

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as HttpRoute

from model_rollout.gateway import admin, metrics
from model_rollout.gateway.config import Settings
from model_rollout.gateway.core import Gateway, GatewayError


async def invocations(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    headers = request.headers
    ans = await gw.invoke(
        request.path_params["name"],
        await request.body(),
        headers.get("content-type"),
        headers.get("x-routing-key"),
        headers.get("x-request-id"),
    )
    return Response(
        ans.body, status_code=ans.status, media_type="application/json", headers=ans.headers
    )


async def feedback(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    raw = await request.body()
    try:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"request body is not valid JSON: {exc}") from None
        status, doc = await gw.feedback(request.path_params["name"], body)
    except GatewayError as exc:
        return admin.error_response(exc)
    return admin.json_response(status, doc)


async def healthz(request: Request) -> Response:
    return admin.json_response(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    reasons = gw.readiness()
    if reasons:
        return admin.json_response(503, {"status": "not ready", "reasons": reasons})
    return admin.json_response(200, {"status": "ready"})


async def prometheus(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return PlainTextResponse(metrics.render(gw), media_type=metrics.CONTENT_TYPE)


def create_app(settings: Settings) -> Starlette:
    """The gateway as a Starlette app; its lifespan restores state and flushes on shutdown."""
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=[
            HttpRoute("/models/{name}/invocations", invocations, methods=["POST"]),
            HttpRoute("/models/{name}/feedback", feedback, methods=["POST"]),
            HttpRoute("/healthz", healthz, methods=["GET"]),
            HttpRoute("/readyz", readyz, methods=["GET"]),
            HttpRoute("/metrics", prometheus, methods=["GET"]),
            *admin.routes,
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
