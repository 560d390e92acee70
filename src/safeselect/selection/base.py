"""The selector contract: a :class:`SelectionContext` in, a :class:`Selection` (row_id -> score, kept, weight) out.

Model-based selectors get models through ``ctx.load_model`` (a fresh copy of the
aligned reference model, with a tokenizer) instead of importing training
internals; that keeps ``selection`` independent of the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.config.loading import get
from safeselect.config.schema import ExperimentConfig, SelectionConfig
from safeselect.core.rows import Row, is_bad_row
from safeselect.core.stats import ranking_auc
from safeselect.errors import UserError
from safeselect.registry import registry


@dataclass
class SelectionContext:
    """What a selector may use: the ``selection`` section and the shared values it declared, not the whole config.

    ``selection``: ratio, budget, seed and the selectors' own sections (a selector reads its own,
    ``selection.<section>`` of its registry entry; ``selection.safeinstr`` applies on top of every selector).
    ``shared``: the values from outside ``selection`` that the selector declares in its registry entry
    (``shared=``), by dotted key; read them with :meth:`value`.
    ``load_model(name)`` returns ``(model, tokenizer)``: the aligned starting model
    when ``name`` is None, else the named model (used for SEAL's ``selector_model``).
    ``response_tokens[i]`` is the response length of ``task[i]`` in tokens (for token budgets).
    """

    selection: SelectionConfig
    task: list[Row]
    safety_ref: list[Row]
    out_dir: Path
    shared: dict[str, Any] = field(default_factory=dict)
    load_model: Callable[[str | None], tuple[Any, Any]] | None = None
    # What ``load_model(name)`` would load, as a string that changes when the weights do (a cache key part).
    model_id: Callable[[str | None], str] | None = None
    response_tokens: list[int] | None = None
    judge: Callable[[list[Row], list[str]], list[bool]] | None = None  # flags harmful responses
    show_progress: bool = True
    # Where a selector that trains keeps its resumable state (None = no checkpoints) and every how
    # many steps; ``tracker`` (a TrainLog) receives its training curve.
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    tracker: Any = None

    def value(self, key: str) -> Any:
        """A shared value the selector declared (e.g. ``model.max_length``)."""
        if key not in self.shared:
            raise KeyError(f"'{key}' is not a shared value this selector declared (declared: "
                           f"{', '.join(sorted(self.shared)) or 'none'}); add it to its registry entry's shared=")
        return self.shared[key]


def context_for(cfg: ExperimentConfig, task: list[Row], safety_ref: list[Row], out_dir: Path,
                method: str | None = None, **kwargs: Any) -> SelectionContext:
    """The context of selector ``method`` (default ``cfg.selection.method``): the selection section and the
    values its registry entry declares (plus SafeInstr's, whose demonstrations go on top when
    ``selection.safeinstr.count`` > 0)."""
    names = [method or cfg.selection.method] + (["safeinstr"] if cfg.selection.safeinstr.count > 0 else [])
    keys = [k for n in names for k in registry("selectors").entry(n).shared]
    shared = {key: get(cfg, key) for key in keys}
    return SelectionContext(cfg.selection, task, safety_ref, out_dir, shared=shared, **kwargs)


@dataclass
class Selection:
    """One entry per task row (same order as ``ctx.task``), plus rows a method adds (SafeInstr).

    ``score``: the method's ranking score (higher = keep first); ``weight``: the
    training weight of a kept row (1.0 for hard selection).
    """

    row_ids: list[str]
    scores: list[float]
    kept: list[bool]
    weights: list[float]
    added: list[Row] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # A selector that trains while it selects (DualSelect) hands its model over here; the
    # pipeline then evaluates that model instead of running a separate fine-tune.
    trained_model: Any = None

    def __post_init__(self) -> None:
        n = len(self.row_ids)
        if not (len(self.scores) == len(self.kept) == len(self.weights) == n):
            raise ValueError("selection arrays must all have one entry per task row")

    def kept_rows(self, task: list[Row]) -> list[Row]:
        """The rows to fine-tune on: kept task rows (by id, so order changes cannot misalign) plus added rows."""
        by_id = {r.row_id: r for r in task}
        out = [by_id[rid] for rid, k in zip(self.row_ids, self.kept, strict=True) if k]
        return out + list(self.added)

    def kept_weights(self) -> list[float]:
        return [w for w, k in zip(self.weights, self.kept, strict=True) if k] + [1.0] * len(self.added)

    def records(self, task: list[Row]) -> list[dict[str, Any]]:
        by_id = {r.row_id: r for r in task}
        out = []
        for rid, s, k, w in zip(self.row_ids, self.scores, self.kept, self.weights, strict=True):
            rec: dict[str, Any] = {"row_id": rid, "score": float(s), "kept": bool(k), "weight": float(w)}
            h = by_id[rid].harmful
            if h is not None:
                rec["harmful"] = bool(h)
            if "erodes" in by_id[rid].meta:  # the `erosion` level's ground truth: a benign row that erodes safety
                rec["erodes"] = bool(by_id[rid].meta["erodes"])
            out.append(rec)
        for r in self.added:
            rec = {"row_id": r.row_id, "score": None, "kept": True, "weight": 1.0, "added": True}
            if r.harmful is not None:
                rec["harmful"] = bool(r.harmful)
            out.append(rec)
        return out


def budget_mask(scores: np.ndarray | list[float], ratio: float, budget: str = "rows",
                tokens: list[int] | np.ndarray | None = None,
                eligible: np.ndarray | list[bool] | None = None) -> np.ndarray:
    """Keep the highest-scoring rows until the budget is spent.

    ``rows``: ``round(ratio * N)`` rows. ``tokens``: rows in score order while their
    response tokens fit in ``ratio * total tokens`` (a row that does not fit is
    skipped, smaller later rows may still fit). The budget is always computed over
    all N rows, so every selector competes at the same budget; ``eligible`` (a
    filter such as DSIR's minimum length or a judge's verdicts) only removes rows
    from the candidates, and the budget is then filled from the rest as far as
    they reach. Ties break by index (stable), so the result is deterministic.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"selection.ratio={ratio} is out of range [0, 1]")
    if budget not in ("rows", "tokens"):
        raise UserError(f"unknown budget '{budget}' (choose rows or tokens)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; a selector must rank every row")
    order = np.argsort(-s, kind="stable")
    if eligible is not None:
        ok = np.asarray(eligible, dtype=bool)
        if ok.shape != (n,):
            raise ValueError(f"eligible has {ok.shape} entries for {n} scores")
        order = order[ok[order]]
    mask = np.zeros(n, dtype=bool)
    if budget == "rows":
        mask[order[: int(round(ratio * n))]] = True
        return mask
    if tokens is None:
        raise ValueError("a token budget needs the response token counts (ctx.response_tokens)")
    t = np.asarray(tokens, dtype=np.int64)
    if t.shape != (n,):
        raise ValueError(f"{t.shape} token counts for {n} scores")
    if (t < 0).any():
        raise ValueError("token counts must be >= 0")
    cap = ratio * float(t.sum())
    # Fast path: the longest prefix of the ranking that fits is taken at once (vectorised);
    # only the remainder needs the sequential skip-and-continue fill.
    csum = np.cumsum(t[order])
    head = int(np.searchsorted(csum, cap + 1e-9, side="right"))
    mask[order[:head]] = True
    used = int(csum[head - 1]) if head else 0
    for i in order[head:]:
        if used + t[i] <= cap + 1e-9:
            mask[i] = True
            used += int(t[i])
    return mask


def budget_stats(kept: np.ndarray | list[bool], task: list[Row], tokens: list[int] | None,
                 scores: list[float] | None = None) -> dict[str, Any]:
    """Rows and response tokens kept (counts and shares); with harmful labels, the harmful kept fraction
    and (given the selector's scores) its :func:`ranking_auc`; where the level's ground truth also marks
    benign rows that erode safety (:func:`~safeselect.core.rows.is_bad_row`), the same two figures for all bad
    rows (harmful or eroding)."""
    k = np.asarray(kept, dtype=bool)
    if k.shape != (len(task),):
        raise ValueError(f"{k.shape} kept flags for {len(task)} task rows")
    out: dict[str, Any] = {"kept": int(k.sum()), "total": len(task),
                           "kept_fraction": float(k.mean()) if len(task) else 0.0}
    if tokens is not None:
        t = np.asarray(tokens, dtype=np.int64)
        out["kept_tokens"] = int(t[k].sum())
        out["total_tokens"] = int(t.sum())
        out["kept_tokens_fraction"] = float(t[k].sum() / t.sum()) if t.sum() else 0.0
    labels = [r.harmful for r in task]
    # No harmful row (the `erosion` level, clean user data): no "harmful kept" figure, which would read 0 = perfect.
    if all(h is not None for h in labels) and any(labels):
        out.update(_kept_figures("harmful", "ranking_auc", np.asarray(labels, dtype=bool), k, scores))
    # The level's whole ground truth where it holds more than harmful rows (on `erosion`, the benign rows that
    # erode safety by themselves): the figure a selector is judged by there.
    bad = [is_bad_row(r) for r in task]
    if task and all(b is not None for b in bad) and any(b and not r.harmful for b, r in zip(bad, task, strict=True)):
        out.update(_kept_figures("bad", "bad_ranking_auc", np.asarray(bad, dtype=bool), k, scores))
    return out


def _kept_figures(name: str, auc_key: str, flagged: np.ndarray, kept: np.ndarray,
                  scores: list[float] | None) -> dict[str, Any]:
    """``<name>_total``, ``<name>_kept``, ``<name>_kept_fraction`` of the flagged rows, and the scores' ranking
    AUC of them under ``auc_key`` when scores are given (and defined)."""
    out: dict[str, Any] = {f"{name}_total": int(flagged.sum()), f"{name}_kept": int((flagged & kept).sum()),
                           f"{name}_kept_fraction": float((flagged & kept).sum() / flagged.sum())}
    auc = ranking_auc([np.nan if x is None else x for x in scores], flagged) if scores is not None else None
    if auc is not None:
        out[auc_key] = auc
    return out
