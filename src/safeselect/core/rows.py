"""The row: one prompt -> response example with a stable ``row_id`` from loading to the final report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One example. ``harmful`` is ground truth when known; ``answer`` is the exact-match target for task rows."""

    row_id: str
    prompt: str
    response: str = ""
    harmful: bool | None = None
    answer: str | None = None
    task: str | None = None  # task family, e.g. "sentiment", "arithmetic", "gsm8k"
    category: str | None = None  # harm category for harmful rows
    source: str | None = None  # where the row came from (builtin, advbench, sst2, ...)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def chat(self) -> str | list[dict[str, str]]:
        """What the model is shown: the conversation before the learned reply (``meta.messages``, for rows read
        from the ``messages`` chat format with earlier turns or a system message), else the prompt alone."""
        return self.meta.get("messages") or self.prompt

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        known = {"row_id", "prompt", "response", "harmful", "answer", "task", "category", "source", "meta"}
        meta = dict(d.get("meta") or {})
        meta.update({k: v for k, v in d.items() if k not in known})
        return cls(
            row_id=str(d["row_id"]), prompt=str(d["prompt"]), response=str(d.get("response") or ""),
            harmful=d.get("harmful"), answer=None if d.get("answer") is None else str(d["answer"]),
            task=d.get("task"), category=d.get("category"), source=d.get("source"), meta=meta,
        )


@dataclass
class Bundle:
    """Everything one experiment needs, as rows.

    ``task``: the fine-tuning mix (the rows a selector chooses from).
    ``safety_ref``: harmful or risky prompts with safe replies (D_safe).
    ``align``: rows for the alignment stage (refusals + benign).
    ``eval_harmful``: held-out harmful prompts per safety set name.
    ``eval_overrefusal``: benign look-alike prompts per set name.
    ``eval_task``: held-out task prompts with answers per set name.
    """

    task: list[Row]
    safety_ref: list[Row]
    align: list[Row] = field(default_factory=list)
    eval_harmful: dict[str, list[Row]] = field(default_factory=dict)
    eval_overrefusal: dict[str, list[Row]] = field(default_factory=dict)
    eval_task: dict[str, list[Row]] = field(default_factory=dict)


def is_bad_row(row: Row) -> bool | None:
    """Ground truth of the built-in levels: True for a harmful row or a benign row that erodes safety by itself,
    False for a row that does neither, None when the row carries no ground truth (user data without labels)."""
    if row.harmful:
        return True
    if "erodes" in row.meta:
        return bool(row.meta["erodes"])
    return None if row.harmful is None else False
