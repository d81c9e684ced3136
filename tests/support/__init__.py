"""Shared test helpers: real MLflow server, registered test models, the real gateway."""
