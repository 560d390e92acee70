"""`loss`: keep the task rows with the lowest loss under the aligned (reference) model.

METHODS.md section 4: SEAL with the selector frozen at gamma = 0 (the ablation SEAL's
reviewers asked for) and the floor that SEAL and DualSelect must clear to justify
their cost. The intuition it tests: rows an aligned model finds unlikely (a
harmful compliant reply) have a high loss, so ranking by low loss alone may
already drop them. Score = -loss (higher = keep first); one no-grad pass over the
task rows with ``safeselect.training.losses.row_losses``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from safeselect.selection.base import Selection, SelectionContext, budget_mask
from safeselect.training.losses import row_losses


def select(ctx: SelectionContext) -> Selection:
    if ctx.load_model is None:
        raise ValueError("the loss selector needs ctx.load_model (the aligned reference model)")
    model, tok = ctx.load_model(None)
    losses = row_losses(model, tok, ctx.task, max_length=ctx.value("model.max_length"),
                        batch_size=ctx.value("eval.batch_size"),
                        show_progress=ctx.show_progress)
    del model  # the selection is all that is needed; free the copy before fine-tuning loads another
    if not np.isfinite(losses).all():
        bad = int((~np.isfinite(losses)).sum())
        raise RuntimeError(f"the reference model gave a non-finite loss on {bad} task rows; check the aligned model")
    scores = -losses
    kept = budget_mask(scores, ctx.selection.ratio, ctx.selection.budget, ctx.response_tokens)
    info: dict[str, Any] = {"method": "loss", "loss_mean": float(losses.mean()) if len(losses) else 0.0,
                            "loss_kept_mean": float(losses[kept].mean()) if kept.any() else 0.0}
    labels = [r.harmful for r in ctx.task]
    if ctx.task and all(h is not None for h in labels):
        # A diagnostic of why the baseline works or not: are harmful rows really the high-loss ones?
        h = np.asarray(labels, dtype=bool)
        if h.any():
            info["loss_harmful_mean"] = float(losses[h].mean())
        if (~h).any():
            info["loss_benign_mean"] = float(losses[~h].mean())
    return Selection([r.row_id for r in ctx.task], scores.tolist(), kept.tolist(), [1.0] * len(ctx.task), info=info)
