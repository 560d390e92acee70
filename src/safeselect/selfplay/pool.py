"""The prompt pool with lineage: every prompt eva ever saw, where it came from, and what it carries.

A human prompt has ``origin="human"``, depth 0 and keeps the ground truth of
its row (``harmful``, ``answer``, ``task``). An evolved prompt records its
``parent`` id, its ``depth`` (parent depth + 1; a chain of 4 rewrites reaches
depth 4), the ``mutation`` that made it and the ``iteration``. It inherits the
parent's ``harmful`` flag (a rewrite of a harmful request is taken to stay
harmful, and a benign one benign: an assumption, stated in docs/results.md)
but never the ``answer``, which a rewrite invalidates.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from safeselect.core.rows import Row


@dataclass
class PromptEntry:
    prompt_id: str
    text: str
    origin: str = "human"  # human | evolved
    parent: str | None = None
    depth: int = 0
    mutation: str | None = None
    iteration: int = 0
    harmful: bool | None = None
    answer: str | None = None
    task: str | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d

    def as_row(self) -> Row:
        """A Row view (for the rule judge and the exact-answer check)."""
        return Row(row_id=self.prompt_id, prompt=self.text, harmful=self.harmful, answer=self.answer,
                   task=self.task, category=self.category, source=self.origin)

    @classmethod
    def from_row(cls, row: Row) -> PromptEntry:
        return cls(prompt_id=row.row_id, text=row.prompt, origin="human", harmful=row.harmful, answer=row.answer,
                   task=row.task, category=row.category)


def norm_key(text: str) -> str:
    """Duplicate key: case and whitespace do not make a prompt new."""
    return re.sub(r"\s+", " ", text).strip().lower()


class PromptPool:
    """All prompts by id, in insertion order, with a duplicate index on normalised text."""

    def __init__(self) -> None:
        self.entries: dict[str, PromptEntry] = {}
        self._keys: set[str] = set()

    def add(self, entry: PromptEntry) -> None:
        if entry.prompt_id in self.entries:
            raise ValueError(f"duplicate prompt id {entry.prompt_id}")
        self.entries[entry.prompt_id] = entry
        self._keys.add(norm_key(entry.text))

    def has_text(self, text: str) -> bool:
        return norm_key(text) in self._keys

    def get(self, prompt_id: str) -> PromptEntry:
        return self.entries[prompt_id]

    def __len__(self) -> int:
        return len(self.entries)

    def evolve_child(self, parent: PromptEntry, text: str, mutation: str, iteration: int) -> PromptEntry:
        """A new evolved entry under ``parent`` (id ``<parent id>><iteration>.<n>``), added to the pool."""
        n = sum(1 for e in self.entries.values() if e.parent == parent.prompt_id)
        child = PromptEntry(prompt_id=f"{parent.prompt_id}>{iteration}.{n}", text=text, origin="evolved",
                            parent=parent.prompt_id, depth=parent.depth + 1, mutation=mutation, iteration=iteration,
                            harmful=parent.harmful, answer=None, task=parent.task, category=parent.category)
        self.add(child)
        return child

    def records(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries.values()]
