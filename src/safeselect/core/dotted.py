"""Dotted names: nested mappings <-> ``{"a.b": value}`` (metric names, config keys)."""

from __future__ import annotations

from typing import Any


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested mapping to dotted keys (lists, empty mappings are leaves)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                out.update(flatten(v, key + "."))
            else:
                out[key] = v
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}; a name that is both a value and a prefix raises ValueError."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"metric name '{key}' clashes with the value at '{p}'")
            node = nxt
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"metric name '{key}' is also a prefix of other names")
        node[parts[-1]] = v
    return out
