"""The metric source interface: per-(version, arm) statistics the judge reads.

After Kayenta's `MetricsService` and Flagger's metric providers, with one difference the
judge needs: counts are cumulative over a time range (the e-processes add evidence, they do
not average rates), so a source answers "what happened between `since` and `until`".
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from typing import Any

from model_rollout.backends.base import Backend


class MetricSource(Backend):
    """Reads statistics snapshots; implementations register under the entry point group
    `model_rollout.metric_sources`."""

    @abstractmethod
    def snapshot(self, model: str, since: float, until: float | None = None) -> dict[str, Any]:
        """Per-(version, arm) statistics from a unix time to now or to `until`
        (docs/architecture.md has the format)."""

    async def asnapshot(
        self, model: str, since: float, until: float | None = None
    ) -> dict[str, Any]:
        """`snapshot` for the triggerer's event loop; override with real async I/O (the
        default runs the blocking call in a thread so the loop never waits on it)."""
        return await asyncio.to_thread(self.snapshot, model, since, until)
