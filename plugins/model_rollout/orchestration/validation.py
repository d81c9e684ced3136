"""Offline validation and integration checks run in the staging stage.

Why here and not in the judge: these read files and models (I/O), once, before any traffic;
the judge only ever sees live statistics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from model_rollout.policy import Holdout, include_dir

_HIGHER_IS_BETTER = {"accuracy": True, "f1_macro": True, "rmse": False, "mae": False}


class ValidationFailed(Exception):
    """The candidate failed a staging check; the message says which and by how much."""


def load_holdout(holdout: Holdout):
    """The holdout DataFrame (CSV/Parquet under include/, absolute path, or runs:/ artifact)."""
    import pandas as pd

    src = holdout.path
    if src.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        import mlflow

        src = mlflow.artifacts.download_artifacts(artifact_uri=src)
    p = Path(src)
    if not p.is_absolute():
        p = include_dir() / p
    if not p.is_file():
        raise ValidationFailed(f"holdout dataset {holdout.path!r} not found (looked at {p})")
    df = pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_csv(p)
    if holdout.target not in df.columns:
        raise ValidationFailed(
            f"holdout {p} has no target column {holdout.target!r}; columns: {list(df.columns)}"
        )
    if df.empty:
        raise ValidationFailed(f"holdout {p} has no rows")
    return df


def score(metric: str, y_true, y_pred) -> float:
    """One offline metric (higher or lower is better per `_HIGHER_IS_BETTER`)."""
    from sklearn import metrics

    if metric == "accuracy":
        return float(metrics.accuracy_score(y_true, y_pred))
    if metric == "f1_macro":
        return float(metrics.f1_score(y_true, y_pred, average="macro"))
    if metric == "rmse":
        return float(math.sqrt(metrics.mean_squared_error(y_true, y_pred)))
    if metric == "mae":
        return float(metrics.mean_absolute_error(y_true, y_pred))
    raise ValueError(f"unknown metric {metric!r}")


def _predict(uri: str, features):
    import mlflow.pyfunc
    import numpy as np

    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as e:
        raise ValidationFailed(f"{uri} cannot be loaded: {e}") from e
    try:
        out = model.predict(features)
    except Exception as e:  # schema enforcement, a model that raises: a failed check, not a crash
        raise ValidationFailed(f"{uri} cannot score the {len(features)} holdout rows: {e}") from e
    return np.asarray(out).reshape(len(features), -1)[:, 0] if hasattr(out, "__len__") else out


def offline_evaluation(
    holdout: Holdout, candidate_uri: str, incumbent_uri: str | None
) -> dict[str, Any]:
    """Score candidate (and incumbent) on the holdout; raise ValidationFailed beyond tolerance."""
    df = load_holdout(holdout)
    features = df.drop(columns=[holdout.target])
    y = df[holdout.target].to_numpy()
    cand = score(holdout.metric, y, _predict(candidate_uri, features))
    result: dict[str, Any] = {
        "metric": holdout.metric,
        "rows": len(df),
        "candidate": cand,
        "incumbent": None,
        "tolerance": holdout.tolerance,
    }
    higher = _HIGHER_IS_BETTER[holdout.metric]
    if holdout.min_score is not None:
        ok = cand >= holdout.min_score if higher else cand <= holdout.min_score
        if not ok:
            raise ValidationFailed(
                f"offline {holdout.metric} of the candidate is {cand:.4f}, "
                f"beyond the policy's floor {holdout.min_score}"
            )
    if incumbent_uri:
        inc = score(holdout.metric, y, _predict(incumbent_uri, features))
        result["incumbent"] = inc
        worse_by = (inc - cand) if higher else (cand - inc)
        result["worse_by"] = worse_by
        if worse_by > holdout.tolerance:
            raise ValidationFailed(
                f"offline {holdout.metric}: candidate {cand:.4f} vs incumbent {inc:.4f} on "
                f"{len(df)} holdout rows, worse by {worse_by:.4f} > tolerance {holdout.tolerance}"
            )
    return result


def signature_compatible(
    incumbent: list[dict[str, Any]] | None, candidate: list[dict[str, Any]] | None
) -> tuple[bool, str]:
    """Can the candidate take every request the incumbent takes? (columns and their types)."""
    if incumbent is None:
        return True, "incumbent has no signature: nothing to compare"
    if candidate is None:
        return False, "candidate has no signature while the incumbent has one"

    def cols(schema):
        return {
            c.get("name", f"#{i}"): (c.get("type"), c.get("required", True))
            for i, c in enumerate(schema)
        }

    inc, cand = cols(incumbent), cols(candidate)
    problems = []
    for name, (ctype, required) in cand.items():
        if name not in inc and required:
            problems.append(
                f"candidate requires column {name!r} that incumbent requests do not carry"
            )
        elif name in inc and inc[name][0] != ctype:
            problems.append(
                f"column {name!r}: incumbent type {inc[name][0]}, candidate type {ctype}"
            )
    if problems:
        return False, "; ".join(problems)
    return True, f"candidate accepts the incumbent's {len(inc)} input columns"


def sample_payloads(holdout: Holdout | None, count: int) -> list[dict[str, Any]]:
    """`dataframe_split` payloads of one row each, from the holdout's feature columns."""
    if holdout is None:
        raise ValidationFailed(
            "no sample inputs for the staging requests: set `holdout` in the policy"
        )
    df = load_holdout(holdout).drop(columns=[holdout.target])
    rows = [df.iloc[[i % len(df)]] for i in range(count)]
    return [{"dataframe_split": r.to_dict(orient="split", index=False)} for r in rows]


def p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)] if s else math.nan
