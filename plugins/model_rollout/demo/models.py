"""The demo's three iris models: an incumbent, a healthy candidate and a degraded one.

Why its own code and not the test helpers: the demo ships with the package and must not
import from tests/. The degraded model is a pyfunc `PythonModel` defined here; MLflow pickles
it by reference to this module, which every process of the demo (gateway, Airflow tasks) can
import because the package is installed in the venv and `plugins/` is on Airflow's path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc

MODEL = "iris"
EXPERIMENT = "model_rollout_demo"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
HOLDOUT = Path(__file__).resolve().parents[3] / "include" / "data" / "iris_holdout.csv"
FAIL_SHARE = 0.12  # hash threshold: ~8% of the 150 iris rows crash (none of the holdout's)


def row_unit(row, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) per feature row: which rows hit the bug."""
    text = repr((seed, tuple(round(float(x), 6) for x in row)))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class CrashingIris(mlflow.pyfunc.PythonModel):
    """A good classifier behind a feature-pipeline bug that raises on some inputs.

    Which rows crash is fixed by a hash of the row, so the offline holdout and the staging
    samples (chosen to miss the bug) pass and only live traffic reveals it: the judge's job.
    """

    def __init__(self, clf, share: float, seed: int):
        self.clf = clf
        self.share = share
        self.seed = seed

    def predict(self, context, model_input, params=None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        for row in frame.to_numpy():
            if row_unit(row, self.seed) < self.share:
                raise ValueError(f"feature pipeline bug: cannot scale row {list(row)}")
        return self.clf.predict(frame)


@functools.cache
def iris():
    """(features DataFrame with COLUMNS, int labels)."""
    import pandas as pd
    from sklearn.datasets import load_iris

    data = load_iris()
    return pd.DataFrame(data.data, columns=COLUMNS), data.target.astype("int64")


def live_rows() -> list[list[float]]:
    """The rows live traffic draws from (all 150 iris flowers)."""
    return iris()[0].to_numpy().tolist()


def holdout_safe_seed(share: float = FAIL_SHARE, limit: int = 200_000) -> int:
    """A seed under which no holdout row crashes: offline validation cannot see the bug."""
    import pandas as pd

    rows = pd.read_csv(HOLDOUT).drop(columns=["species"]).to_numpy()
    for seed in range(limit):
        if all(row_unit(r, seed) >= share for r in rows):
            return seed
    raise RuntimeError(f"no seed in {limit} keeps all {len(rows)} holdout rows clear")


def live_failure_share(share: float, seed: int) -> float:
    """Share of live rows the degraded model crashes on (for the printout)."""
    rows = live_rows()
    return sum(row_unit(r, seed) < share for r in rows) / len(rows)


@dataclass(frozen=True)
class Registered:
    version: str
    description: str


def _requirements() -> list[str]:
    import sklearn

    return [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}", "pandas"]


def _fit(c: float):
    from sklearn.linear_model import LogisticRegression

    X, y = iris()
    return LogisticRegression(C=c, max_iter=500).fit(X, y)


def _start(tracking_uri: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        with contextlib.suppress(Exception):
            mlflow.create_experiment(EXPERIMENT)
    mlflow.set_experiment(EXPERIMENT)


def register_sklearn(
    tracking_uri: str, c: float, description: str, model: str = MODEL
) -> Registered:
    """A plain `mlflow.sklearn` LogisticRegression (explicit requirements: no 20 s inference)."""
    import mlflow
    from mlflow.models import infer_signature

    _start(tracking_uri)
    X, _ = iris()
    clf = _fit(c)
    with mlflow.start_run(run_name=f"iris-logreg-C{c}"):
        info = mlflow.sklearn.log_model(
            clf,
            name="model",
            signature=infer_signature(X, clf.predict(X)),
            pip_requirements=_requirements(),
            registered_model_name=model,
        )
        mlflow.set_tags({"demo.role": description})
    return Registered(str(info.registered_model_version), description)


def register_crashing(tracking_uri: str, c: float, share: float, seed: int) -> Registered:
    """The degraded candidate: the same recipe behind `CrashingIris`."""
    import mlflow
    from mlflow.models import infer_signature

    _start(tracking_uri)
    X, _ = iris()
    clf = _fit(c)
    description = (
        f"crashes on {live_failure_share(share, seed):.0%} of live rows, none in the holdout"
    )
    with mlflow.start_run(run_name="iris-logreg-crashing"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CrashingIris(clf, share, seed),
            signature=infer_signature(X, clf.predict(X)),
            pip_requirements=_requirements(),
            registered_model_name=MODEL,
        )
        mlflow.set_tags({"demo.role": description})
    return Registered(str(info.registered_model_version), description)
