"""Selectors: one module per method; each is registered and returns a :class:`Selection`."""
