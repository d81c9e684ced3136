"""Pyfunc test models of known quality, shipped with each logged model via `code_paths`.

Kept free of package-relative imports: MLflow puts this file on sys.path when it loads a
model, so any process (the gateway, `mlflow models serve`) can unpickle these classes.
Failure and noise are decided per row by a hash of the row's values, so a request's fate
does not depend on which other requests shared its batch.
"""

from __future__ import annotations

import hashlib
import time

import mlflow.pyfunc


def row_unit(row, seed: int = 0) -> float:
    """A stable pseudo-random number in [0, 1) for a row of feature values."""
    text = repr((seed, tuple(round(float(x), 6) for x in row)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2.0**64


def _frame_values(model_input):
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return model_input
    return pd.DataFrame(model_input)


class IrisWrapper(mlflow.pyfunc.PythonModel):
    """A fitted classifier with a twist.

    :param mode: "flipped" (label -> (label + 1) % 3), "noisy" (a fraction `p` of rows get a
        wrong label), "slow" (sleep `delay_ms` per predict call), "raises" (raise when any row
        falls in the fraction `p`), "unloadable" (fail in load_context), "regressor" (float
        outputs: the predicted class plus a small row-dependent offset).
    """

    def __init__(self, clf, mode: str, *, p: float = 0.0, delay_ms: float = 0.0, seed: int = 0):
        self.clf = clf
        self.mode = mode
        self.p = p
        self.delay_ms = delay_ms
        self.seed = seed

    def load_context(self, context):
        if self.mode == "unloadable":
            raise RuntimeError("this test model refuses to load (kind='unloadable')")

    def predict(self, context, model_input, params=None):
        X = _frame_values(model_input)
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000.0)
        pred = self.clf.predict(X)
        mode = self.mode
        if mode == "slow":
            return pred
        if mode == "flipped":
            return (pred + 1) % 3
        rows = X.to_numpy()
        if mode == "noisy":
            out = pred.copy()
            for i, row in enumerate(rows):
                if row_unit(row, self.seed) < self.p:
                    out[i] = (out[i] + 1) % 3
            return out
        if mode == "raises":
            for row in rows:
                if row_unit(row, self.seed) < self.p:
                    raise ValueError("test model failure (kind='raises') on row " + repr(list(row)))
            return pred
        if mode == "regressor":
            return pred.astype(float) + [row_unit(r, self.seed) / 10.0 for r in rows]
        return pred
