"""The traffic router interface (after Argo Rollouts' traffic routers and Flagger's `Router`).

A router splits a model's live traffic between versions by weight, mirrors copies to shadow
versions, holds one version in a staging slot, and says when the route it was given is live.
It neither loads models (`Deployer`) nor counts outcomes (`MetricSource`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from model_rollout.backends.base import KEEP, Backend, Route, ServedModel


class TrafficRouter(Backend):
    """Applies routes; implementations register under the entry point group
    `model_rollout.routers`."""

    @abstractmethod
    def route(self, model: str) -> Route:
        """The current route (generation 0 and no weights when the model has none)."""

    @abstractmethod
    def set_traffic(
        self,
        model: str,
        weights: dict[str, int],
        shadows: list[str] | tuple[str, ...] = (),
        *,
        staging: str | None | Any = KEEP,
    ) -> Route:
        """Apply weights (summing to 100) and shadows atomically; a no-op when already so.

        Must be safe to call again after a lost answer (a retried task does): applying the
        same route twice is one change.
        """

    @abstractmethod
    def wait_ready(self, model: str, timeout: float = 300.0) -> None:
        """Block until the route last applied is live (every routed version and shadow
        serving), or raise TrafficError after `timeout` seconds naming what is not."""

    @abstractmethod
    def served(self) -> dict[str, ServedModel]:
        """Every model this router serves, with its route and its versions' status."""
