"""`full`: fine-tune on every task row (the Standard SFT reference that win rates compare against)."""

from __future__ import annotations

from safeselect.selection.base import Selection, SelectionContext


def select(ctx: SelectionContext) -> Selection:
    n = len(ctx.task)
    return Selection([r.row_id for r in ctx.task], [1.0] * n, [True] * n, [1.0] * n, info={"method": "full"})
