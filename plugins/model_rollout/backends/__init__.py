"""The data plane, pluggable: traffic routers, deployers and metric sources.

The rollout DAG, its monitor and the Rollouts page talk only to these three interfaces; a
policy names the implementation of each (`serving: {router, deployer, metrics}`), found by
entry point (`catalog`). The embedded gateway implements all three; so does the in-memory
stack the contract tests run against. docs/backends.md says how to add one.
"""

from model_rollout.backends.base import (
    KEEP,
    BackendUnreachable,
    Route,
    ServedModel,
    TrafficError,
)
from model_rollout.backends.deployer import Deployer
from model_rollout.backends.metric_source import MetricSource
from model_rollout.backends.router import TrafficRouter

__all__ = [
    "KEEP",
    "BackendUnreachable",
    "Deployer",
    "MetricSource",
    "Route",
    "ServedModel",
    "TrafficError",
    "TrafficRouter",
]
