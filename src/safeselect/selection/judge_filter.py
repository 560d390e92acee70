"""`judge-filter`: drop the task rows a judge flags as harmful, then fill the budget at random from the rest.

What practitioners do with a moderation model before fine-tuning (METHODS.md
section 4). The judge is ``ctx.judge`` when the pipeline supplies one, else the
judge named by ``selection.judge_filter.judge`` (default ``keyword``, an offline
moderation lexicon: see ``safeselect.judges.keyword``). A verdict of None (the
judge could not decide) is counted and the row stays a candidate: undecided is
not evidence of harm. Scores: a seeded uniform draw, minus 1 for flagged rows, so
flagged rows always rank below the others and ``kept`` follows ``score``. When the
unflagged rows cannot fill the budget, every unflagged row is kept and the
shortfall is reported; flagged rows are never used to top it up.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from safeselect.judges.base import make_judge
from safeselect.selection.base import Selection, SelectionContext, budget_mask


def verdicts(ctx: SelectionContext) -> tuple[list[bool | None], str]:
    """The judge's harmful / not / undecided verdict on every task row's response, and the judge's name."""
    rows = ctx.task
    if ctx.judge is not None:
        out = list(ctx.judge(rows, [r.response for r in rows]))
        # The pipeline builds ctx.judge from selection.judge_filter.judge; a judge object may name itself.
        name = getattr(ctx.judge, "name", None) or ctx.selection.judge_filter.judge
    else:
        name = ctx.selection.judge_filter.judge
        # judges read their own settings (judges.<name>) and the device: the values this selector declares
        judge = make_judge(name, SimpleNamespace(judges=ctx.value("judges"), device=ctx.value("device")))
        out = list(judge.harmful([r.prompt for r in rows], [r.response for r in rows]))
    if len(out) != len(rows):
        raise ValueError(f"judge '{name}' gave {len(out)} verdicts for {len(rows)} rows")
    return out, str(name)


def select(ctx: SelectionContext) -> Selection:
    sel = ctx.selection
    n = len(ctx.task)
    verdict, name = verdicts(ctx)
    flagged = np.array([v is True for v in verdict], dtype=bool)
    undecided = int(sum(v is None for v in verdict))
    rng = np.random.default_rng(sel.seed)
    scores = rng.random(n) - flagged.astype(np.float64)
    kept = budget_mask(scores, sel.ratio, sel.budget, ctx.response_tokens, eligible=~flagged)
    info: dict[str, Any] = {"method": "judge-filter", "judge": name, "flagged": int(flagged.sum()),
                            "undecided": undecided}
    if sel.budget == "rows" and int(kept.sum()) < int(round(sel.ratio * n)):
        info["budget_shortfall_rows"] = int(round(sel.ratio * n)) - int(kept.sum())
    labels = [r.harmful for r in ctx.task]
    if n and all(h is not None for h in labels):
        # How good a moderation filter the judge was on this data (ground truth of the built-in benchmark).
        h = np.asarray(labels, dtype=bool)
        tp = int((flagged & h).sum())
        info["judge_precision"] = tp / int(flagged.sum()) if flagged.any() else None
        info["judge_recall"] = tp / int(h.sum()) if h.any() else None
    return Selection([r.row_id for r in ctx.task], scores.tolist(), kept.tolist(), [1.0] * n, info=info)
