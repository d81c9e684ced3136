"""Whether a version may answer concurrent requests with one predict call, and why.

A version's `batching` setting is `auto` (default), `off` or `on`:

- `off`: every request is predicted alone, as `mlflow models serve` does.
- `on`: requests with the same format and columns share one predict call (the fastest; a
  model's float outputs may then differ in the last digits from mlflow's, and a model whose
  output depends on the other rows of its input sees other clients' rows).
- `auto`: requests share a call only where each request's answer is, by construction, what it
  would get alone: a scikit-learn model (flavor `mlflow.sklearn`, `predict`) with a signature
  of named scalar columns (the signature casts every column to a fixed dtype) and no params,
  requests with the same columns and the same JSON type per column (pandas then infers the
  dtype the request would get alone), and an estimator whose predictions are batch-exact:

  * tree regressors and decision trees: each row is compared with thresholds and its leaf
    values summed in a fixed order, the same bits in any batch;
  * linear classifiers (`LinearClassifierMixin.predict`, e.g. LogisticRegression): the label
    is the arg-max of scores whose BLAS rounding depends on the batch size, so every shared
    call is checked: a row's label is kept only when its scores' margin exceeds a bound on that
    rounding error; rows too close to a tie are predicted alone;
  * either one after elementwise preprocessing (scalers, one-hot and ordinal encoders, column
    transformers of those), whose results do not depend on the other rows.

  Everything else (float outputs of BLAS products such as linear regression, custom pyfunc
  models, models without signature, tensor or type-hint signatures, params) is predicted alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODES = ("auto", "off", "on")
_SCALAR_TYPES = {"boolean", "integer", "long", "float", "double", "string"}


def check_mode(value: Any) -> str:
    """The mode, or ValueError naming what was expected."""
    if value not in MODES:
        raise ValueError(f"'batching' must be one of {', '.join(MODES)}; got {value!r}")
    return value


@dataclass(frozen=True)
class Plan:
    """How a version answers a group of concurrent requests.

    :param mode: the setting (auto, off, on).
    :param coalesce: whether requests share predict calls at all.
    :param strict: share only requests with equal per-column value types (auto).
    :param check: (parsed batch frame, raw predictions) -> per-row bool array: which rows of a
        shared call are certified equal to what the row's request would get alone; None when
        every row is exact by construction.
    :param reason: one sentence for `GET /admin/state`.
    """

    mode: str
    coalesce: bool
    strict: bool
    reason: str
    check: Any = None

    def describe(self) -> dict:
        return {"mode": self.mode, "coalesces": self.coalesce, "reason": self.reason}


def plan(model: Any, mode: str) -> Plan:
    """The plan for a loaded pyfunc model under a batching mode."""
    if mode == "off":
        return Plan("off", False, False, "off: every request is predicted alone")
    if mode == "on":
        return Plan(
            "on",
            True,
            False,
            "on: requests with the same format and columns share one predict call; answers "
            "may differ from mlflow models serve in the last float digits, and a model whose "
            "output depends on other rows sees other clients' rows",
        )
    why_not = _not_eligible(model)
    if why_not:
        return Plan("auto", False, True, f"auto, predicted alone: {why_not}")
    steps = _steps(model._model_impl.sklearn_model)
    prefix, final = steps[:-1], steps[-1]
    name = type(final).__name__
    if bad := [type(s).__name__ for s in prefix if not _elementwise(s)]:
        return Plan(
            "auto",
            False,
            True,
            f"auto, predicted alone: preprocessing {bad[0]} is not known to be row-exact",
        )
    if _exact_tree(final):
        return Plan(
            "auto",
            True,
            True,
            f"auto, shared calls: {name} gives each row the same bits in any batch "
            "(threshold comparisons, sums in a fixed order)",
        )
    if _linear_classifier(final):
        schema = model.metadata.get_input_schema()
        return Plan(
            "auto",
            True,
            True,
            f"auto, shared calls: {name} labels, each shared call checked against a bound "
            "on its scores' rounding error (rows near a tie are predicted alone)",
            _LinearMargin(prefix, final, schema),
        )
    return Plan(
        "auto",
        False,
        True,
        f"auto, predicted alone: {name} is not known to give each row the same bits in any "
        "batch (BLAS sums round differently by batch size)",
    )


def _not_eligible(model: Any) -> str | None:
    meta = model.metadata
    conf = meta.flavors.get("python_function", {})
    loader = conf.get("loader_module")
    if loader != "mlflow.sklearn":
        return f"only scikit-learn models are known to be row-independent (flavor {loader})"
    if conf.get("predict_fn", "predict") != "predict":
        return f"predict_fn is {conf.get('predict_fn')!r} (only 'predict' is checked)"
    if meta.get_params_schema() is not None:
        return "the model takes params"
    schema = meta.get_input_schema()
    if schema is None or not schema.has_input_names() or schema.is_tensor_spec():
        return "no signature with named columns (column types would be inferred per batch)"
    bad = [
        c.name
        for c in schema.inputs
        if getattr(getattr(c, "type", None), "name", None) not in _SCALAR_TYPES
    ]
    if bad:
        return f"column {bad[0]!r} is not a scalar type (bool, int, float, string)"
    if getattr(model._model_impl, "sklearn_model", None) is None:
        return "no scikit-learn estimator behind the pyfunc"
    return None


def _steps(est: Any) -> list:
    from sklearn.pipeline import Pipeline

    if isinstance(est, Pipeline):
        out: list = []
        for _, step in est.steps:
            if step is None or step == "passthrough":
                continue
            out.extend(_steps(step))
        return out
    return [est]


def _elementwise(step: Any) -> bool:
    """A fitted transformer whose output for a row depends on that row's values only, computed
    with correctly rounded elementwise operations (so the same bits in any batch)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    if isinstance(step, Pipeline):
        return all(_elementwise(s) for s in _steps(step))
    if isinstance(step, ColumnTransformer):
        return all(
            t in ("drop", "passthrough") or _elementwise(t)
            for _, t, _ in getattr(step, "transformers_", [])
        )
    return type(step) in (StandardScaler, MinMaxScaler, MaxAbsScaler, OneHotEncoder, OrdinalEncoder)


def _exact_tree(est: Any) -> bool:
    from sklearn.dummy import DummyRegressor
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor
    from sklearn.ensemble import RandomForestRegressor as Forest
    from sklearn.tree import (
        DecisionTreeClassifier,
        DecisionTreeRegressor,
        ExtraTreeClassifier,
        ExtraTreeRegressor,
    )

    kind = type(est)
    if kind in (DecisionTreeRegressor, ExtraTreeRegressor):
        return True
    if kind in (DecisionTreeClassifier, ExtraTreeClassifier):
        return getattr(est, "n_outputs_", 1) == 1
    if kind in (Forest, ExtraTreesRegressor):
        # several jobs add the trees' predictions in the order the threads finish
        return est.n_jobs in (None, 1)
    if kind is GradientBoostingRegressor:
        return isinstance(est.init_, DummyRegressor) or est.init_ == "zero"
    return False


def _linear_classifier(est: Any) -> bool:
    from sklearn.linear_model._base import LinearClassifierMixin

    kind = type(est)
    return (
        isinstance(est, LinearClassifierMixin)
        and kind.predict is LinearClassifierMixin.predict
        and kind.decision_function is LinearClassifierMixin.decision_function
    )


class _LinearMargin:
    """Certifies the labels of one shared call of a linear classifier, row by row.

    `predict` is `classes_[argmax(X @ coef_.T + intercept_)]` (binary: score > 0). A dot
    product of K terms computed in any order, with or without FMA, is within
    gamma_{K+1} * (sum|x_k w_k| + |b|) of the exact value (gamma_n ~ n * u). The scores computed
    here, the model's in the shared call and the model's for the request alone are all within
    that of the exact scores, so when the winning score here beats every other by more than
    twice the sum of both bounds, all three give the same label. The bound used is twice that
    again (eps = 2u, and a factor 2). The labels these scores give must also be the shared
    call's answer, row by row, or the row is not certified.
    """

    def __init__(self, prefix: list, final: Any, schema: Any):
        self.prefix = prefix
        self.final = final
        self.schema = schema

    def __call__(self, frame: Any, raw: Any):
        import numpy as np
        from mlflow.models.utils import _enforce_schema
        from sklearn.utils.extmath import safe_sparse_dot

        X = _enforce_schema(frame, self.schema)  # what the estimator was given
        for step in self.prefix:
            X = step.transform(X)
        sparse = hasattr(X, "tocsr")
        X = X.astype(np.float64) if sparse else np.asarray(X, dtype=np.float64)
        coef = self.final.coef_
        W = coef.toarray() if hasattr(coef, "toarray") else np.asarray(coef, dtype=np.float64)
        b = np.asarray(self.final.intercept_, dtype=np.float64).reshape(1, -1)
        n = X.shape[0]
        scores = np.asarray(safe_sparse_dot(X, W.T, dense_output=True)) + b
        A = np.asarray(safe_sparse_dot(abs(X), np.abs(W).T, dense_output=True))
        beta = (W.shape[1] + 2) * np.finfo(np.float64).eps * (A + np.abs(b) + np.abs(scores))
        if scores.shape[1] == 1:
            ok = np.abs(scores[:, 0]) > 4 * beta[:, 0]
            labels = self.final.classes_[(scores[:, 0] > 0).astype(int)]
        else:
            top = np.argmax(scores, axis=1)
            rows = np.arange(n)
            margin = scores[rows, top][:, None] - scores
            need = 4 * (beta[rows, top][:, None] + beta)
            need[rows, top] = -np.inf
            ok = (margin > need).all(axis=1)
            labels = self.final.classes_[top]
        ok &= np.isfinite(scores).all(axis=1)
        ok &= np.asarray(labels == np.asarray(raw)).reshape(n)
        return ok
