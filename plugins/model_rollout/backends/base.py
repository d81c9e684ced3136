"""What every serving backend shares: the route it applies and the errors it raises."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError


class TrafficError(RuntimeError):
    """The serving backend refused or could not apply a change; the message says which."""


class BackendUnreachable(TrafficError):
    """The serving backend did not answer within the retry budget: not a verdict on a model."""


KEEP: Any = object()
"""`set_traffic(staging=KEEP)`: leave the staging slot as it is."""


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


@dataclass(frozen=True)
class ServedModel:
    """A model as its router serves it: the route and each version's serving status
    ("loaded", "loading", "failed"...), for the Rollouts page and `status`."""

    route: Route
    versions: dict[str, str] = field(default_factory=dict)


class Backend(ABC):
    """What every router, deployer and metric source has: what it can do (`capabilities`),
    how it is built from an Airflow connection, and its settings from the policy
    (`serving.<role>_options`, checked when the policy loads: `options_model` is a pydantic
    model, or None for a backend without any)."""

    capabilities: ClassVar[frozenset[str]] = frozenset()
    options_model: ClassVar[type[BaseModel] | None] = None

    @classmethod
    @abstractmethod
    def from_connection(
        cls,
        conn_id: str | None = None,
        *,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Backend:
        """The backend configured by an Airflow connection (None: its default).

        :param timeout: the longest one call may take, retries included (None: what a task
            can afford; the Rollouts page passes a few seconds).
        :param options: the policy's `serving.<role>_options` (see `parse_options`).
        """

    @classmethod
    def offered(cls, options: Mapping[str, Any] | None = None) -> frozenset[str]:
        """What this backend can do configured with `options` (default: `capabilities`; a
        source whose metrics are named in its options offers only what they include)."""
        return frozenset(cls.capabilities)

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | None) -> BaseModel | None:
        """The validated options; ValueError naming the bad field and what was expected."""
        if cls.options_model is None:
            if options:
                raise ValueError(f"{cls.__name__} takes no options, got {sorted(options)}")
            return None
        try:
            return cls.options_model.model_validate(dict(options or {}))
        except ValidationError as e:
            fields = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or '(top level)'}: {err['msg']}"
                for err in e.errors()
            )
            raise ValueError(f"{cls.__name__} options: {fields}") from None
