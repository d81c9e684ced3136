"""The metric source interface: per-(version, arm) statistics the judge reads.

After Kayenta's `MetricsService` and Flagger's metric providers, with one difference the
judge needs: counts are cumulative over a time range (the e-processes add evidence, they do
not average rates), so a source answers "what happened between `since` and `until`".
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from model_rollout.backends.base import Configurable


class MetricSource(Configurable, ABC):
    """Reads statistics snapshots; implementations register under the entry point group
    `model_rollout.metric_sources`."""

    capabilities: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abstractmethod
    def from_connection(
        cls,
        conn_id: str | None = None,
        *,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> MetricSource:
        """The source configured by an Airflow connection (None: its default).

        :param timeout: the longest one call may take, retries included (None: what a task
            can afford; the Rollouts page passes a few seconds).
        :param options: the policy's `serving.<role>_options` (see `parse_options`).
        """

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
