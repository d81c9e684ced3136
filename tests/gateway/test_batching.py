"""Which versions share predict calls under `batching: auto`, and the linear-classifier
certificate, on real MLflow models loaded the way the gateway loads them (no HTTP: the
parity suite in tests/parity checks the answers against `mlflow models serve`)."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from model_rollout.gateway.models import PyfuncVersion
from model_rollout.gateway.scoring import answer_alone, parse_request

pytestmark = pytest.mark.timeout(300)


def rows_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])


def saved(tmp_path, name: str, estimator, *, signature: bool = True, **kw) -> str:
    import mlflow
    from mlflow.models import infer_signature

    X = rows_frame(200)
    y = (X["a"] + X["b"] > 0).astype(int) if kw.pop("classify", False) else X["a"] * 2.0
    estimator.fit(X, y)
    path = tmp_path / name
    sig = infer_signature(X, estimator.predict(X)) if signature else None
    mlflow.sklearn.save_model(estimator, path, signature=sig, **kw)
    return str(path)


def version(source: str, mode: str = "auto") -> PyfuncVersion:
    v = PyfuncVersion("m", "1", source, max_batch_rows=256, max_pending_rows=1000, batching=mode)
    v._load_sync()
    return v


def test_auto_shares_calls_only_for_batch_exact_estimators(tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    trusted = {"skops_trusted_types": ["sklearn.tree._tree.Tree"]}
    cases = {
        "tree": (DecisionTreeRegressor(max_depth=3), {**trusted}, True, "DecisionTreeRegressor"),
        "forest-2-jobs": (
            RandomForestRegressor(n_estimators=3, n_jobs=2),
            {**trusted},
            False,
            "RandomForestRegressor",
        ),
        "logreg": (
            make_pipeline(StandardScaler(), LogisticRegression()),
            {"classify": True},
            True,
            "tie",
        ),
        "logreg-after-pca": (
            make_pipeline(PCA(2), LogisticRegression()),
            {"classify": True},
            False,
            "preprocessing PCA",
        ),
        "linreg": (LinearRegression(), {}, False, "BLAS"),
        "no-signature": (DecisionTreeRegressor(), {**trusted, "signature": False}, False, "named"),
    }
    for name, (est, kw, coalesces, why) in cases.items():
        v = version(saved(tmp_path, name, est, **kw))
        assert v.plan.coalesce is coalesces and why in v.plan.reason, (name, v.plan)
        assert v.plan.mode == "auto"
    v.set_batching("on")
    assert v.plan.coalesce and v.plan.reason.startswith("on:")
    v.set_batching("off")
    assert not v.plan.coalesce and v.describe()["batching"]["mode"] == "off"


def test_rows_at_a_tie_are_predicted_alone(tmp_path):
    """A binary linear classifier whose score is exactly 0 for a row (a tie between its two
    labels) cannot be certified from a shared call: that request is answered alone."""
    from sklearn.linear_model import LogisticRegression

    v = version(saved(tmp_path, "logreg", LogisticRegression(), classify=True))
    clf = v._pyfunc._model_impl.sklearn_model
    clf.coef_ = np.array([[1.0, -1.0, 0.0]])
    clf.intercept_ = np.array([0.0])
    cols = ["a", "b", "c"]
    bodies = [
        {"dataframe_split": {"columns": cols, "data": [[0.3, 0.3, 5.0]]}},  # score exactly 0
        {"dataframe_split": {"columns": cols, "data": [[2.0, -1.0, 0.0]]}},
        {"dataframe_split": {"columns": cols, "data": [[-1.5, 0.5, 1.0]]}},
    ]
    reqs = [parse_request(orjson.dumps(b), "application/json") for b in bodies]
    got = v._run_batch(reqs)
    b = v.describe()["batching"]
    assert (b["shared_requests"], b["uncertified"]) == (2, 1), b
    for r, res in zip(reqs, got, strict=True):
        alone = answer_alone(v._pyfunc, v._schema, r)
        assert (res.status, res.body) == (alone.status, alone.body)
