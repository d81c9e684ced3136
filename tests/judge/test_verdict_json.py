"""A verdict survives the stores it travels through: PostgreSQL jsonb, then Airflow's msgpack.

Trigger events and XComs of the rollout monitors are kept in the metadata DB; on PostgreSQL
that is jsonb, which returns integral floats as integers, and the resumed task receives them
over Airflow's msgpack channel, which refuses integers beyond 64 bits.
"""

from __future__ import annotations

import json
import math

import msgspec
import pytest
from support.pg import require_postgres

from model_rollout.judge.verdict import json_safe

pytestmark = pytest.mark.postgres

VERDICT_LIKE = {
    "interval": [0.0, math.inf],
    "lower": -math.inf,
    "nan": math.nan,
    "big_int": 10**30,
    "big_float": 3.5e250,
    "small": 0.0123,
    "nested": [{"x": (1, 2.5e40)}],
}


def test_json_safe_values_round_trip_postgres_jsonb_and_msgpack():
    import psycopg
    from psycopg.types.json import Jsonb

    safe = json_safe(VERDICT_LIKE)
    json.dumps(safe, allow_nan=False)  # strict JSON
    with psycopg.connect(require_postgres()) as conn:
        (back,) = conn.execute("SELECT %s::jsonb", (Jsonb(safe),)).fetchone()
    msgspec.msgpack.encode(back)  # what failed: ints beyond 64 bits
    assert back["interval"][0] == 0.0 and back["interval"][1] >= 1e18
    assert back["lower"] <= -1e18 and back["nan"] is None
    assert back["small"] == pytest.approx(0.0123)
    assert back["big_int"] == 10**18 and back["nested"][0]["x"][0] == 1


def test_unclipped_infinity_would_not_survive():
    """The regression itself: 1e300 comes back from jsonb as an int msgpack cannot encode."""
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(require_postgres()) as conn:
        (back,) = conn.execute("SELECT %s::jsonb", (Jsonb({"v": 1e300}),)).fetchone()
    assert isinstance(back["v"], int)
    with pytest.raises(OverflowError):
        msgspec.msgpack.encode(back)
