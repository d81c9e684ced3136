"""Routers, deployers and metric sources by name, found through Python entry points.

A third-party package adds one by declaring, in its own pyproject.toml::

    [project.entry-points."model_rollout.routers"]
    istio = "my_package.istio:IstioRouter"

and a policy then chooses it with `serving: {router: istio}`. This package registers its
own implementations the same way (see pyproject.toml), so there is one path for all.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from model_rollout.backends.capabilities import BY_ROLE
from model_rollout.backends.deployer import Deployer
from model_rollout.backends.metric_source import MetricSource
from model_rollout.backends.router import TrafficRouter

GROUPS: dict[str, tuple[str, type]] = {
    "router": ("model_rollout.routers", TrafficRouter),
    "deployer": ("model_rollout.deployers", Deployer),
    "metrics": ("model_rollout.metric_sources", MetricSource),
}


class UnknownBackend(LookupError):
    """No implementation of that name is registered; the message lists those that are."""


def registered(role: str) -> dict[str, EntryPoint]:
    """Entry points of one role ("router", "deployer", "metrics"), by name."""
    group, _ = GROUPS[role]
    return {ep.name: ep for ep in entry_points(group=group)}


@cache
def implementation(role: str, name: str) -> type:
    """The class registered as `name` for `role`, checked to implement the role's interface."""
    group, interface = GROUPS[role]
    eps = registered(role)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise UnknownBackend(
            f"no {role} named {name!r} is installed (entry point group {group!r}); "
            f"registered: {known}"
        )
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise UnknownBackend(
            f"{role} {name!r} ({eps[name].value}) is not a {interface.__name__} subclass"
        )
    return cls


def capabilities(role: str, name: str, options: dict[str, Any] | None = None) -> frozenset[str]:
    """What the named implementation can do in that role (configured with `options`)."""
    return implementation(role, name).offered(options) & BY_ROLE[role]


def open_backend(
    role: str, name: str, conn_id: str | None = None, options: dict[str, Any] | None = None
) -> Any:
    """An instance of the named implementation, configured by the connection and options."""
    return implementation(role, name).from_connection(conn_id, options=options)


def describe() -> dict[str, list[dict[str, Any]]]:
    """Every registered implementation per role: name, class, capabilities, summary (for
    `model-rollout backends`). One that fails to import is listed with its error."""
    out: dict[str, list[dict[str, Any]]] = {}
    for role in GROUPS:
        rows = []
        for name, ep in sorted(registered(role).items()):
            row: dict[str, Any] = {"name": name, "object": ep.value}
            try:
                cls = implementation(role, name)
            except Exception as e:  # a broken third-party package must not hide the others
                row["error"] = f"{type(e).__name__}: {e}"
            else:
                row["capabilities"] = sorted(capabilities(role, name))
                row["summary"] = ((cls.__doc__ or "").strip().splitlines() or [""])[0]
            rows.append(row)
        out[role] = rows
    return out
