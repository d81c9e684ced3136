"""The deployer interface: puts versions on a serving stack and takes them off.

Separate from routing because the two are often different systems (KServe's
InferenceService vs Istio's VirtualService, MLServer's repository vs nginx's upstreams).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from model_rollout.backends.base import Backend


class Deployer(Backend):
    """Deploys and retires versions; implementations register under the entry point group
    `model_rollout.deployers`."""

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

        :param uri: where the model is (default `models:/<model>/<version>`).
        :param upstream: a URL already serving the version (needs the `upstream` capability).
        :param batching: the policy's `batching` (auto | off | on); a deployer that has no
            such setting ignores it.
        """

    @abstractmethod
    def retire(self, model: str, version: str) -> None:
        """Stop serving a version that no longer has traffic (idempotent)."""

    @abstractmethod
    def invoke_staging(self, model: str, payload: dict[str, Any]) -> tuple[Any, float]:
        """Score a payload on the staging version only: (predictions, latency in ms)."""
