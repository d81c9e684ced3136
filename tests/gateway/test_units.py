"""Pure pieces of the gateway: scoring parse/combine/split, routing, statistics cells."""

from __future__ import annotations

import math
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_rollout.gateway.routing import Route, RouteError, sticky_point
from model_rollout.gateway.scoring import combine, parse_request, row_count, rows_of
from model_rollout.gateway.stats import MAX_LABELS, OTHER, ArmCell, PairCell, window_ranges
from model_rollout.histogram import quantile_from_counts

COLS = ["a", "b"]


def req(doc) -> object:
    return parse_request(orjson.dumps(doc), "application/json")


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"3",
        b"{}",
        b'{"inputs": 1, "instances": 2}',
        b'{"inputs": [1], "params": {"k": 1}}',
        b'{"dataframe_split": [1]}',
        b'{"dataframe_split": {"data": 1}}',
        b'{"dataframe_split": {"data": [[1]], "colums": []}}',
        b'{"dataframe_records": {"a": 1}}',
        b'{"instances": 5}',
        b'{"messages": [], "inputs": [1]}',
        b'{"inputs": [NaN]}',
    ],
)
def test_requests_mlflow_decides_about_are_never_batched(body):
    """parse_request refuses nothing (MLflow answers every request, malformed ones too); what it
    cannot prove mergeable gets no batch key and is answered alone."""
    r = parse_request(body, "application/json")
    assert r.batch_key is None and r.body == body


def test_only_plain_json_bodies_are_parsed_ahead():
    rows = {"dataframe_split": {"columns": COLS, "data": [[1, 2]]}}
    for ctype in ("text/csv", "application/json; format=pandas-split", "APPLICATION/JSON"):
        r = parse_request(orjson.dumps(rows), ctype)
        assert (r.fmt, r.batch_key, r.content_type) == (None, None, ctype)
    assert parse_request(orjson.dumps(rows), "application/json; charset=UTF-8").batch_key
    assert parse_request(orjson.dumps(rows), None).content_type == "application/json"


def test_batch_keys_only_join_requests_whose_rows_are_independent():
    a = req({"dataframe_split": {"columns": COLS, "data": [[1, 2]]}})
    b = req({"dataframe_split": {"columns": COLS, "data": [[3, 4], [5, 6]]}})
    c = req({"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2]]}})
    assert a.batch_key == b.batch_key != c.batch_key
    assert (a.n_rows, b.n_rows) == (1, 2)
    assert (
        req({"dataframe_split": {"columns": COLS, "data": [[1, 2]], "index": [7]}}).batch_key
        is None
    )
    assert req({"dataframe_records": [{"a": 1}, {"b": 2}]}).batch_key is None  # ragged records
    assert req({"dataframe_records": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}).batch_key is None
    assert req({"inputs": [[1, 2], [3]]}).batch_key is None
    assert req({"instances": {"a": [1]}}).batch_key is None
    assert req({"dataframe_split": {"columns": COLS, "data": []}}).batch_key is None


def test_value_types_tell_apart_what_pandas_would_infer_differently():
    def types(data):
        return req({"dataframe_split": {"columns": COLS, "data": data}}).value_types

    assert types([[1, 2.5]]) == types([[3, 4.0]]) == (int, float)
    assert types([[1.0, 2.5]]) != types([[1, 2.5]])  # 1 alone is int64, 1.0 float64
    assert types([[None, 2.5]]) != types([[1, 2.5]])  # null alone: a NaN or object column
    assert types([[1, 2.5], [1.5, 2.5]]) is None  # mixed within one request
    assert types([[2**63, 1]]) is None  # beyond int64: pandas infers uint64 or object
    assert types([[[1], 2]]) is None
    r = req({"dataframe_records": [{"b": "x", "a": True}]})
    assert r.value_types == (str, bool)
    assert req({"inputs": [[1, 2]]}).value_types is None


def test_combine_and_rows_round_trip():
    import numpy as np
    import pandas as pd

    reqs = [
        req({"inputs": {"a": [1, 2], "b": [3, 4]}}),
        req({"inputs": {"a": [5], "b": [6]}}),
    ]
    assert combine(reqs) == {"inputs": {"a": [1, 2, 5], "b": [3, 4, 6]}}
    reqs = [req({"dataframe_records": [{"a": i, "b": -i}]}) for i in range(3)]
    assert combine(reqs) == {"dataframe_records": [{"a": i, "b": -i} for i in range(3)]}
    assert rows_of(np.arange(3), 1, 3).tolist() == [1, 2] and row_count(np.arange(3)) == 3
    frame = pd.DataFrame({"x": [1, 2, 3]})
    assert rows_of(frame, 2, 3).to_dict(orient="records") == [{"x": 3}]
    assert row_count({"x": 1}) is None and rows_of({"x": 1}, 0, 1) is None
    assert row_count(np.float64(1.0)) is None


@given(
    st.lists(
        st.lists(st.lists(st.integers(-5, 5), min_size=2, max_size=2), min_size=1, max_size=4),
        min_size=1,
        max_size=6,
    )
)
@settings(max_examples=60, deadline=None)
def test_combined_split_payload_gives_each_request_its_own_rows(groups):
    reqs = [req({"dataframe_split": {"columns": COLS, "data": rows}}) for rows in groups]
    combined = combine(reqs)["dataframe_split"]
    assert combined["columns"] == COLS
    fake_predictions = [sum(r) for r in combined["data"]]  # any row-wise function
    parts, pos = [], 0
    for r in reqs:
        parts.append(rows_of(fake_predictions, pos, pos + r.n_rows))
        pos += r.n_rows
    assert parts == [[sum(r) for r in rows] for rows in groups]


def test_route_validation_names_the_field():
    with pytest.raises(RouteError, match="sum to 100"):
        Route.build("m", 1, {"1": 50, "2": 40})
    with pytest.raises(RouteError, match="must be >= 0"):
        Route.build("m", 1, {"1": 110, "2": -10})
    with pytest.raises(RouteError, match="must be a number"):
        Route.build("m", 1, {"1": "100"})
    with pytest.raises(RouteError, match="cannot be a shadow"):
        Route.build("m", 1, {"1": 100}, ["1"])
    with pytest.raises(RouteError, match="'shadows' must be a list"):
        Route.build("m", 1, {"1": 100}, "2")
    r = Route.build("m", 3, {"2": 0, "1": 99.5, "3": 0.5}, ["4", "4"], 5)
    assert r.live == ["1", "3"] and r.shadows == ("4",) and r.staging == "5"
    assert r.referenced() == {"1", "3", "4", "5"}
    assert Route.build("m", 1, {}).pick(None) is None


def test_unkeyed_split_follows_the_weights():
    r = Route.build("m", 1, {"1": 90, "2": 10})
    n = 20_000
    k = Counter(r.pick(None) for _ in range(n))["2"]
    assert abs(k - n * 0.1) < 4.5 * math.sqrt(n * 0.1 * 0.9)


@given(st.text(min_size=1, max_size=30), st.integers(1, 99))
@settings(max_examples=200, deadline=None)
def test_sticky_keys_stay_put_and_growing_weight_keeps_its_keys(key, w):
    r = Route.build("m", 1, {"1": 100 - w, "2": w})
    v = r.pick(key)
    assert v == r.pick(key) == Route.build("m", 2, {"1": 100 - w, "2": w}, ["3"]).pick(key)
    if v == "2" and w < 99:
        assert Route.build("m", 2, {"1": 99 - w, "2": w + 1}).pick(key) == "2"
    assert 0 <= sticky_point("m", key) < 100


def test_window_ranges_cover_the_window_exactly():
    for since in (0, 59, 60, 3599, 3600, 3601, 1_764_300_017, 1_764_303_600):
        now = since + 10_000
        covered = []
        for level, lo, hi in window_ranges(since, now):
            start = lo
            while start < min(hi, now + 1):
                assert start % level == 0
                covered.append((start, start + level))
                start += level
        covered.sort()
        assert covered[0][0] == since
        for (_, end), (nxt, _) in zip(covered, covered[1:], strict=False):
            assert end == nxt
        assert covered[-1][1] > now


def test_cells_merge_by_addition_and_quantiles_are_fine():
    a, b = ArmCell(), ArmCell()
    for i in range(1000):
        (a if i % 2 else b).add_request(200, 1.0 + i / 10, [i % 3])
    a.add_request(500, 0.0, None)
    b.add_request(400, 0.0, None)
    a.merge(b)
    assert (a.requests, a.errors, a.rejected) == (1002, 1, 1)
    assert sum(a.latency.values()) == 1000
    p99 = quantile_from_counts(a.latency, 0.99)
    assert abs(p99 - (1.0 + 990 / 10)) / (1.0 + 990 / 10) < 0.02
    assert a.outputs() == {"kind": "categorical", "counts": {"0": 334, "1": 333, "2": 333}}


def test_output_labels_are_capped():
    c = ArmCell()
    c.add_request(200, 1.0, [f"label-{i}" for i in range(MAX_LABELS + 50)])
    assert len(c.out_cat) == MAX_LABELS + 1 and c.out_cat[OTHER] == 50
    c2 = ArmCell()
    c2.add_request(200, 1.0, [0.5, 1.5, -2.0])
    assert c2.outputs()["kind"] == "numeric" and sum(c2.outputs()["counts"].values()) == 3


def test_pairs_count_agreement_and_deltas():
    p = PairCell()
    p.add_rows([1, 2, "x", 0.5, True], [1, 3, "x", 0.25, 1])
    assert (p.pairs, p.agree) == (5, 2)
    assert p.abs_delta_sum == pytest.approx(1 + 0.25 + 1)
