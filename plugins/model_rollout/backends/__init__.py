"""Traffic-control backends: one small interface, one module per serving system.

The rollout DAG talks only to `TrafficBackend`; the embedded gateway is the default, and a
KServe / SageMaker / Seldon backend is one more module implementing the same six methods.
"""

from model_rollout.backends.base import BackendUnreachable, Route, TrafficBackend, TrafficError

__all__ = ["BackendUnreachable", "Route", "TrafficBackend", "TrafficError"]
