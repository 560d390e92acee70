"""Configuration: the typed schema, loading (defaults < preset < overrides), and paths (presets, cache, data)."""
