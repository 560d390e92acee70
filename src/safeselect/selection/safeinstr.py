"""`safeinstr` (Bianchi et al. 2024): add safety demonstrations (harmful prompt -> refusal) to the training rows.

Two uses:

- :func:`augment` adds ``selection.safeinstr.count`` demonstrations to *any* selection
  (the pipeline calls it after every selector when the count is > 0, so
  ``method: seal`` + ``selection.safeinstr.count: 50`` is SEAL's "SEAL + SafeInstr" row).
- :func:`select`, the selector ``safeinstr`` on its own: a seeded uniform random share
  of the task rows at the budget (exactly what ``random`` keeps), plus the
  demonstrations. Keeping the budget, rather than every row, is the choice here
  because METHODS.md compares every method at the same budget, and it makes
  ``safeinstr`` vs ``random`` the clean measure of what the demonstrations add.

The demonstrations come on top of the budget (SEAL adds all 2,483 on top of its
selection); they get new row ids ``safeinstr-00000``, ... that never collide with a
task row id, are drawn without replacement with a seeded generator of their own, and
are marked ``harmful=False`` (a refusal is the safe reply). ``source``: the context's
safety reference pool (``safety_ref``), the real SafeInstr file (``safeinstr``:
``safeinstr_safety_only.json`` in the data folder) or a JSON / JSONL path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from safeselect.core.io import write_jsonl
from safeselect.core.rows import Row
from safeselect.data import loaders
from safeselect.errors import UserError
from safeselect.selection import random as random_selector
from safeselect.selection.base import Selection, SelectionContext

SAFEINSTR_FILE = "safeinstr_safety_only.json"
_STREAM = 0x5AFE  # a seed stream of its own, so adding demonstrations never shifts another selector's draws


def load_pool(source: str, ctx: SelectionContext, key: str = "selection.safeinstr.source") -> list[Row]:
    """The demonstration pool named by ``source``: ``safety_ref``, ``safeinstr`` (real file) or a row file path.

    A path is read with :func:`safeselect.data.loaders.load_rows` (JSONL, a JSON list, CSV; ``prompt`` or
    ``instruction``/``question``, and ``response`` or ``output``).
    """

    if source == "safety_ref":
        return list(ctx.safety_ref)
    if source == "safeinstr":
        return loaders.load_safeinstr(loaders.require_data_file(ctx.value("data.data_dir"), SAFEINSTR_FILE))
    if not Path(source).exists():
        raise UserError(f"{key}='{source}': not 'safety_ref', 'safeinstr' nor an existing file")
    return loaders.load_rows(source)


def fresh_ids(count: int, taken: set[str], prefix: str = "safeinstr") -> list[str]:
    """``prefix-00000`` ...; if any of them is already taken, the prefix grows a suffix until none is."""
    j = 0
    while True:
        head = prefix if j == 0 else f"{prefix}{j}"
        ids = [f"{head}-{i:05d}" for i in range(count)]
        if taken.isdisjoint(ids):
            return ids
        j += 1


ON_TOP = "+safeinstr"  # a `compare` entry "<selector>+safeinstr": that selector, demonstrations on top
# Selectors whose result is a model trained while selecting: nothing can be added to their data afterwards.
TRAINS_WHILE_SELECTING = ("dualselect",)


def base_method(entry: str) -> str:
    """The selector of a ``compare`` entry: ``seal+safeinstr`` -> ``seal``; any other entry is itself."""
    return entry[: -len(ON_TOP)] if entry.endswith(ON_TOP) else entry


def methods_used(method: str, compare: list[str]) -> set[str]:
    """The selectors a config runs: ``method`` and every ``compare`` entry, an entry ``<m>+safeinstr``
    counted as both ``m`` and ``safeinstr`` (its demonstration pool is needed)."""
    used = set()
    for entry in [method, *compare]:
        used.add(base_method(entry))
        if entry.endswith(ON_TOP):
            used.add("safeinstr")
    return used


def default_count(n_task: int) -> int:
    """Demonstrations for ``method: safeinstr`` when no count is set: 3% of the task rows (at least 1).

    Bianchi et al. (2024) found that safety examples making up about 3% of the fine-tuning data already
    restore most of the safety, and many more cause over-refusal. A default lets the `safeinstr` row sit
    in a `compare` run or plan, where a global ``selection.safeinstr.count`` would add demonstrations to
    every other selector too.
    """
    return max(1, round(0.03 * n_task))


def augment(selection: Selection, ctx: SelectionContext, count: int | None = None) -> Selection:
    """Add ``count`` (default ``selection.safeinstr.count``) demonstrations to ``selection.added`` (0 = no-op)."""
    si = ctx.selection.safeinstr
    count = si.count if count is None else count
    if count == 0 or "safeinstr" in selection.info:  # off, or already added (the `safeinstr` selector)
        return selection
    if selection.trained_model is not None:
        raise UserError("selection.safeinstr.count > 0 cannot be combined with a selector that trains while it "
                        "selects (its model is already fine-tuned); set selection.safeinstr.count=0")
    pool = load_pool(si.source, ctx)
    if count > len(pool):
        raise UserError(f"selection.safeinstr.count={count} but source '{si.source}' has only {len(pool)} rows")
    rng = np.random.default_rng([ctx.selection.seed, _STREAM])
    picks = np.sort(rng.choice(len(pool), size=count, replace=False))
    taken = set(selection.row_ids) | {r.row_id for r in selection.added}
    ids = fresh_ids(count, taken)
    added = []
    for rid, i in zip(ids, picks.tolist(), strict=True):
        src = pool[i]
        added.append(Row(row_id=rid, prompt=src.prompt, response=src.response, harmful=False, task="safety",
                         category=src.category, source=src.source or "safeinstr", meta={"from_row_id": src.row_id}))
    info = dict(selection.info)
    info["safeinstr"] = {"count": count, "source": si.source, "pool": len(pool)}
    if ctx.out_dir is not None:  # which demonstrations were added, for the audit trail
        write_jsonl(Path(ctx.out_dir) / "safeinstr_added.jsonl", [r.to_dict() for r in added])
    return dataclasses.replace(selection, added=list(selection.added) + added, info=info)


def select(ctx: SelectionContext) -> Selection:
    """SafeInstr alone: the `random` selection at the budget, plus the demonstrations.

    With ``selection.safeinstr.count`` 0 the count is :func:`default_count` of the task rows.
    """

    count = ctx.selection.safeinstr.count or default_count(len(ctx.task))
    base = random_selector.select(ctx)
    base.info = {**base.info, "method": "safeinstr", "base": "random"}
    return augment(base, ctx, count)

