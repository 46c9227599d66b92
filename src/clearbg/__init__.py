"""clearbg: automated background removal at e-commerce scale.

>>> import clearbg                                                   # doctest: +SKIP
>>> clearbg.remove("photo.jpg", bg_color="#ffffff", out="web.jpg")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from importlib import metadata

from clearbg.errors import ClearbgError

__all__ = ["ClearbgError", "Remover", "__version__", "create_model", "get_spec", "list_models", "remove", "resolve"]

try:
    __version__ = metadata.version("clearbg")
except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, never installed
    __version__ = "0+unknown"

# The model-side names pull in PyTorch (~1.5 s); data-only work (prepare, its worker
# processes) should not pay for it, so they load on first use.
_LAZY = {
    "Remover": "clearbg.removal.api",
    "remove": "clearbg.removal.api",
    "create_model": "clearbg.models",
    "get_spec": "clearbg.models",
    "list_models": "clearbg.models",
    "resolve": "clearbg.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clearbg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
