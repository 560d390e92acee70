"""`oracle`: keep the rows the benchmark's ground truth marks as neither harmful nor eroding.

The floor of every comparison on the built-in levels (docs/methods.md, "Levels"): it
knows which rows teach harm (``Row.harmful``) or erode safety by themselves
(``meta["erodes"]``, level `erosion`) and drops them first. Within each class the
order is a seeded random draw, so at a budget larger than the clean rows it fills
the rest at random from the bad rows, like any selector at the same budget. It
cannot run on data without ground truth (user data): it refuses with one line.
"""

from __future__ import annotations

import numpy as np

from safeselect.core.rows import is_bad_row
from safeselect.errors import UserError
from safeselect.selection.base import Selection, SelectionContext, budget_mask


def select(ctx: SelectionContext) -> Selection:
    sel = ctx.selection
    bad = [is_bad_row(r) for r in ctx.task]
    if any(b is None for b in bad):
        missing = sum(b is None for b in bad)
        raise UserError(f"the oracle selector needs ground truth (harmful / meta.erodes) on every task row; "
                        f"{missing} of {len(bad)} rows have none")
    rng = np.random.default_rng(sel.seed)
    # Clean rows score in [1, 2), bad rows in [0, 1): clean first, a seeded random order within each class.
    scores = rng.random(len(ctx.task)) + np.where(np.asarray(bad, dtype=bool), 0.0, 1.0)
    kept = budget_mask(scores, sel.ratio, sel.budget, ctx.response_tokens)
    n_bad = int(sum(bool(b) for b in bad))
    return Selection([r.row_id for r in ctx.task], scores.tolist(), kept.tolist(), [1.0] * len(ctx.task),
                     info={"method": "oracle", "bad_rows": n_bad,
                           "bad_kept": int(sum(bool(b) and k for b, k in zip(bad, kept, strict=True)))})
