"""The MLflow Model Registry stage: register a model with its evaluation, promote it through the
paired champion/challenger gate, roll back. Reading ``models:/`` URIs is not here but in
:mod:`clearbg.models.mlflow_uris`, so loading a model never depends on this stage."""

from clearbg.registry.promote import PROMOTE_EXPERIMENT, Promotion, promote, rollback
from clearbg.registry.register import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    REGISTER_EXPERIMENT,
    Registration,
    register_model,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "PREVIOUS_CHAMPION", "PROMOTE_EXPERIMENT", "REGISTER_EXPERIMENT",
    "Promotion", "Registration", "promote", "register_model", "rollback",
]
