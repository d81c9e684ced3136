"""The interface every serving backend implements (modelled on Argo Rollouts' traffic routers)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class TrafficError(RuntimeError):
    """The serving backend refused or could not apply a change; the message says which."""


class BackendUnreachable(TrafficError):
    """The serving backend did not answer within the retry budget: not a verdict on a model."""


@dataclass(frozen=True)
class Route:
    """Who answers a model's live traffic, who sees mirrored copies, who sits in staging."""

    generation: int
    weights: dict[str, int] = field(default_factory=dict)
    shadows: tuple[str, ...] = ()
    staging: str | None = None

    def same_traffic(self, weights: dict[str, int], shadows: list[str] | tuple[str, ...]) -> bool:
        live = {v: w for v, w in self.weights.items() if w > 0}
        want = {str(v): int(w) for v, w in weights.items() if int(w) > 0}
        return live == want and sorted(self.shadows) == sorted(str(s) for s in shadows)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "weights": dict(self.weights),
            "shadows": list(self.shadows),
            "staging": self.staging,
        }


class TrafficBackend(ABC):
    """Deploy versions, split and mirror traffic, read per-arm statistics."""

    @abstractmethod
    def deploy(
        self,
        model: str,
        version: str,
        *,
        uri: str | None = None,
        upstream: str | None = None,
        batching: str | None = None,
    ) -> None:
        """Make a version ready to serve (idempotent); raise TrafficError naming the load error.

        :param batching: the policy's `batching` (auto | off | on); a backend that has no such
            setting ignores it.
        """

    @abstractmethod
    def retire(self, model: str, version: str) -> None:
        """Stop serving a version that no longer has traffic (idempotent)."""

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
        staging: str | None | object = ...,
    ) -> Route:
        """Apply weights (summing to 100) and shadows atomically; a no-op when already so."""

    def wait_ready(self, model: str, timeout: float = 300.0) -> None:  # noqa: B027 - optional
        """Block until every routed version of `model` is serving (default: no wait)."""

    @abstractmethod
    def snapshot(self, model: str, since: float, until: float | None = None) -> dict[str, Any]:
        """Per-(version, arm) statistics since a unix time, to now or to `until`
        (docs/architecture.md)."""

    @abstractmethod
    def invoke_staging(self, model: str, payload: dict[str, Any]) -> tuple[Any, float]:
        """Score a payload on the staging version only: (predictions, latency in ms)."""
