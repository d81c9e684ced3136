"""MLflow registry access for rollouts: versions, aliases, `rollout.*` tags and evidence records.

Why a thin class over `MlflowClient`: every call a rollout makes goes through one place that
turns MLflow's errors into messages naming the model, version and server, and that keeps
retries short, so an unreachable registry fails a task in seconds rather than minutes.
`mlflow` is imported lazily: DAG files must parse without paying its ~5 s import.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

TAG_PREFIX = "rollout."
CHAMPION, CHALLENGER, STANDBY = "champion", "challenger", "standby"
EVIDENCE_EXPERIMENT = "model_rollout_evidence"
_TAG_LIMIT = 4900  # MLflow caps model version tag values at 5000 characters

# Short retries: a registry outage must surface quickly with a clear message (rollback still
# restores traffic, since the gateway holds the incumbent).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


class RegistryError(RuntimeError):
    """The registry could not do what a rollout needed; the message says what and where."""


class VersionNotFound(RegistryError):
    """A model version named in a run's conf or an event does not exist."""


@dataclass(frozen=True)
class VersionInfo:
    """What a rollout needs to know about one model version."""

    name: str
    version: str
    source: str
    run_id: str | None
    status: str
    stage: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_ms: int

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "") or ""
    return "RESOURCE_DOES_NOT_EXIST" in code or "NOT_FOUND" in code


class Registry:
    """Rollout-level operations on one MLflow tracking server."""

    def __init__(self, tracking_uri: str):
        if not tracking_uri:
            raise RegistryError(
                "no MLflow tracking URI: set the Airflow connection 'mlflow_default' "
                "or the env variable MLFLOW_TRACKING_URI"
            )
        import mlflow
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # What resolves models:/ and runs:/ URIs in this process (pyfunc loads, MLmodel reads,
        # holdout downloads) follows the same server, not an MLFLOW_REGISTRY_URI inherited from
        # whoever started the worker: that sent a Celery worker's loads to another registry.
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # MlflowException, requests errors: re-raise with context
            if _is_missing(e):
                raise VersionNotFound(
                    f"{what}: not found in the registry at {self.tracking_uri}"
                ) from e
            raise RegistryError(f"{what} failed at MLflow {self.tracking_uri}: {e}") from e

    # --- reading -------------------------------------------------------------------------
    def version(self, name: str, version: str | int) -> VersionInfo:
        """One version, or VersionNotFound listing the versions that do exist."""
        version = str(version)
        if not version.isdigit():
            raise VersionNotFound(
                f"model {name!r}: version must be a positive integer string, got {version!r}"
            )
        try:
            mv = self._call(
                f"model {name!r} version {version}", self.client.get_model_version, name, version
            )
        except VersionNotFound:
            known = self.versions(name) if self.model_exists(name) else []
            raise VersionNotFound(
                f"model {name!r} has no version {version} in the registry at {self.tracking_uri}; "
                f"existing versions: {known or 'none'}"
            ) from None
        return self._info(mv)

    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            source=mv.source,
            run_id=mv.run_id,
            status=str(mv.status),
            stage=getattr(mv, "current_stage", None),
            aliases=tuple(getattr(mv, "aliases", []) or []),
            tags=dict(mv.tags or {}),
            created_ms=int(mv.creation_timestamp or 0),
        )

    def model_exists(self, name: str) -> bool:
        try:
            self.client.get_registered_model(name)
            return True
        except Exception as e:
            if _is_missing(e):
                return False
            raise RegistryError(
                f"reading model {name!r} failed at MLflow {self.tracking_uri}: {e}"
            ) from e

    def versions(self, name: str) -> list[str]:
        mvs = self._call(
            f"listing versions of {name!r}",
            self.client.search_model_versions,
            f"name = '{name}'",
        )
        return sorted((str(m.version) for m in mvs), key=int)

    def all_versions(self, name: str) -> list[VersionInfo]:
        mvs = self._call(
            f"listing versions of {name!r}", self.client.search_model_versions, f"name = '{name}'"
        )
        return sorted((self._info(m) for m in mvs), key=lambda v: int(v.version))

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version an alias points at, or None when the alias is not set."""
        rm = self._call(f"model {name!r}", self.client.get_registered_model, name)
        aliases = getattr(rm, "aliases", {}) or {}
        v = aliases.get(alias)
        return str(v) if v is not None else None

    def aliases(self, name: str) -> dict[str, str]:
        rm = self._call(f"model {name!r}", self.client.get_registered_model, name)
        return {k: str(v) for k, v in (getattr(rm, "aliases", {}) or {}).items()}

    def input_schema(self, name: str, version: str) -> list[dict[str, Any]] | None:
        """Input columns of a version's signature ([{name, type}]), None when it has none."""
        from mlflow.models import get_model_info

        try:
            info = get_model_info(f"models:/{name}/{version}")
        except Exception as e:
            raise RegistryError(
                f"model {name!r} version {version}: cannot read its MLmodel ({e})"
            ) from e
        if info.signature is None or info.signature.inputs is None:
            return None
        return info.signature.inputs.to_dict()

    # --- writing -------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            f"setting alias {alias!r} of {name!r} to {version}",
            self.client.set_registered_model_alias,
            name,
            alias,
            str(version),
        )

    def clear_alias(self, name: str, alias: str, only_if_version: str | None = None) -> None:
        """Remove an alias (idempotent); with only_if_version, only when it points there."""
        current = self.alias_version(name, alias)
        if current is None or (only_if_version is not None and current != str(only_if_version)):
            return
        self._call(
            f"deleting alias {alias!r} of {name!r}",
            self.client.delete_registered_model_alias,
            name,
            alias,
        )

    def set_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        """Set `rollout.*` tags (prefix added when missing); long values are cut to fit."""
        for key, value in tags.items():
            k = key if key.startswith(TAG_PREFIX) else TAG_PREFIX + key
            v = value if isinstance(value, str) else json.dumps(value, default=str)
            if len(v) > _TAG_LIMIT:
                v = v[: _TAG_LIMIT - 3] + "..."
            self._call(
                f"tagging {name!r} version {version} with {k}",
                self.client.set_model_version_tag,
                name,
                str(version),
                k,
                v,
            )

    def set_stage(self, name: str, version: str, stage: str) -> None:
        """Legacy stages (deprecated in MLflow, still read by some teams)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._call(
                f"moving {name!r} version {version} to stage {stage}",
                self.client.transition_model_version_stage,
                name,
                str(version),
                stage,
                archive_existing_versions=False,
            )

    def record_evidence(self, name: str, version: str, stage: str, evidence: dict[str, Any]) -> str:
        """Store the full evidence JSON as an artifact of an MLflow run; return the run id.

        Tags hold the summary; the run holds everything (judge evidence can be tens of KB).
        """
        exp = self._call(
            "finding the evidence experiment",
            self.client.get_experiment_by_name,
            EVIDENCE_EXPERIMENT,
        )
        exp_id = (
            exp.experiment_id
            if exp is not None
            else self._call(
                "creating the evidence experiment",
                self.client.create_experiment,
                EVIDENCE_EXPERIMENT,
            )
        )
        run = self._call(
            "creating an evidence run",
            self.client.create_run,
            exp_id,
            tags={
                "rollout.model": name,
                "rollout.version": str(version),
                "rollout.stage": stage,
                "mlflow.runName": f"{name}-v{version}-{stage}-{int(time.time())}",
            },
        )
        run_id = run.info.run_id
        self._call(
            "uploading evidence",
            self.client.log_dict,
            run_id,
            evidence,
            f"evidence/{stage}.json",
        )
        self._call("closing the evidence run", self.client.set_terminated, run_id)
        return run_id
