"""safeselect: fine-tune aligned chat models on your data without losing their safety.

Heavy dependencies (torch, transformers) are imported inside functions so that
``import safeselect`` and ``safeselect --help`` stay instant.
"""

__version__ = "0.1.0"
