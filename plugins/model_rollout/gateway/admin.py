"""The admin API under /admin/: token-guarded control of versions, routes and statistics.

Every handler checks `Authorization: Bearer <token>` with a constant-time compare first; the
token itself is never logged or echoed.
"""

from __future__ import annotations

import hmac
import math

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from model_rollout.gateway.core import Gateway, GatewayError


def json_response(status: int, doc) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def error_response(exc: GatewayError) -> Response:
    return json_response(exc.status, exc.body())


def is_admin_path(path: str) -> bool:
    """Everything under /admin is token-guarded, routes that do not exist included."""
    return path == "/admin" or path.startswith("/admin/")


def authorised(header: str | None, token: str | None) -> bool:
    """Whether an `Authorization` header value carries the admin token (constant time)."""
    if token is None:  # explicitly started with --insecure-no-token
        return True
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        value = ""
    return hmac.compare_digest(value.strip().encode("latin-1"), token.encode())


def unauthorised() -> Response:
    return Response(
        orjson.dumps({"error_code": "UNAUTHENTICATED", "message": "missing or wrong bearer token"}),
        status_code=401,
        media_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="model-gateway"'},
    )


def guarded(handler):
    async def wrapper(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        if not authorised(request.headers.get("authorization"), gw.settings.token):
            return unauthorised()
        try:
            return await handler(request, gw)
        except GatewayError as exc:
            return error_response(exc)

    wrapper.__name__ = handler.__name__
    return wrapper


async def _json_body(request: Request, *, allow_empty: bool = False):
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return None
        raise GatewayError(
            422, "request body is empty; a JSON object is expected", "INVALID_PARAMETER_VALUE"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"request body is not valid JSON: {exc}", "BAD_REQUEST") from None


@guarded
async def get_state(request: Request, gw: Gateway) -> Response:
    return json_response(200, gw.state())


@guarded
async def put_version(request: Request, gw: Gateway) -> Response:
    """200 when the version is loaded already, else 202 while it loads (never waits for it)."""
    name, version = request.path_params["name"], request.path_params["version"]
    spec = await _json_body(request, allow_empty=True)
    lv = await gw.load_version(name, version, spec)
    status = 200 if lv.status == "loaded" else 202
    return json_response(status, {"model": name, "version": version, **lv.describe()})


@guarded
async def get_version(request: Request, gw: Gateway) -> Response:
    return json_response(
        200, gw.version_of(request.path_params["name"], request.path_params["version"])
    )


@guarded
async def delete_version(request: Request, gw: Gateway) -> Response:
    name, version = request.path_params["name"], request.path_params["version"]
    await gw.unload_version(name, version)
    return json_response(200, {"model": name, "version": version, "status": "unloaded"})


@guarded
async def get_route(request: Request, gw: Gateway) -> Response:
    return json_response(200, gw.route_of(request.path_params["name"]))


@guarded
async def put_route(request: Request, gw: Gateway) -> Response:
    """200 when the route serves from now on, 202 when it waits for versions still loading."""
    body = await _json_body(request)
    live, route = await gw.set_route(request.path_params["name"], body)
    return json_response(200 if live else 202, route)


@guarded
async def staging_invocations(request: Request, gw: Gateway) -> Response:
    ans = await gw.invoke(
        request.path_params["name"],
        await request.body(),
        request.headers.get("content-type"),
        None,
        request.headers.get("x-request-id"),
        arm="staging",
    )
    return Response(
        ans.body, status_code=ans.status, media_type="application/json", headers=ans.headers
    )


LAST_UNIX_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z; beyond, cell bounds overflow SQL


@guarded
async def get_stats(request: Request, gw: Gateway) -> Response:
    bounds = {}
    for key in ("since", "until"):
        raw = request.query_params.get(key, "0" if key == "since" else None)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not 0 <= value <= LAST_UNIX_SECOND:
            raise GatewayError(
                422,
                f"'{key}' must be unix seconds (a number from 0 to {LAST_UNIX_SECOND}, "
                f"year 9999); got {raw!r}",
                "INVALID_PARAMETER_VALUE",
            )
        bounds[key] = value
    if "until" in bounds and bounds["until"] < bounds["since"]:
        raise GatewayError(
            422,
            f"'until' ({bounds['until']}) must not be before 'since' ({bounds['since']})",
            "INVALID_PARAMETER_VALUE",
        )
    name = request.path_params["name"]
    return json_response(200, await gw.snapshot(name, bounds["since"], bounds.get("until")))


routes = [
    HttpRoute("/admin/state", get_state, methods=["GET"]),
    HttpRoute("/admin/models/{name}/versions/{version}", get_version, methods=["GET"]),
    HttpRoute("/admin/models/{name}/versions/{version}", put_version, methods=["PUT"]),
    HttpRoute("/admin/models/{name}/versions/{version}", delete_version, methods=["DELETE"]),
    HttpRoute("/admin/models/{name}/route", get_route, methods=["GET"]),
    HttpRoute("/admin/models/{name}/route", put_route, methods=["PUT"]),
    HttpRoute("/admin/models/{name}/staging/invocations", staging_invocations, methods=["POST"]),
    HttpRoute("/admin/models/{name}/stats", get_stats, methods=["GET"]),
]
