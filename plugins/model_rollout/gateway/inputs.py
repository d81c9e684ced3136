"""Whose fault is it when a model raises: the request's input, or the version?

mlflow answers both with 400; the statistics must not. The judge counts a version's errors to
decide a rollout, so a model that fails on input breaking the contract it was logged with
(no rows, a null where the signature requires a value, an infinite number) must not count
against it, and a model that fails on valid input must.
"""

from __future__ import annotations

from typing import Any


def input_fault(data: Any, schema: Any) -> str | None:
    """Why the input the model raised on was invalid, or None when it was valid.

    :param data: what the model was given (MLflow's parsed input, before schema enforcement).
    :param schema: the model's input schema, or None.
    """
    import numpy as np
    import pandas as pd

    rows = _rows(data)
    if rows == 0:
        return "the request has no rows"
    if isinstance(data, pd.DataFrame) and schema is not None and schema.has_input_names():
        return _named_columns_fault(data, schema)
    if isinstance(data, pd.DataFrame):
        return _values_fault({str(c): data[c].to_numpy() for c in data.columns})
    if isinstance(data, np.ndarray):
        return _values_fault({"": data})
    if isinstance(data, dict) and all(isinstance(v, np.ndarray) for v in data.values()):
        arrays = {str(k): v for k, v in data.items()}
        return _shape_fault(arrays, schema) or _values_fault(arrays)
    return None


def _rows(data: Any) -> int | None:
    import numpy as np
    import pandas as pd

    if isinstance(data, (pd.DataFrame, list)):
        return len(data)
    if isinstance(data, np.ndarray):
        return data.shape[0] if data.ndim else None
    if isinstance(data, dict) and data and all(isinstance(v, np.ndarray) for v in data.values()):
        lengths = {v.shape[0] if v.ndim else None for v in data.values()}
        return lengths.pop() if len(lengths) == 1 else None  # columns of one length: rows
    return None


def _named_columns_fault(frame: Any, schema: Any) -> str | None:
    """A null in a required column, or an infinite number in a float column."""
    import numpy as np
    import pandas as pd
    from mlflow.models.utils import _enforce_schema
    from mlflow.types import DataType

    enforced = _enforce_schema(frame, schema)
    if not isinstance(enforced, pd.DataFrame):
        return None
    for c in schema.inputs:
        if not isinstance(c.type, DataType) or c.name not in enforced.columns:
            continue
        col = enforced[c.name]
        if c.required and (rows := np.flatnonzero(col.isna().to_numpy())).size:
            return (
                f"column {c.name!r} is required by the model signature, "
                f"but row {int(rows[0])} has no value (null or missing)"
            )
        if (
            pd.api.types.is_float_dtype(col.dtype)
            and (rows := np.flatnonzero(np.isinf(col.to_numpy()))).size
        ):
            return f"column {c.name!r} is infinite in row {int(rows[0])}"
    return None


def _shape_fault(arrays: dict[str, Any], schema: Any) -> str | None:
    """A column the signature types as one scalar per row whose rows hold arrays instead
    (`{"inputs": {"x": [[]]}}`: MLflow's enforcement turns the empty ones into NaN)."""
    from mlflow.types import DataType

    if schema is None or not schema.has_input_names():
        return None
    scalar = {c.name: c.type for c in schema.inputs if isinstance(c.type, DataType)}
    for name, values in arrays.items():
        if name in scalar and values.ndim != 1:
            return (
                f"column {name!r} takes one {scalar[name].name} per row, but its rows hold "
                f"arrays of shape {tuple(values.shape[1:])}"
            )
    return None


def _values_fault(arrays: dict[str, Any]) -> str | None:
    """The first null/NaN or infinite value of numeric or object arrays (no named columns in
    the signature: every value is taken as required)."""
    import numpy as np
    import pandas as pd

    for name, values in arrays.items():
        where = f" of {name!r}" if name else ""
        if values.dtype.kind == "f":
            if (bad := np.argwhere(np.isnan(values))).size:
                return f"value{where} at {_at(bad[0])} is null or NaN"
            if (bad := np.argwhere(np.isinf(values))).size:
                return f"value{where} at {_at(bad[0])} is infinite"
        elif values.dtype.kind == "O" and values.ndim == 1:
            missing = pd.isna(values)
            if isinstance(missing, np.ndarray) and (bad := np.flatnonzero(missing)).size:
                return f"value{where} at row {int(bad[0])} is null"
    return None


def _at(index) -> str:
    idx = [int(i) for i in index]
    return f"row {idx[0]}" + (f", position {idx[1:]}" if len(idx) > 1 else "")
