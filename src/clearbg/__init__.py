"""clearbg: automated background removal at e-commerce scale.

>>> import clearbg                                                   # doctest: +SKIP
>>> clearbg.remove("photo.jpg", bg_color="#ffffff", out="web.jpg")   # doctest: +SKIP
"""

from clearbg.api import Remover, remove
from clearbg.errors import ClearbgError
from clearbg.models import create_model, get_spec, list_models

__all__ = ["ClearbgError", "Remover", "create_model", "get_spec", "list_models", "remove"]
