"""A model's route: weights over versions, shadows, a staging slot, and its generation.

Routes are immutable values swapped by reference, so a request that picked a route keeps a
consistent view while an admin call installs the next one: changing weights under load loses
no request. Sticky routing hashes `X-Routing-Key` (salted by model name) to a point in
[0, 100) and walks the versions in a fixed order (version number), so a key keeps its version
while the weights stand, and when a candidate's weight grows the keys it already had stay.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

from model_rollout.gateway.stats import version_sort_key


class RouteError(ValueError):
    """A route that cannot be installed; the message names the field."""


@dataclass(frozen=True)
class Route:
    model: str
    generation: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    shadows: tuple[str, ...] = ()
    staging: str | None = None
    _table: tuple[tuple[float, str], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(
        cls,
        model: str,
        generation: int,
        weights: dict,
        shadows: list | tuple = (),
        staging: str | None = None,
    ) -> Route:
        """Validate and precompute the cumulative table; raise RouteError naming the problem."""
        if not isinstance(weights, dict):
            raise RouteError(f"'weights' must be an object of version -> percent; got {weights!r}")
        clean: dict[str, float] = {}
        for v, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise RouteError(f"weight of version {v!r} must be a number; got {w!r}")
            if w < 0:
                raise RouteError(f"weight of version {v!r} must be >= 0; got {w}")
            clean[str(v)] = int(w) if float(w).is_integer() else float(w)
        total = sum(clean.values())
        if clean and abs(total - 100) > 1e-6:
            raise RouteError(f"'weights' must sum to 100; they sum to {total:g}")
        if not isinstance(shadows, (list, tuple)) or not all(
            isinstance(s, (str, int)) and not isinstance(s, bool) for s in shadows
        ):
            raise RouteError(f"'shadows' must be a list of versions; got {shadows!r}")
        shadow_t = tuple(dict.fromkeys(str(s) for s in shadows))
        for s in shadow_t:
            if clean.get(s, 0) > 0:
                raise RouteError(
                    f"version {s!r} cannot be a shadow while it has live weight {clean[s]:g}"
                )
        if staging is not None:
            if isinstance(staging, bool) or not isinstance(staging, (str, int)):
                raise RouteError(f"'staging' must be a version or null; got {staging!r}")
            staging = str(staging)
        table = []
        acc = 0.0
        for v in sorted(clean, key=version_sort_key):
            if clean[v] > 0:
                acc += clean[v]
                table.append((acc, v))
        return cls(model, int(generation), clean, shadow_t, staging, tuple(table))

    @property
    def live(self) -> list[str]:
        """Versions with weight > 0."""
        return [v for _, v in self._table]

    def referenced(self) -> set[str]:
        """Every version this route needs loaded (live, shadows, staging)."""
        out = set(self.live) | set(self.shadows)
        if self.staging:
            out.add(self.staging)
        return out

    def pick(self, routing_key: str | None) -> str | None:
        """The version that answers: sticky by key, else weighted random; None if no route."""
        table = self._table
        if not table:
            return None
        if len(table) == 1:
            return table[0][1]
        if routing_key is None:
            point = random.random() * 100.0
        else:
            point = sticky_point(self.model, routing_key)
        for edge, v in table:
            if point < edge:
                return v
        return table[-1][1]

    def to_dict(self) -> dict:
        return {
            "generation": self.generation,
            "weights": dict(self.weights),
            "shadows": list(self.shadows),
            "staging": self.staging,
        }


def sticky_point(model: str, key: str) -> float:
    """Stable point in [0, 100) for a routing key of a model."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 * 100.0
