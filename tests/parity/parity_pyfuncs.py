"""Custom pyfunc models of the parity suite, shipped with each model via `code_paths`.

Kept free of package-relative imports: MLflow puts this file on sys.path when it loads a model,
so `mlflow models serve` and the gateway unpickle these classes alike. Each one stands for a
way coalescing requests could change an answer.
"""

from __future__ import annotations

import mlflow.pyfunc


class WithParams(mlflow.pyfunc.PythonModel):
    """Row sums scaled by the `scale` param, tagged with the `tag` param; `fail` raises."""

    def predict(self, context, model_input, params=None):
        params = params or {}
        if params.get("fail"):
            raise ValueError("asked to fail (param fail=true)")
        scale = float(params.get("scale", 1.0))
        tag = params.get("tag", "none")
        sums = model_input.sum(axis=1).to_numpy() * scale
        return [f"{tag}:{v!r}" for v in sums]


class Tensor(mlflow.pyfunc.PythonModel):
    """A float32 matrix product: BLAS rounds its last bits differently by batch size."""

    def __init__(self, weights):
        self.weights = weights

    def predict(self, context, model_input, params=None):
        import numpy as np

        return np.asarray(model_input, dtype=np.float32) @ self.weights


class FrameOut(mlflow.pyfunc.PythonModel):
    """A DataFrame out (ints, strings, floats); raises on a row with n == 13."""

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if (model_input["n"] == 13).any():
            raise ValueError("unlucky row: n == 13")
        return pd.DataFrame(
            {
                "n_plus_one": model_input["n"] + 1,
                "label": "row-" + model_input["n"].astype(str),
                "half": model_input["x"] / 2,
            }
        )


class DictOut(mlflow.pyfunc.PythonModel):
    """A dict out, not one value per row."""

    def predict(self, context, model_input, params=None):
        return {"rows": int(len(model_input)), "total": float(model_input["x"].sum())}


class BatchDependent(mlflow.pyfunc.PythonModel):
    """Each row minus the mean of all rows of the call: other clients' rows would leak in."""

    def predict(self, context, model_input, params=None):
        x = model_input["x"].to_numpy(dtype=float)
        return (x - x.mean()).tolist()


class NoSignature(mlflow.pyfunc.PythonModel):
    """Echoes its input and the dtypes pandas inferred for it (no signature to fix them)."""

    def predict(self, context, model_input, params=None):
        import pandas as pd

        frame = pd.DataFrame(model_input)
        dtypes = ",".join(f"{c}:{t}" for c, t in frame.dtypes.items())
        return frame.assign(dtypes=dtypes)


class TypeHinted(mlflow.pyfunc.PythonModel):
    """Signature from type hints: MLflow hands it the raw `inputs` value."""

    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() for s in model_input]
