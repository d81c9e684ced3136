"""Models that are slow to load, and a bounded CPU hog: the conditions under which the
gateway's control plane must still answer at once (issue #11).

`save_slow_model(folder, load_seconds=..., worker_load_seconds=...)` saves a real MLflow
pyfunc model (iris classes by petal length, with a signature) to a local folder: the gateway
loads it like a registry version, without the ~20 s of registering one. Its `load_context`
sleeps `load_seconds` in the gateway's own process and `worker_load_seconds` in a shadow
worker process, so "a version still loading" and "a shadow worker still starting" last as
long as a test needs, whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from .models import IRIS_COLUMNS, PIP_REQUIREMENTS, _fitted, iris

MODEL_CODE = '''
"""Iris classes by petal length; sleeps in load_context as its model_config says."""
import multiprocessing
import os
import time

import mlflow
from mlflow.pyfunc import PythonModel


class SlowToLoad(PythonModel):
    def load_context(self, context):
        config = context.model_config or {}
        in_worker = multiprocessing.parent_process() is not None
        key = "worker_load_seconds" if in_worker else "load_seconds"
        time.sleep(float(config.get(key, 0)))
        marker = config.get("fail_first_load")
        if marker and not os.path.exists(marker):  # what a half-imported package looks like
            open(marker, "w").close()
            raise AttributeError("module 'flavorlib' has no attribute 'io'")

    def predict(self, context, model_input, params=None):
        return [0 if x < 2.5 else 1 if x < 4.9 else 2 for x in model_input["petal_length"]]


mlflow.models.set_model(SlowToLoad())
'''


def save_slow_model(
    folder: Path,
    *,
    load_seconds: float = 0.0,
    worker_load_seconds: float = 0.0,
    fail_first_load: bool = False,
) -> str:
    """Save the model under `folder` and return its path (a model URI the gateway loads).

    :param fail_first_load: its first load in any process raises AttributeError, as a flavor
        whose library another thread is still importing does; later loads work.
    """
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "slow_to_load.py"
    code.write_text(MODEL_CODE)
    X, _ = iris()
    path = (
        folder / f"model-{load_seconds:g}-{worker_load_seconds:g}{'-ff' if fail_first_load else ''}"
    )
    config = {"load_seconds": load_seconds, "worker_load_seconds": worker_load_seconds}
    if fail_first_load:
        config["fail_first_load"] = str(folder / f"{path.name}.loaded-once")
    mlflow.pyfunc.save_model(
        str(path),
        python_model=str(code),
        model_config=config,
        signature=infer_signature(X[IRIS_COLUMNS], _fitted().predict(X)),
        pip_requirements=PIP_REQUIREMENTS,
    )
    return str(path)


HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def cpu_hog(processes: int = 2, seconds: float = 300.0) -> Iterator[list[subprocess.Popen]]:
    """`processes` busy loops at normal priority (what `stress-ng --cpu 2` does), each ending by
    itself after `seconds` and stopped (by pid) when the block ends."""
    procs = [
        subprocess.Popen([sys.executable, "-c", HOG.format(seconds=float(seconds))])
        for _ in range(processes)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)
