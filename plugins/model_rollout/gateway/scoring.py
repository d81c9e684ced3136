"""MLflow's scoring protocol on the wire: parse requests, serialise predictions.

The request body is checked here, on the event loop, cheaply and structurally, so that a
malformed request gets a 400 naming what was wrong before it ever reaches a model. The heavy
part (building the DataFrame, schema enforcement) is left to MLflow's own parser, run in the
model's worker thread over a whole coalesced batch, so answers match `mlflow models serve`.

Requests whose structure makes their rows independent (same format, same columns, no
`params`, no `index`) share a *batch key*: their payloads can be concatenated into one
payload, parsed and predicted once, and the predictions split back by row counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_FORMAT_LIST = ", ".join(FORMATS)


class ScoringError(Exception):
    """A request the gateway refuses (4xx); the message names what was wrong."""

    def __init__(self, message: str, status: int = 400, error_code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code


@dataclass(slots=True)
class ScoringRequest:
    """One parsed scoring request.

    :param body: the raw bytes (forwarded verbatim to upstream versions).
    :param fmt: which of FORMATS the body used.
    :param data: the value under that field.
    :param params: the optional `params` object.
    :param n_rows: rows in this request when known (needed to split a batch).
    :param batch_key: requests with equal non-None keys can be concatenated.
    """

    body: bytes
    fmt: str
    data: Any
    params: dict | None
    n_rows: int | None
    batch_key: tuple | None

    def payload(self) -> dict:
        """The request as MLflow's parser expects it (format field only)."""
        return {self.fmt: self.data}


def error_body(message: str, error_code: str = "BAD_REQUEST") -> bytes:
    """An error answer shaped like MLflow's (`error_code`, `message`)."""
    return orjson.dumps({"error_code": error_code, "message": message})


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def parse_request(body: bytes, content_type: str | None = None) -> ScoringRequest:
    """Check a scoring request's structure and derive its batch key; raise ScoringError."""
    if content_type:
        mime = content_type.split(";", 1)[0].strip().lower()
        if mime and mime != "application/json":
            raise ScoringError(
                f"content type {mime!r} is not supported; send application/json "
                f"with one of the fields {_FORMAT_LIST}",
                status=415,
                error_code="UNSUPPORTED_MEDIA_TYPE",
            )
    if not body:
        raise ScoringError(
            f"request body is empty; expected a JSON object with one of {_FORMAT_LIST}"
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ScoringError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ScoringError(
            f"request body must be a JSON object with exactly one of the fields {_FORMAT_LIST}; "
            f"got {_type_name(doc)}"
        )
    present = [k for k in FORMATS if k in doc]
    if len(present) != 1:
        raise ScoringError(
            f"request body must have exactly one of the fields {_FORMAT_LIST}; "
            f"got fields {sorted(doc)}"
        )
    fmt = present[0]
    extra = set(doc) - {fmt, "params"}
    if extra:
        raise ScoringError(
            f"unexpected fields {sorted(extra)} beside {fmt!r}; only 'params' may accompany it"
        )
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise ScoringError(f"'params' must be an object; got {_type_name(params)}")
    data = doc[fmt]
    n_rows, key = _shape(fmt, data)
    if params and key is not None:
        key = (*key, orjson.dumps(params, option=orjson.OPT_SORT_KEYS))
    return ScoringRequest(body, fmt, data, params or None, n_rows, key)


def _shape(fmt: str, data: Any) -> tuple[int | None, tuple | None]:
    """Validate the format's value; return (rows, batch key)."""
    if fmt == "dataframe_split":
        if not isinstance(data, dict):
            raise ScoringError(
                f"'dataframe_split' must be an object with 'columns' and 'data'; got {_type_name(data)}"
            )
        extra = set(data) - {"columns", "data", "index"}
        if "data" not in data or extra:
            raise ScoringError(
                "'dataframe_split' must have a 'data' field and optionally 'columns' and 'index'; "
                f"got fields {sorted(data)}"
            )
        rows = data["data"]
        if not isinstance(rows, list):
            raise ScoringError(
                f"'dataframe_split.data' must be a list of rows; got {_type_name(rows)}"
            )
        columns = data.get("columns")
        if columns is not None and not isinstance(columns, list):
            raise ScoringError(
                f"'dataframe_split.columns' must be a list of names; got {_type_name(columns)}"
            )
        if not rows or "index" in data or not all(isinstance(r, list) for r in rows):
            return len(rows), None
        width = len(rows[0])
        if any(len(r) != width for r in rows):
            return len(rows), None
        cols = tuple(columns) if columns is not None else None
        if cols is not None and not all(isinstance(c, str) for c in cols):
            return len(rows), None
        return len(rows), ("split", cols, width)
    if fmt == "dataframe_records":
        if not isinstance(data, list):
            raise ScoringError(
                f"'dataframe_records' must be a list of records (objects); got {_type_name(data)}"
            )
        return len(data), _records_key("records", data)
    if fmt == "instances":
        if not isinstance(data, (list, dict)):
            raise ScoringError(
                f"'instances' must be a list of instances (or an object of columns); "
                f"got {_type_name(data)}"
            )
        if isinstance(data, dict):
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
    ks = set(keys)
    if any(set(r) != ks for r in data[1:]):
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


def to_jsonable(raw: Any) -> Any:
    """Predictions as plain JSON-able data, exactly as `mlflow models serve` converts them."""
    import numpy as np
    import pandas as pd

    if isinstance(raw, np.ndarray):
        return raw.tolist()
    if isinstance(raw, pd.DataFrame):
        return raw.to_dict(orient="records")
    if isinstance(raw, pd.Series):
        return pd.DataFrame(raw).to_dict(orient="records")
    return raw


_ENCODER = None


def predictions_body(predictions: Any) -> bytes:
    """`{"predictions": ...}` serialised with MLflow's NumpyEncoder, as its server does."""
    global _ENCODER
    if _ENCODER is None:
        from mlflow.utils.proto_json_utils import NumpyEncoder

        _ENCODER = NumpyEncoder
    return json.dumps({"predictions": predictions}, cls=_ENCODER).encode()


def split_predictions(jsonable: Any, counts: list[int]) -> list[Any] | None:
    """Split batch predictions by request row counts; None when they cannot be split."""
    total = sum(counts)
    if not isinstance(jsonable, list) or len(jsonable) != total:
        return None
    out = []
    pos = 0
    for n in counts:
        out.append(jsonable[pos : pos + n])
        pos += n
    return out


def prediction_rows(predictions: Any) -> list:
    """Per-row prediction values for statistics: a list stays a list, anything else is one row."""
    if isinstance(predictions, list):
        return predictions
    return [predictions]
