"""Model families and the one registry of model specs (name -> builder, preprocessing, weights)."""

from clearbg.models.registry import ModelSpec, create_model, get_spec, list_models

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models"]
