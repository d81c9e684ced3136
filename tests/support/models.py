"""Register small iris models of known quality in a real MLflow registry.

`register_iris_version(tracking_uri, name, kind=...)` logs one model with an explicit
signature and `pip_requirements` (MLflow would otherwise spend ~20 s inferring them) and
registers it as the next version of `name`. Kinds:

- "good": a plain `mlflow.sklearn` LogisticRegression (accuracy ~0.97 on iris).
- "flipped": every label shifted (accuracy ~0): clearly different predictions.
- "noisy": a fraction `p` of rows get a wrong label: a subtly worse model.
- "slow": good answers, `delay_ms` slower per predict call.
- "raises": raises for a fraction `p` of rows (p=1.0: always).
- "regressor": float outputs (numeric output histograms, |delta| pairing).
- "unloadable": registered fine, fails when loaded.
- "incompatible": signature wants other columns; iris requests are rejected (4xx).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from pathlib import Path
from typing import Any

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
KINDS = ("good", "flipped", "noisy", "slow", "raises", "regressor", "unloadable", "incompatible")
PIP_REQUIREMENTS = ["mlflow==3.17.*", "scikit-learn", "pandas", "numpy", "cloudpickle"]
_KINDS_FILE = Path(__file__).with_name("pyfunc_kinds.py")


@functools.cache
def iris() -> tuple[Any, Any]:
    """(X as a DataFrame with IRIS_COLUMNS, y as an int array)."""
    import pandas as pd
    from sklearn.datasets import load_iris

    data = load_iris()
    X = pd.DataFrame(data.data, columns=IRIS_COLUMNS)
    return X, data.target.astype("int64")


@functools.cache
def _fitted(max_iter: int = 500):
    from sklearn.linear_model import LogisticRegression

    X, y = iris()
    return LogisticRegression(max_iter=max_iter).fit(X, y)


def iris_rows(n: int, seed: int = 0) -> list[list[float]]:
    """n iris feature rows (sampled with replacement, reproducible)."""
    X, _ = iris()
    rng = random.Random(seed)
    values = X.to_numpy().tolist()
    return [values[rng.randrange(len(values))] for _ in range(n)]


def scoring_payload(rows: list[list[float]], fmt: str = "dataframe_split") -> dict:
    """A scoring request body for `rows` in one of MLflow's four formats."""
    if fmt == "dataframe_split":
        return {"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}
    if fmt == "dataframe_records":
        return {"dataframe_records": [dict(zip(IRIS_COLUMNS, r, strict=True)) for r in rows]}
    if fmt == "instances":
        return {"instances": [dict(zip(IRIS_COLUMNS, r, strict=True)) for r in rows]}
    if fmt == "inputs":
        return {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(IRIS_COLUMNS)}}
    raise ValueError(f"unknown format {fmt!r}")


def register_iris_version(
    tracking_uri: str,
    name: str,
    *,
    kind: str = "good",
    p: float = 0.0,
    delay_ms: float = 0.0,
    seed: int = 0,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
    experiment: str = "model_rollout_tests",
) -> str:
    """Log a test model of `kind` and register it as a new version of `name`; return the version.

    :param tracking_uri: the MLflow server (e.g. from the `mlflow_server` fixture).
    :param name: registered model name (created if needed).
    :param kind: one of KINDS.
    :param p: fraction of rows affected for "noisy" and "raises".
    :param delay_ms: extra time per predict call (any pyfunc kind; "slow" uses it).
    :param seed: varies which rows "noisy"/"raises" pick.
    :param alias: set this registry alias to the new version.
    :param tags: model-version tags to set.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        with contextlib.suppress(Exception):  # another process may have created it first
            client.create_experiment(experiment)
    mlflow.set_experiment(experiment)
    X, y = iris()
    clf = _fitted()
    with mlflow.start_run(run_name=f"{name}-{kind}") as run:
        if kind == "good" and not delay_ms:
            sig = infer_signature(X, clf.predict(X))
            info = mlflow.sklearn.log_model(
                clf,
                name="model",
                signature=sig,
                pip_requirements=PIP_REQUIREMENTS,
                input_example=None,
                registered_model_name=name,
            )
        else:
            import importlib
            import sys

            sys.path.insert(0, str(_KINDS_FILE.parent))
            try:
                kinds = importlib.import_module("pyfunc_kinds")
            finally:
                sys.path.pop(0)
            mode = "slow" if kind == "good" else kind
            if kind == "incompatible":
                from sklearn.linear_model import LogisticRegression

                Xi = X.iloc[:, :2].rename(
                    columns={"sepal_length": "feature_a", "sepal_width": "feature_b"}
                )
                inner = LogisticRegression(max_iter=500).fit(Xi, y)
                wrapper = kinds.IrisWrapper(inner, "slow", delay_ms=delay_ms)
                sig = infer_signature(Xi, inner.predict(Xi))
            else:
                wrapper = kinds.IrisWrapper(clf, mode, p=p, delay_ms=delay_ms, seed=seed)
                out = clf.predict(X).astype(float) if kind == "regressor" else clf.predict(X)
                sig = infer_signature(X, out)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=wrapper,
                code_paths=[str(_KINDS_FILE)],
                signature=sig,
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=name,
            )
        mlflow.set_tags({"test.kind": kind, "test.p": str(p), "test.delay_ms": str(delay_ms)})
    del run
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    for k, v in (tags or {}).items():
        client.set_model_version_tag(name, version, k, v)
    return version
