"""One small registry for what users pick by name: selectors, judges, models, presets, data builders.

Entries are registered as ``"module:attribute"`` strings and imported only when
used, so listing them (``safeselect ls``) never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from safeselect.errors import UserError, suggest


@dataclass(frozen=True)
class Entry:
    """A named component: where it lives, a one-line summary, the paper, and how faithful it is."""

    name: str
    target: str
    summary: str = ""
    paper: str = ""
    status: str = "faithful"  # or "partial: <what is missing>"

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj


class Registry:
    """Names -> entries for one kind of component, with did-you-mean on a typo."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, summary: str = "", paper: str = "", status: str = "faithful") -> None:
        self._entries[name] = Entry(name, target, summary, paper, status)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} '{name}'{suggest(name, self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """Import and return the component registered under ``name``."""
        return self.entry(name).load()

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries


SELECTORS = Registry("selector")
JUDGES = Registry("judge")
MODELS = Registry("model")
DATASETS = Registry("data builder")
REWARDS = Registry("reward")

_LOADED = False


def load_catalog() -> None:
    """Fill the registries from :mod:`safeselect.catalog` (cheap: strings only)."""
    global _LOADED
    if not _LOADED:
        importlib.import_module("safeselect.catalog")
        _LOADED = True


def registry(kind: str) -> Registry:
    load_catalog()
    table = {"selectors": SELECTORS, "judges": JUDGES, "models": MODELS, "data": DATASETS, "rewards": REWARDS}
    if kind not in table:
        raise UserError(f"unknown registry '{kind}'{suggest(kind, list(table))}")
    return table[kind]
