"""MLflow's scoring protocol on the wire, answered exactly as `mlflow models serve` answers it.

A request alone is answered by MLflow's own `scoring_server.invocations` (content types, CSV,
parquet, JSON formats, params, tolerated extra fields, status and error codes), so its answer
is byte-identical to mlflow's by construction. The gateway only watches that call through
`_Probe` (what the model was given, what it returned or raised) to tell a model's failure
from a bad request for the statistics, without changing the answer.

On the event loop a JSON body is parsed ahead (cheap, orjson) only to count its rows and to
derive its *batch key*: requests with equal keys can be concatenated into one payload. Nothing
is refused there; every decision about a request's validity is MLflow's, in the worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import StringIO
from typing import Any

import orjson

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON = "application/json"
# Bodies larger than this are not parsed on the event loop: they are answered alone (MLflow
# parses them in the worker thread) and count as one row toward the overload bound.
PARSE_AHEAD_BYTES = 1 << 20
_LLM_KEYS = ("messages", "prompt", "input")  # MLflow's unified LLM input: not batched
_INT64 = 1 << 63


def error_body(message: str, error_code: str = "BAD_REQUEST") -> bytes:
    """An error answer shaped like MLflow's (`error_code`, `message`)."""
    return orjson.dumps({"error_code": error_code, "message": message})


@dataclass(slots=True)
class ScoringRequest:
    """One scoring request as received, plus what the event loop learned about it.

    :param body: the raw bytes (what MLflow's parser and upstream versions get).
    :param content_type: the Content-Type header (application/json when absent).
    :param fmt: the format field of a JSON body parsed ahead, else None.
    :param data: the value under that field.
    :param n_rows: rows when known ahead, else 1.
    :param batch_key: requests with equal non-None keys can be concatenated (what batching
        `on` groups by).
    :param value_types: per column, the JSON type of every value (one type per column in every
        row), for `dataframe_split`/`dataframe_records` bodies; None otherwise. Batching `auto`
        only concatenates requests whose keys *and* value types are equal, so the merged frame
        gets, column by column, the dtype each request would get alone.
    """

    body: bytes
    content_type: str
    fmt: str | None = None
    data: Any = None
    n_rows: int = 1
    batch_key: tuple | None = None
    value_types: tuple | None = None

    def payload(self) -> dict:
        """The request as MLflow's parser expects it (format field only)."""
        return {self.fmt: self.data}


def _plain_json(content_type: str) -> bool:
    """Whether MLflow reads this content type as plain JSON (charset utf-8 at most)."""
    mime, *rest = (p.strip() for p in content_type.split(";"))
    if mime != JSON:
        return False
    for pair in rest:
        key, _, value = pair.partition("=")
        if key != "charset" or value.lower() != "utf-8":
            return False
    return True


def parse_request(body: bytes, content_type: str | None = None) -> ScoringRequest:
    """Learn what can be learned cheaply about a request; never refuses one."""
    req = ScoringRequest(body, content_type or JSON)
    if len(body) > PARSE_AHEAD_BYTES or not _plain_json(req.content_type):
        return req
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return req  # MLflow's own parser decides (it also reads NaN, Infinity, big integers)
    if not isinstance(doc, dict) or any(k in doc for k in _LLM_KEYS):
        return req
    present = [k for k in FORMATS if k in doc]
    if len(present) != 1:
        return req
    req.fmt = fmt = present[0]
    req.data = data = doc[fmt]
    n_rows, key = _shape(fmt, data)
    req.n_rows = max(1, n_rows or 0)
    if key is not None and "params" not in doc:
        req.batch_key = key
        req.value_types = _value_types(fmt, data)
    return req


def _shape(fmt: str, data: Any) -> tuple[int | None, tuple | None]:
    """(rows, batch key) of a format's value; (None, None) when it cannot be told."""
    if fmt == "dataframe_split":
        if not isinstance(data, dict) or set(data) - {"columns", "data"}:
            return None, None  # an index, other fields or no object: answered alone
        rows = data.get("data")
        if not isinstance(rows, list):
            return None, None
        if not rows or not all(isinstance(r, list) for r in rows):
            return len(rows), None
        width = len(rows[0])
        columns = data.get("columns")
        if any(len(r) != width for r in rows) or not (
            columns is None
            or (isinstance(columns, list) and all(isinstance(c, str) for c in columns))
        ):
            return len(rows), None
        return len(rows), ("split", tuple(columns) if columns is not None else None, width)
    if fmt == "dataframe_records":
        if not isinstance(data, list):
            return None, None
        return len(data), _records_key("records", data)
    if fmt == "instances":
        if not isinstance(data, list):
            return None, None
        return len(data), _list_key("instances", data)
    # inputs: anything JSON; lists and objects of equal-length lists batch
    if isinstance(data, list):
        return len(data), _list_key("inputs", data)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) == 1:
            n = lengths.pop()
            if n and all(not isinstance(v[0], (list, dict)) or _uniform(v) for v in data.values()):
                return n, ("inputs-cols", tuple(data))
            return n, None
    return None, None


def _uniform(values: list) -> bool:
    first = values[0]
    if isinstance(first, list):
        return all(isinstance(v, list) and len(v) == len(first) for v in values)
    return False


def _records_key(tag: str, data: list) -> tuple | None:
    if not data or not all(isinstance(r, dict) for r in data):
        return None
    keys = tuple(data[0])
    if any(tuple(r) != keys for r in data[1:]):
        return None
    return (tag + "-records", keys)


def _list_key(tag: str, data: list) -> tuple | None:
    if not data:
        return None
    first = data[0]
    if isinstance(first, dict):
        return _records_key(tag, data)
    if isinstance(first, list):
        width = len(first)
        if all(isinstance(r, list) and len(r) == width for r in data) and all(
            not isinstance(x, (list, dict)) for x in first
        ):
            return (tag + "-rows", width)
        return None
    if all(not isinstance(x, (list, dict)) for x in data):
        return (tag + "-scalars",)
    return None


def _value_types(fmt: str, data: Any) -> tuple | None:
    """Per column, the one JSON type all its values have (None when a column mixes types, holds
    lists or objects, or an integer outside int64: pandas would then infer per batch)."""
    if fmt == "dataframe_split":
        rows = data["data"]
    elif fmt == "dataframe_records":
        keys = tuple(data[0])
        rows = [[r[k] for k in keys] for r in data]
    else:
        return None
    types = tuple(type(v) for v in rows[0])
    for row in rows:
        for v, t in zip(row, types, strict=True):
            if type(v) is not t or t is list or t is dict:
                return None
            if t is int and not -_INT64 <= v < _INT64:
                return None
    return types


def combine(requests: list[ScoringRequest]) -> dict:
    """One payload holding the rows of several requests with the same batch key."""
    first = requests[0]
    fmt = first.fmt
    if len(requests) == 1:
        return first.payload()
    if fmt == "dataframe_split":
        rows: list = []
        for r in requests:
            rows.extend(r.data["data"])
        out = {"data": rows}
        if "columns" in first.data:
            out["columns"] = first.data["columns"]
        return {fmt: out}
    if isinstance(first.data, dict):  # inputs as columns
        merged: dict[str, list] = {k: [] for k in first.data}
        for r in requests:
            for k, v in r.data.items():
                merged[k].extend(v)
        return {fmt: merged}
    rows = []
    for r in requests:
        rows.extend(r.data)
    return {fmt: rows}


# -- answering -------------------------------------------------------------------------------

_UNSET = object()


class _Probe:
    """Stands in for the pyfunc model inside MLflow's `invocations`: passes every call through
    and remembers what the model was given and what it returned or raised. `invocations` uses
    only `metadata` and `predict(data, params=...)`."""

    def __init__(self, model: Any):
        self._model = model
        self.metadata = model.metadata
        self.data: Any = _UNSET
        self.raw: Any = _UNSET
        self.raised: BaseException | None = None

    def predict(self, data, params=None):
        self.data = data
        try:
            self.raw = self._model.predict(data, params=params)
        except BaseException as exc:
            self.raised = exc
            raise
        return self.raw


@dataclass(slots=True)
class Outcome:
    """What answering a request alone gave.

    :param status: HTTP status, as `mlflow models serve` would answer.
    :param body: the response body (JSON, as mlflow's).
    :param predictions: the JSON-able predictions (200 only).
    :param stage: where a failure arose: "parse" (the request), "predict" (the model or its
        schema enforcement) or "serialize" (the model's output); None on success.
    :param error: what failed, for the log and for telling whose fault it was: the exception
        the model (or the signature's enforcement) raised at the "predict" stage, else the
        one MLflow's scoring function raised.
    :param model_input: what the model was given (set once parsing succeeded).
    """

    status: int
    body: bytes
    predictions: Any = None
    stage: str | None = None
    error: BaseException | None = None
    model_input: Any = None


def answer_alone(model: Any, schema: Any, req: ScoringRequest) -> Outcome:
    """Answer one request with MLflow's own scoring function."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations
    from mlflow.utils.proto_json_utils import _get_jsonable_obj

    probe = _Probe(model)
    try:
        resp = invocations(req.body, req.content_type, probe, schema)
    except Exception as exc:  # noqa: BLE001 - mlflow answers these as error responses too
        stage = (
            "parse"
            if probe.data is _UNSET
            else ("predict" if probe.raised is not None else "serialize")
        )
        given = None if probe.data is _UNSET else probe.data
        cause = probe.raised if stage == "predict" else exc  # what the model itself raised
        if isinstance(exc, MlflowException):
            return Outcome(
                exc.get_http_status_code(),
                exc.serialize_as_json().encode(),
                None,
                stage,
                cause,
                given,
            )
        # mlflow's server would answer a bare 500 "Internal Server Error": a request that its
        # parser cannot digest (e.g. JSON nested too deep) is the client's, so 400 here.
        status, code = (400, "BAD_REQUEST") if stage == "parse" else (500, "INTERNAL_ERROR")
        message = f"{type(exc).__name__}: {exc}"
        return Outcome(status, error_body(message, code), None, stage, cause, given)
    body = resp.response.encode() if isinstance(resp.response, str) else resp.response
    if resp.status != 200:  # 415: content types mlflow does not read (a plain-text answer)
        return Outcome(
            resp.status, error_body(resp.response, "UNSUPPORTED_MEDIA_TYPE"), None, "parse"
        )
    return Outcome(200, body, _get_jsonable_obj(probe.raw, pandas_orient="records"))


def rows_of(raw: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of a batch's raw predictions, in the raw type (None when the output
    is not a row sequence), so that they serialise as that request's own predictions would."""
    import numpy as np
    import pandas as pd

    if isinstance(raw, np.ndarray) and raw.ndim >= 1:
        return raw[start:stop]
    if isinstance(raw, (pd.DataFrame, pd.Series)):
        return raw.iloc[start:stop]
    if isinstance(raw, list):
        return raw[start:stop]
    return None


def row_count(raw: Any) -> int | None:
    """How many rows a batch's raw predictions hold (None when not a row sequence)."""
    import numpy as np
    import pandas as pd

    if isinstance(raw, np.ndarray):
        return raw.shape[0] if raw.ndim >= 1 else None
    if isinstance(raw, (pd.DataFrame, pd.Series, list)):
        return len(raw)
    return None


def predictions_json(raw: Any) -> tuple[bytes, Any]:
    """(body, JSON-able predictions) exactly as mlflow's `predictions_to_json` writes them."""
    from mlflow.pyfunc.scoring_server import predictions_to_json
    from mlflow.utils.proto_json_utils import _get_jsonable_obj

    out = StringIO()
    predictions_to_json(raw, out)
    return out.getvalue().encode(), _get_jsonable_obj(raw, pandas_orient="records")


def upstream_predictions(body: bytes) -> Any:
    """The predictions in an upstream server's 200 answer (mlflow may write NaN, which orjson
    refuses); raises ValueError when there are none."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = json.loads(body)
    if not isinstance(doc, dict) or "predictions" not in doc:
        raise ValueError("no 'predictions' field")
    return doc["predictions"]


def prediction_rows(predictions: Any) -> list:
    """Per-row prediction values for statistics: a list stays a list, anything else is one row."""
    if isinstance(predictions, list):
        return predictions
    return [predictions]
