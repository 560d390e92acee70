"""`random`: keep a seeded uniform random share of the budget (rows or response tokens)."""

from __future__ import annotations

import numpy as np

from safeselect.selection.base import Selection, SelectionContext, budget_mask


def select(ctx: SelectionContext) -> Selection:
    sel = ctx.selection
    rng = np.random.default_rng(sel.seed)
    # Random scores + the shared budget rule = a uniform random subset at the same budget as every selector.
    scores = rng.random(len(ctx.task))
    kept = budget_mask(scores, sel.ratio, sel.budget, ctx.response_tokens)
    return Selection([r.row_id for r in ctx.task], scores.tolist(), kept.tolist(), [1.0] * len(ctx.task),
                     info={"method": "random"})
