"""safeselect: fine-tune aligned chat models on your data without losing their safety.

The Python API (:mod:`safeselect.api`) is reachable from here: ``safeselect.run``,
``select``, ``evaluate``, ``export``, ``load_model``, ``load_config`` and ``RunResult``.
They are loaded on first use (PEP 562), and heavy dependencies (torch, transformers)
are imported inside functions, so ``import safeselect`` and ``safeselect --help`` stay instant.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("run", "select", "evaluate", "export", "load_model", "load_config", "RunResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from safeselect import api

        return getattr(api, name)
    raise AttributeError(f"module 'safeselect' has no attribute {name!r}")
