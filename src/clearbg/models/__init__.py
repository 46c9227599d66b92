"""Model families, the spec table (name -> builder, preprocessing, weights) and the hub that
resolves any model reference (name, file, ``models:/``, ``runs:/``) into a network."""

from clearbg.models.hub import ResolvedModel, create_model, resolve
from clearbg.models.specs import ModelSpec, get_spec, list_models

__all__ = ["ModelSpec", "ResolvedModel", "create_model", "get_spec", "list_models", "resolve"]
