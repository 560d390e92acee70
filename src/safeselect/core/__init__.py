"""The floor every layer stands on; it imports nothing else of the package but :mod:`safeselect.errors`."""
