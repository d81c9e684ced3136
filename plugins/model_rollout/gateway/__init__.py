"""The serving gateway: the data plane of model_rollout.

An ASGI service hosting many registered models, several versions each, with weighted sticky
routing, shadow mirroring off the request path, a request log, feedback, streaming statistics
and a token-guarded admin API. `create_app(settings)` builds it; `model-gateway` runs it.
"""

from model_rollout.gateway.app import create_app
from model_rollout.gateway.config import Settings

__all__ = ["Settings", "create_app"]
