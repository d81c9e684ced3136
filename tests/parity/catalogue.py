"""The parity suite's models and payloads.

`build_models(root)` saves one MLflow model per kind below (locally: both servers load them by
path, no registry needed) and returns their `Kind`s. `payloads(kind, rng)` makes the requests
sent to both servers: every format `mlflow.models.convert_input_example_to_serving_input` and
hand-written MLflow scoring JSON produce, CSV, and the oddities mlflow tolerates or refuses
(extra fields, params that are not an object, content-type parameters, nulls, "Inf", NaN
literals, wrong columns, empty data, malformed bodies).
"""

from __future__ import annotations

import importlib
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PIP = ["mlflow==3.17.*", "scikit-learn", "pandas", "numpy", "cloudpickle"]
JSON = "application/json"


@dataclass
class Kind:
    """One model of the suite.

    :param name: model name in the gateway (and the kind's id).
    :param path: the saved model's folder.
    :param shape: "frame" (named columns), "tensor" or "strings" (type-hint list[str]).
    :param columns: column name -> value maker (rng -> JSON value), for "frame".
    :param shares_calls: what `batching: auto` is expected to decide for it.
    :param extra: model-specific (body, content type) pairs beyond the common ones.
    """

    name: str
    path: Path
    shape: str
    columns: dict[str, Any] = field(default_factory=dict)
    shares_calls: bool = False
    extra: list[tuple[bytes, str]] = field(default_factory=list)


def _pyfuncs():
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module("parity_pyfuncs")
    finally:
        sys.path.pop(0)


def _frame(columns: dict, rng: random.Random, n: int):
    return [{c: make(rng) for c, make in columns.items()} for _ in range(n)]


def build_models(root: Path) -> list[Kind]:
    """Train and save every kind of model; ~15 s."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris, make_regression
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pf = _pyfuncs()
    code = [str(HERE / "parity_pyfuncs.py")]
    kinds: list[Kind] = []
    rng = np.random.default_rng(0)

    def path(name: str) -> Path:
        return root / name

    # 1. the benchmark model: iris LogisticRegression
    iris = load_iris(as_frame=True)
    X = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    y = iris.target.astype("int64")
    clf = LogisticRegression(max_iter=500).fit(X, y)
    mlflow.sklearn.save_model(
        clf, path("iris"), signature=infer_signature(X, clf.predict(X)), pip_requirements=PIP
    )
    iris_cols = {c: (lambda r: round(r.uniform(0.1, 8.0), 1)) for c in X.columns}
    kinds.append(Kind("iris", path("iris"), "frame", iris_cols, shares_calls=True))

    # 2. a pipeline over int, float and string columns, string labels
    n = 400
    mixed = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n).astype("int64"),
            "height": rng.normal(170, 10, n).round(1),
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    labels = np.where((mixed["age"] > 50) ^ (mixed["color"] == "red"), "high", "low").astype(object)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "height"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(mixed, labels)
    mlflow.sklearn.save_model(
        pipe,
        path("mixed"),
        signature=infer_signature(mixed, pipe.predict(mixed)),
        pip_requirements=PIP,
    )
    kinds.append(
        Kind(
            "mixed",
            path("mixed"),
            "frame",
            {
                "age": lambda r: r.randint(18, 90),
                "height": lambda r: round(r.uniform(140, 200), 1),
                "color": lambda r: r.choice(["red", "green", "blue", "mauve"]),
            },
            shares_calls=True,
        )
    )

    # 3. a linear regressor (float outputs of a BLAS product) and 4. a forest (exact sums)
    Xr, yr = make_regression(n_samples=300, n_features=5, noise=0.5, random_state=0)
    Xr = pd.DataFrame(Xr, columns=[f"f{i}" for i in range(5)])
    reg_cols = {c: (lambda r: round(r.gauss(0, 2), 4)) for c in Xr.columns}
    ridge = Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]).fit(Xr, yr)
    mlflow.sklearn.save_model(
        ridge,
        path("regressor"),
        signature=infer_signature(Xr, ridge.predict(Xr)),
        pip_requirements=PIP,
    )
    kinds.append(Kind("regressor", path("regressor"), "frame", reg_cols))
    forest = RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0).fit(Xr, yr)
    mlflow.sklearn.save_model(
        forest,
        path("forest"),
        signature=infer_signature(Xr, forest.predict(Xr)),
        pip_requirements=PIP,
        skops_trusted_types=["sklearn.tree._tree.Tree"],  # our own model
    )
    kinds.append(Kind("forest", path("forest"), "frame", reg_cols, shares_calls=True))

    # 5. a pyfunc with params
    pdf = pd.DataFrame({"a": [1.5, 2.0], "b": [3.0, -1.0]})
    params = {"scale": 1.0, "tag": "none", "fail": False}
    mlflow.pyfunc.save_model(
        path("params"),
        python_model=pf.WithParams(),
        signature=infer_signature(pdf, ["x"], params=params),
        code_paths=code,
        pip_requirements=PIP,
    )
    ab = {"a": lambda r: round(r.uniform(-5, 5), 3), "b": lambda r: round(r.uniform(-5, 5), 3)}
    split = {"columns": ["a", "b"], "data": [[1.25, 2.5]]}
    kinds.append(
        Kind(
            "params",
            path("params"),
            "frame",
            ab,
            extra=[
                (_j({"dataframe_split": split, "params": {"scale": 2.5, "tag": "x"}}), JSON),
                (_j({"dataframe_split": split, "params": {"scale": "big"}}), JSON),
                (_j({"dataframe_split": split, "params": {"fail": True}}), JSON),
                (_j({"dataframe_split": split, "params": {"nope": 1}}), JSON),
            ],
        )
    )

    # 6. a tensor signature (float32 matrix product)
    weights = rng.normal(size=(8, 3)).astype(np.float32)
    example = rng.normal(size=(2, 8)).astype(np.float32)
    mlflow.pyfunc.save_model(
        path("tensor"),
        python_model=pf.Tensor(weights),
        signature=infer_signature(example, example @ weights),
        code_paths=code,
        pip_requirements=PIP,
    )
    kinds.append(Kind("tensor", path("tensor"), "tensor"))

    # 7. DataFrame out (and a model exception on n == 13), 8. dict out, 9. batch-dependent
    nx = pd.DataFrame({"n": [1, 2], "x": [0.5, 1.5]})
    nx_cols = {"n": lambda r: r.choice([r.randint(0, 40), 13]), "x": lambda r: r.uniform(-9, 9)}
    for name, model in (
        ("frame_out", pf.FrameOut()),
        ("dict_out", pf.DictOut()),
        ("batch_dep", pf.BatchDependent()),
    ):
        mlflow.pyfunc.save_model(
            path(name),
            python_model=model,
            signature=infer_signature(nx),
            code_paths=code,
            pip_requirements=PIP,
        )
        kinds.append(Kind(name, path(name), "frame", nx_cols))

    # 10. no signature: pandas infers the column types of whatever arrives
    mlflow.pyfunc.save_model(
        path("no_sig"), python_model=pf.NoSignature(), code_paths=code, pip_requirements=PIP
    )
    kinds.append(
        Kind(
            "no_sig",
            path("no_sig"),
            "frame",
            {
                "i": lambda r: r.choice([r.randint(-3, 3), None, 2.5]),
                "s": lambda r: r.choice(["a", "b", None, 7]),
            },
        )
    )

    # 11. a signature from type hints (list[str] in, list[str] out)
    mlflow.pyfunc.save_model(
        path("type_hint"), python_model=pf.TypeHinted(), code_paths=code, pip_requirements=PIP
    )
    kinds.append(Kind("type_hint", path("type_hint"), "strings"))
    return kinds


def _j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _rows(kind: Kind, rng: random.Random, n: int) -> list:
    if kind.shape == "tensor":
        return [[round(rng.gauss(0, 3), 5) for _ in range(8)] for _ in range(n)]
    if kind.shape == "strings":
        return ["".join(rng.choice("abcxyz") for _ in range(rng.randint(1, 5))) for _ in range(n)]
    return _frame(kind.columns, rng, n)


def formats(kind: Kind, rows: list) -> list[tuple[bytes, str]]:
    """The same rows in every format that makes sense for the model's input."""
    import numpy as np
    import pandas as pd
    from mlflow.models import convert_input_example_to_serving_input

    if kind.shape == "tensor":
        arr = np.asarray(rows, dtype=np.float32)
        return [
            (convert_input_example_to_serving_input(arr).encode(), JSON),
            (_j({"inputs": rows}), JSON),
            (_j({"instances": rows}), JSON),
            (_j({"dataframe_split": {"data": rows}}), JSON),
            (pd.DataFrame(rows).to_csv(index=False).encode(), "text/csv"),
        ]
    if kind.shape == "strings":
        return [
            (convert_input_example_to_serving_input(rows).encode(), JSON),
            (_j({"inputs": rows}), JSON),
            (_j({"instances": rows}), JSON),
            (_j({"dataframe_records": [{"s": s} for s in rows]}), JSON),
        ]
    cols = list(kind.columns)
    frame = pd.DataFrame(rows, columns=cols)
    return [
        (convert_input_example_to_serving_input(frame).encode(), JSON),
        (
            _j(
                {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in rows]}}
            ),
            JSON,
        ),
        (_j({"dataframe_records": rows}), JSON),
        (_j({"instances": rows}), JSON),
        (_j({"inputs": {c: [r[c] for r in rows] for c in cols}}), JSON),
        (frame.to_csv(index=False).encode(), "text/csv"),
    ]


def oddities(kind: Kind, rng: random.Random) -> list[tuple[bytes, str]]:
    """Requests mlflow tolerates or refuses in ways a client can see."""
    rows = _rows(kind, rng, 2)
    good = formats(kind, rows)[1][0]
    doc = json.loads(good)
    out = [
        (_j({**doc, "extra": 1, "metadata": {"a": [1]}}), JSON),
        (_j({**doc, "params": [1, 2]}), JSON),
        (_j({**doc, "params": "x"}), JSON),
        (_j({**doc, "params": {"unknown": 1}}), JSON),
        (good, "application/json; charset=utf-8"),
        (good, "application/json; charset=UTF-8"),
        (good, "application/json; format=pandas-split"),
        (good, "application/json; charset=latin-1"),
        (good, "text/plain"),
        (good, "application/vnd.apache.parquet"),
        (b"{not json", JSON),
        (b"[1, 2, 3]", JSON),
        (b"", JSON),
        (b'"text"', JSON),
        (_j({"inputs": [[1]], "instances": [[1]]}), JSON),
        (_j({"nothing": 1}), JSON),
        (b"a,b\n1,2\n3", "text/csv"),
    ]
    if kind.shape == "frame":
        cols = list(kind.columns)
        first = cols[0]
        out += [
            (_j({"dataframe_split": {"columns": cols, "data": []}}), JSON),
            (_j({"dataframe_records": []}), JSON),
            (
                _j(
                    {
                        "dataframe_split": {
                            "columns": ["wrong", *cols[1:]],
                            "data": [[1] * len(cols)],
                        }
                    }
                ),
                JSON,
            ),
            (_j({"dataframe_records": [{**rows[0], first: None}]}), JSON),
            (_j({"dataframe_records": [{**rows[0], first: "Inf"}]}), JSON),
            (_j({"dataframe_records": [{**rows[0], first: "-Infinity"}]}), JSON),
            (json.dumps({"dataframe_records": [{**rows[0], first: float("nan")}]}).encode(), JSON),
            (_j({"dataframe_records": [{**rows[0], first: [1, 2]}]}), JSON),
            (
                _j(
                    {
                        "dataframe_split": {
                            "columns": cols,
                            "data": [[r[c] for c in cols] for r in rows],
                            "index": [7, 9],
                        }
                    }
                ),
                JSON,
            ),
            (_j({"dataframe_records": [{c: r[c] for c in reversed(cols)} for r in rows]}), JSON),
            (_j({"dataframe_split": {"data": [[r[c] for c in cols] for r in rows]}}), JSON),
        ]
    if kind.shape == "tensor":
        out += [
            (_j({"inputs": [[1.0] * 7]}), JSON),
            (_j({"inputs": [[None] * 8]}), JSON),
            (_j({"inputs": [["Inf"] * 8]}), JSON),
            (_j({"inputs": []}), JSON),
        ]
    if kind.shape == "strings":
        out += [(_j({"inputs": [1, 2]}), JSON), (_j({"inputs": "one"}), JSON)]
    return out + kind.extra


def payloads(kind: Kind, seed: int, singles: int, multis: int) -> list[tuple[bytes, str]]:
    """Distinct requests for one model: rows in every format (single- and multi-row), then the
    oddities. Different seeds give different rows, so concurrent requests are all distinct."""
    rng = random.Random(seed)
    out: list[tuple[bytes, str]] = []
    for i in range(singles + multis):
        out += formats(kind, _rows(kind, rng, 1 if i < singles else rng.randint(2, 4)))
    return out + oddities(kind, rng)
