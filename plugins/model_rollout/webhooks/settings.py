"""Where the receiver finds its webhook secret (never logged, never returned).

Order: env `MODEL_ROLLOUT_WEBHOOK_SECRET`, else the Airflow Variable
`model_rollout_webhook_secret` (so a secrets backend can hold it). During a rotation, env
`MODEL_ROLLOUT_WEBHOOK_PREVIOUS_SECRET` is accepted too. Variable lookups are cached for a few
seconds so a burst of deliveries does not become a burst of secrets-backend calls.
"""

from __future__ import annotations

import logging
import os
import threading
import time

SECRET_ENV = "MODEL_ROLLOUT_WEBHOOK_SECRET"
PREVIOUS_SECRET_ENV = "MODEL_ROLLOUT_WEBHOOK_PREVIOUS_SECRET"
SECRET_VARIABLE = "model_rollout_webhook_secret"
_CACHE_SECONDS = 30.0

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cached: tuple[float, str | None] = (0.0, None)


def _from_variable() -> str | None:
    global _cached
    now = time.monotonic()
    with _lock:
        at, value = _cached
        if at and now - at < _CACHE_SECONDS:
            return value
    try:
        from airflow.models.variable import Variable

        value = Variable.get(SECRET_VARIABLE, default_var=None)
    except Exception as e:  # DB or secrets backend unavailable: fail closed, say so once
        log.warning("cannot read Airflow Variable %s: %s", SECRET_VARIABLE, type(e).__name__)
        value = None
    with _lock:
        _cached = (now, value)
    return value


def webhook_secrets() -> list[str]:
    """The secrets a delivery may be signed with; empty when none is configured."""
    primary = os.environ.get(SECRET_ENV) or _from_variable()
    out = [s for s in (primary, os.environ.get(PREVIOUS_SECRET_ENV)) if s]
    return out


def clear_cache() -> None:
    """Forget the cached Variable (tests, or after rotating the secret)."""
    global _cached
    with _lock:
        _cached = (0.0, None)
