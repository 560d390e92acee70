"""`dualselect`: coupled task-reference selection while training (METHODS.md section 3, arXiv 2606.09866).

Read top to bottom: the small pure maths (scores, weights, budget, correction,
the top-K reference heap), one refresh (:func:`refresh_references`) and one
step (:func:`filtered_step`), the loop (:func:`train_dualselect`), then the
selector entry point (:func:`select`).

The loop, on a fresh LoRA adapter over the aligned model:

1. warm-up: ``warmup_steps`` plain SFT steps on random task batches; their
   summed gradient is the task direction d;
2. refresh (every ``refresh_every`` filtered steps, 0 = at the start of each
   epoch): each reference j gets loss r_j, gradient h_j, conflict
   c_j = -cos(h_j, d), score s_j = mu_ref r_j + nu c_j; the pool streams through
   a top-K heap (K = ``ref_budget`` or ceil(0.1 M)) so at most K gradients are
   held; g_ref = weighted mean of the kept h_j (uniform, or q_j ∝ exp(s_j/tau_ref));
3. every mini-batch of ``batch_size`` task rows: loss l_i, gradient g_i,
   a_i = cos(g_i, g_ref), t_i = mu_task l_i - nu a_i; keep the lowest t_i within
   the budget (``selection.ratio`` of rows or response tokens, carried across
   batches so an epoch spends exactly the budget), weights uniform (hard) or
   ∝ exp(-t_i/tau_task) (soft); g_task = weighted mean of the kept g_i;
4. G = g_task + rho g_ref (``additive``), A-GEM projection first (``project``)
   or g_task alone (``none``); clip; AdamW step;
5. at each refresh, d = mean of the uncorrected g_task of the period just ended.

Per-example gradients come from :mod:`safeselect.training.per_example` (one
batched pass, not one backward per row as in the released code).

Files in ``ctx.out_dir``: ``references.jsonl`` (one line per refresh: the kept
references with loss, conflict, score and weight) and ``selection_periods.jsonl``
(one line per period: rows used and their weights). The returned
:class:`Selection` marks a row kept when any step trained on it (warm-up
included), scores rows by -mean t_i, and hands over the trained model
(``use_trained_model: false`` leaves the pipeline to fine-tune afresh on it).

Choices where METHODS.md leaves a detail open:

- soft task weights are truncated to the budget like the hard ones (softmin
  over the kept rows), so both modes train on the same share of the data;
- ``kl`` is KL(p_aligned || p_theta) per next-token distribution at the
  reply positions, teacher-forced; with LoRA the aligned model is the same
  module with the adapter off (no second copy);
- no warm-up leaves d = 0, and every conflict is then 0 (s_j = mu_ref r_j).

``retention`` (continual learning): the references are rows of an earlier
task instead of safety rows, and the figure to read is that task's accuracy
after training. The references come from ``data.safety_ref.source`` (a JSONL of
old-task rows with their answers as responses) and the old task's held-out rows
from ``data.eval_task_path``, which the pipeline scores as ``task.<set>.accuracy``;
the selector refuses harmful reference rows in this mode and logs the
references as ``old_task``.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.config.schema import DualSelectConfig
from safeselect.core.io import write_jsonl
from safeselect.core.rows import Row
from safeselect.data.builtin import lookalike_refs
from safeselect.errors import UserError
from safeselect.models import add_lora
from safeselect.selection.base import Selection, SelectionContext
from safeselect.training.batching import length_chunks
from safeselect.training.encode import collate, encode_rows
from safeselect.training.losses import per_row_loss
from safeselect.training.per_example import (
    assign_flat_grad,
    flatten_param_grads,
    per_example_grads,
    resolve_method,
)
from safeselect.training.sft import autocast

# ----------------------------------------------------------------------------- pure maths


def cosines(rows: Any, vector: Any, eps: float = 1e-12) -> Any:
    """cos(rows_i, vector) for each row of a [B, P] tensor; 0 where either side is (numerically) zero.

    The zero case is not a corner: d is zero with no warm-up, and the KL
    reference gradient is exactly zero at the start (METHODS.md 3.6).
    """
    import torch

    rows = rows.float()
    v = vector.float()
    vn = torch.linalg.vector_norm(v)
    rn = torch.linalg.vector_norm(rows, dim=1)
    denom = rn * vn
    out = (rows @ v) / denom.clamp(min=eps)
    return torch.where(denom > eps, out, torch.zeros_like(out))


def reference_scores(losses: np.ndarray, conflicts: np.ndarray, mu_ref: float, nu: float) -> np.ndarray:
    """s_j = mu_ref * r_j + nu * c_j (high preservation loss and high conflict first)."""
    return mu_ref * np.asarray(losses, dtype=np.float64) + nu * np.asarray(conflicts, dtype=np.float64)


def task_scores(losses: np.ndarray, compat: np.ndarray, mu_task: float, nu: float) -> np.ndarray:
    """t_i = mu_task * l_i - nu * a_i (low is good)."""
    return mu_task * np.asarray(losses, dtype=np.float64) - nu * np.asarray(compat, dtype=np.float64)


def reference_budget(ref_budget: int, pool: int) -> int:
    """K_ref: ``ref_budget``, or ceil(0.1 * pool) when 0; never more than the pool, at least 1."""
    if pool <= 0:
        return 0
    k = ref_budget if ref_budget > 0 else math.ceil(0.1 * pool)
    return max(1, min(k, pool))


def softmax(x: np.ndarray, tau: float) -> np.ndarray:
    """softmax(x / tau); tau = 0 puts all weight on the maximum (ties share it equally)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    if tau <= 0:
        top = x == x.max()
        return top / top.sum()
    z = (x - x.max()) / tau
    e = np.exp(z)
    return e / e.sum()


def reference_weights(scores: np.ndarray, mode: str, tau_ref: float) -> np.ndarray:
    """Weights q of the kept references (sum 1): uniform (hard) or ∝ exp(s_j / tau_ref) (soft).

    Truncating q ∝ exp(s/tau) to the top K and renormalising is the same as the
    softmax over the kept scores, which is what is computed.
    """
    s = np.asarray(scores, dtype=np.float64)
    if mode == "hard":
        return np.full(s.shape, 1.0 / max(1, s.size))
    return softmax(s, tau_ref)


def task_weights(scores: np.ndarray, mode: str, tau_task: float) -> np.ndarray:
    """Weights w of the kept task rows (sum 1): uniform (hard) or softmin ∝ exp(-t_i / tau_task) (soft)."""
    t = np.asarray(scores, dtype=np.float64)
    if mode == "hard":
        return np.full(t.shape, 1.0 / max(1, t.size))
    return softmax(-t, tau_task)


def correct(g_task: Any, g_ref: Any, rho: float, correction: str) -> Any:
    """The step direction G from the task gradient and the fixed reference gradient.

    ``additive``: G = g_task + rho * g_ref (the released code). ``project``
    (A-GEM): when <g_task, g_ref> < 0, first remove from g_task its component
    along g_ref, then add rho * g_ref. ``none``: G = g_task.
    """
    if correction == "none":
        return g_task.clone()
    if correction == "project":
        dot = float(g_task @ g_ref)
        gg = float(g_ref @ g_ref)
        if dot < 0 and gg > 0:
            g_task = g_task - (dot / gg) * g_ref
        return g_task + rho * g_ref
    if correction == "additive":
        return g_task + rho * g_ref
    raise UserError(f"unknown correction '{correction}' (choose additive, project or none)")


class TopK:
    """Streaming top-K by score with a min-heap: at most K payloads (reference gradients) are ever held.

    Ties keep the lower index (the heap evicts the higher index first), so the
    result does not depend on the order rows arrive in.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[float, int, Any]] = []

    def wants(self, score: float, index: int) -> bool:
        """Would ``(score, index)`` enter the heap? Lets the caller skip copying a payload that would not."""
        if self.k <= 0:
            return False
        return len(self._heap) < self.k or (score, -index) > self._heap[0][:2]

    def push(self, score: float, index: int, payload: Any) -> None:
        if not self.wants(score, index):
            return
        item = (float(score), -index, payload)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)

    def __len__(self) -> int:
        return len(self._heap)

    def items(self) -> list[tuple[float, int, Any]]:
        """(score, index, payload), best first."""
        return [(s, -ni, p) for s, ni, p in sorted(self._heap, key=lambda t: (t[0], t[1]), reverse=True)]


class BudgetTracker:
    """Per-batch share of the budget, carried over so that one epoch spends exactly ``ratio`` of it.

    ``rows``: after the rows seen so far, round(ratio * seen) rows have been
    kept (the same count ``budget_mask`` keeps over the whole set). ``tokens``:
    rows in score order while their response tokens fit in
    ratio * (tokens seen) - (tokens kept), skipping a row that does not fit.
    A round(ratio * B) per batch would drift (0.8 of 8 rows is 6, i.e. 75%).
    """

    def __init__(self, ratio: float, budget: str) -> None:
        if budget not in ("rows", "tokens"):
            raise UserError(f"unknown budget '{budget}' (choose rows or tokens)")
        self.ratio, self.budget = ratio, budget
        self.seen = self.kept = 0
        self.seen_tokens = self.kept_tokens = 0

    def reset(self) -> None:
        self.seen = self.kept = self.seen_tokens = self.kept_tokens = 0

    def take(self, scores: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
        """Mask of the rows to keep in this batch, lowest scores first (ties by position)."""
        t = np.asarray(scores, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        mask = np.zeros(t.size, dtype=bool)
        self.seen += t.size
        if self.budget == "rows":
            k = int(round(self.ratio * self.seen)) - self.kept
            k = max(0, min(k, t.size))
            mask[order[:k]] = True
            self.kept += k
            return mask
        if tokens is None:
            raise ValueError("a token budget needs the response token counts")
        tok = np.asarray(tokens, dtype=np.int64)
        self.seen_tokens += int(tok.sum())
        cap = self.ratio * self.seen_tokens - self.kept_tokens
        for i in order:
            if tok[i] <= cap + 1e-9:
                mask[i] = True
                cap -= tok[i]
                self.kept_tokens += int(tok[i])
        self.kept += int(mask.sum())
        return mask


# ----------------------------------------------------------------------------- losses


def reference_kl_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Per-row KL(p_aligned || p_theta) averaged over the reply positions; ``batch["ref_logprobs"]``: [B, T, V].

    The positions are those the NLL would learn (labels != -100): the safe reply,
    teacher-forced. Zero, with zero gradient, while theta is the aligned model.
    """
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    ref = batch["ref_logprobs"][:, :-1].float()
    mask = batch["labels"][:, 1:] != -100
    kl = (ref.exp() * (ref - logp)).sum(dim=-1)
    return (kl * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def aligned_logprobs_fn(model: Any) -> Any:
    """A no-grad function batch -> log-probs [B, T, V] of the aligned starting model.

    With LoRA the starting model is the same module with the adapter switched
    off (no second copy); without LoRA a frozen copy is taken now, before training.
    """
    import copy

    import torch

    if hasattr(model, "disable_adapter"):
        def fn(batch: dict[str, Any]) -> Any:
            with torch.no_grad(), model.disable_adapter():
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return torch.log_softmax(out.logits.float(), dim=-1)
        return fn
    frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def fn_copy(batch: dict[str, Any]) -> Any:
        with torch.no_grad():
            out = frozen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return torch.log_softmax(out.logits.float(), dim=-1)
    return fn_copy


# ----------------------------------------------------------------------------- one refresh, one step


def amp_loss(loss_fn: Any, mixed_precision: str) -> Any:
    """``loss_fn`` with its forward pass under ``finetune.mixed_precision``'s autocast (bf16 or none).

    Only the forward: the per-example gradients' outer products, their cosines with the reference
    gradient and every weight and score stay float32 (``per_example_grads`` casts what it captured to
    float32 before any product), so bf16 changes the activations a gradient is made of, as in the
    plain fine-tune, and nothing downstream of it.
    """
    if mixed_precision == "no":
        return loss_fn

    def fn(model: Any, batch: dict[str, Any]) -> Any:
        with autocast(next(model.parameters()).device.type, mixed_precision):
            return loss_fn(model, batch).float()

    return fn


def apply_step(model: Any, opt: Any, flat: Any, max_grad_norm: float) -> float:
    """Set the trainable grads to ``flat``, clip, take the optimiser step; returns the norm before clipping."""
    import torch

    assign_flat_grad(model, flat)
    params = [p for p in model.parameters() if p.requires_grad]
    if max_grad_norm > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    else:
        norm = float(torch.linalg.vector_norm(flat))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


def refresh_references(model: Any, batches: Any, d: Any, ds: DualSelectConfig, pool: int, *, method: str = "auto",
                       ref_logprobs: Any = None, mixed_precision: str = "no"
                       ) -> tuple[Any, list[dict[str, Any]], dict[str, float]]:
    """Score the reference pool against the task direction ``d`` and build g_ref (METHODS.md 3.2).

    ``batches`` yields ``(indices, batch)`` over the pool. Each chunk's
    per-example gradients are scored and only those entering the top-K heap are
    copied, so at most K reference gradients (plus one chunk) are alive.
    Returns g_ref, the kept references best first (index, loss, conflict, score,
    weight) and pool statistics.
    """
    import torch

    loss_fn = amp_loss(reference_kl_loss if ds.ref_loss == "kl" else per_row_loss, mixed_precision)
    heap = TopK(reference_budget(ds.ref_budget, pool))
    losses_all, conf_all = np.zeros(pool), np.zeros(pool)
    for idx, batch in batches:
        if ds.ref_loss == "kl":
            batch["ref_logprobs"] = ref_logprobs(batch)
        losses, h = per_example_grads(model, batch, loss_fn, method)
        conf = (-cosines(h, d)).cpu().numpy().astype(np.float64)
        lo = losses.cpu().numpy().astype(np.float64)
        sc = reference_scores(lo, conf, ds.mu_ref, ds.nu)
        for r, j in enumerate(idx):
            losses_all[j], conf_all[j] = lo[r], conf[r]
            if heap.wants(sc[r], int(j)):
                # clone: a view would keep the whole [b, P] chunk alive inside the heap.
                heap.push(sc[r], int(j), h[r].clone())
        del h
    kept = heap.items()
    q = reference_weights(np.array([s for s, _, _ in kept]), ds.mode, ds.tau_ref)
    g_ref = torch.zeros_like(d)
    for w, (_, _, hj) in zip(q, kept, strict=True):
        g_ref += float(w) * hj
    selected = [{"index": j, "loss": float(losses_all[j]), "conflict": float(conf_all[j]), "score": float(s),
                 "weight": float(w)} for w, (s, j, _) in zip(q, kept, strict=True)]
    stats = {"pool_mean_loss": float(losses_all.mean()), "pool_mean_conflict": float(conf_all.mean()),
             "d_norm": float(torch.linalg.vector_norm(d)), "g_ref_norm": float(torch.linalg.vector_norm(g_ref))}
    return g_ref, selected, stats


@dataclass
class StepResult:
    """One filtered step: every row's loss and score, which rows were kept and with what weight."""

    losses: np.ndarray
    scores: np.ndarray
    keep: np.ndarray
    weights: np.ndarray  # over the kept rows, sum 1
    g_task: Any  # the uncorrected task gradient (None when no row was kept)
    grad_norm: float = 0.0


def filtered_step(model: Any, opt: Any, batch: dict[str, Any], g_ref: Any, ds: DualSelectConfig,
                  tracker: BudgetTracker, tokens: np.ndarray | None = None, method: str = "auto",
                  mixed_precision: str = "no") -> StepResult:
    """Score a task mini-batch by compatibility with g_ref, keep within the budget, take the corrected step."""
    import torch

    losses, g = per_example_grads(model, batch, amp_loss(per_row_loss, mixed_precision), method)
    a = cosines(g, g_ref).cpu().numpy().astype(np.float64)
    lo = losses.cpu().numpy().astype(np.float64)
    t = task_scores(lo, a, ds.mu_task, ds.nu)
    keep = tracker.take(t, tokens)
    if not keep.any():
        return StepResult(lo, t, keep, np.zeros(0), None)
    w = task_weights(t[keep], ds.mode, ds.tau_task)
    g_task = torch.as_tensor(w, dtype=g.dtype, device=g.device) @ g[torch.as_tensor(keep, device=g.device)]
    norm = apply_step(model, opt, correct(g_task, g_ref, ds.rho, ds.correction), ds.max_grad_norm)
    return StepResult(lo, t, keep, w, g_task, norm)


# ----------------------------------------------------------------------------- the loop


@dataclass
class DualSelectResult:
    """What the coupled loop produced: per-row statistics, the logs, and timing."""

    score_sum: np.ndarray
    score_count: np.ndarray
    weight_sum: np.ndarray
    used_count: np.ndarray
    references: list[dict[str, Any]] = field(default_factory=list)
    periods: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def train_dualselect(model: Any, tok: Any, task: list[Row], refs: list[Row], ds: DualSelectConfig, *,
                     ratio: float, budget: str = "rows", tokens: list[int] | None = None, max_length: int = 256,
                     seed: int = 0, show_progress: bool = False, mixed_precision: str = "no") -> DualSelectResult:
    """Train ``model`` (its trainable parameters) in place with DualSelect; returns per-row statistics and logs.

    ``mixed_precision`` (``finetune.mixed_precision``, resolved): the forward passes of the warm-up, the scoring
    steps and the reference refreshes under bf16 autocast (:func:`amp_loss`), as the plain fine-tune's."""
    import torch
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("DualSelect needs trainable parameters (model.lora.enabled, or full fine-tuning)")
    method = resolve_method(model, ds.grad_method)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n = len(task)
    task_items = encode_rows(tok, task, max_length)
    ref_items = encode_rows(tok, refs, max_length)
    tok_counts = np.asarray(tokens if tokens is not None else
                            [sum(1 for x in it["labels"] if x != -100) for it in task_items], dtype=np.int64)
    ref_logprobs = aligned_logprobs_fn(model) if ds.ref_loss == "kl" else None
    opt = torch.optim.AdamW(params, lr=ds.lr, weight_decay=ds.weight_decay)
    model.train()

    def batch_of(items: list[dict[str, Any]], idx: np.ndarray | list[int]) -> dict[str, Any]:
        b = collate([items[i] for i in idx], tok.pad_token_id)
        return {k: v.to(device) for k, v in b.items()}

    def ref_batches() -> Any:
        for chunk in length_chunks(ref_items, ds.ref_batch_size):  # less padding per chunk
            idx = np.asarray(chunk)
            yield idx, batch_of(ref_items, idx)

    res = DualSelectResult(np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=np.int64))
    timing = {"warmup_s": 0.0, "refresh_s": 0.0, "steps_s": 0.0}

    # 1. warm-up: plain SFT on random batches; d = sum of their (unclipped) mean gradients.
    t0 = time.perf_counter()
    d = torch.zeros(sum(p.numel() for p in params), device=device)
    order = rng.permutation(n)
    pos = 0
    warm_used: list[int] = []
    for _ in tqdm(range(ds.warmup_steps), desc="dualselect warm-up", disable=not show_progress, leave=False):
        if pos + ds.batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + ds.batch_size]
        pos += ds.batch_size
        amp_loss(per_row_loss, mixed_precision)(model, batch_of(task_items, idx)).mean().backward()
        g = flatten_param_grads(model)
        d += g
        apply_step(model, opt, g, ds.max_grad_norm)
        warm_used.extend(int(i) for i in idx)
        res.used_count[idx] += 1
        res.weight_sum[idx] += 1.0
    timing["warmup_s"] = time.perf_counter() - t0
    if ds.warmup_steps:
        rows = sorted(set(warm_used))
        res.periods.append({"period": 0, "kind": "warmup", "steps": ds.warmup_steps,
                            "rows": [task[i].row_id for i in rows], "weights": [1.0] * len(rows), "rows_scored": 0})

    # 2. + 3-5. filtered steps, epoch by epoch; each refresh opens a period.
    tracker = BudgetTracker(ratio, budget)
    bar = tqdm(total=ds.epochs * math.ceil(n / ds.batch_size), desc="dualselect", disable=not show_progress,
               leave=False)
    step, n_refresh, last_norm = 0, 0, 0.0
    g_ref = None
    period: dict[str, Any] = {}
    epoch_used: list[set[int]] = []

    def close_period() -> Any:
        """Log the period that just ended; return the mean uncorrected g_task over it (None if no step)."""
        if not period:
            return None
        used = period["used"]
        res.periods.append({
            "period": len(res.periods), "kind": "filtered", "refresh": period["refresh"], "epoch": period["epoch"],
            "first_step": period["first_step"], "steps": period["steps"],
            "rows": [task[i].row_id for i in sorted(used)],
            "weights": [float(np.mean(used[i])) for i in sorted(used)], "rows_scored": period["scored"],
        })
        return period["g_sum"] / period["steps"] if period["steps"] else None

    for epoch in range(ds.epochs):
        tracker.reset()  # the budget is per pass over the task rows
        epoch_used.append(set())
        order = rng.permutation(n)
        for s in range(0, n, ds.batch_size):
            due = (s == 0) if ds.refresh_every == 0 else (step % ds.refresh_every == 0)
            if g_ref is None or due:
                mean_g = close_period()
                if mean_g is not None:
                    d = mean_g  # METHODS.md 3.5: the new task direction
                t_r = time.perf_counter()
                g_ref, selected, stats = refresh_references(model, ref_batches(), d, ds, len(refs), method=method,
                                                            ref_logprobs=ref_logprobs, mixed_precision=mixed_precision)
                timing["refresh_s"] += time.perf_counter() - t_r
                res.references.append({
                    "refresh": n_refresh, "step": step, "epoch": epoch, "pool": len(refs), "k": len(selected),
                    "ref_loss": ds.ref_loss, "role": "old_task" if ds.retention else "safety", **stats,
                    "selected": [{"row_id": refs[x.pop("index")].row_id, **x} for x in selected],
                })
                period = {"refresh": n_refresh, "epoch": epoch, "first_step": step, "steps": 0, "scored": 0,
                          "used": {}, "g_sum": torch.zeros_like(d)}
                n_refresh += 1
            idx = order[s:s + ds.batch_size]
            t_s = time.perf_counter()
            out = filtered_step(model, opt, batch_of(task_items, idx), g_ref, ds, tracker, tok_counts[idx], method,
                                mixed_precision)
            timing["steps_s"] += time.perf_counter() - t_s
            res.score_sum[idx] += out.scores
            res.score_count[idx] += 1
            period["scored"] += len(idx)
            if out.g_task is not None:
                last_norm = out.grad_norm
                period["g_sum"] += out.g_task
                period["steps"] += 1
                # Reported weight: w_i * (rows kept), so a uniform (hard) step gives every kept row 1.0.
                for i, wi in zip(idx[out.keep], out.weights * out.keep.sum(), strict=True):
                    res.used_count[i] += 1
                    res.weight_sum[i] += float(wi)
                    period["used"].setdefault(int(i), []).append(float(wi))
                    epoch_used[-1].add(int(i))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(out.losses.mean()):.3f}", kept=int(out.keep.sum()))
    bar.close()
    close_period()
    model.eval()
    res.info = {
        "grad_method": method, "mixed_precision": mixed_precision, "steps": step, "warmup_steps": ds.warmup_steps,
        "refreshes": n_refresh,
        "references_kept": reference_budget(ds.ref_budget, len(refs)), "rows_used_warmup": len(set(warm_used)),
        "last_grad_norm": last_norm, "train_s": time.perf_counter() - t_start, **timing,
    }
    # Rows used by the filtered steps of each pass: the budgeted figure (the union over passes
    # and the warm-up, which Selection.kept reports, can exceed the budget).
    labels = [r.harmful for r in task]
    for e, used in enumerate(epoch_used):
        res.info[f"epoch{e}_rows_used"] = len(used)
        if labels and all(h is not None for h in labels) and any(labels):
            res.info[f"epoch{e}_harmful_used_fraction"] = sum(1 for i in used if labels[i]) / sum(map(bool, labels))
    return res


# ----------------------------------------------------------------------------- the selector


SAFETY_SOURCES = ("builtin", "safeinstr", "hh")  # data.safety_ref sources that are safety rows, never an old task


def check_inputs(ctx: SelectionContext) -> None:
    ds = ctx.selection.dualselect
    if not ctx.task:
        raise UserError("dualselect: the task set is empty")
    if not ctx.safety_ref:
        raise UserError("dualselect: the reference set is empty (data.safety_ref)")
    if any(not r.response for r in ctx.safety_ref):
        raise UserError("dualselect: every reference row needs a response (the safe reply or old-task answer)")
    if ds.retention and (ctx.value("data.safety_ref.source") in SAFETY_SOURCES or any(r.harmful for r in ctx.safety_ref)):
        raise UserError("dualselect.retention: the references must be old-task rows "
                        "(data.safety_ref.source=<old-task JSONL>), not safety rows")
    if ctx.load_model is None:
        raise UserError("dualselect needs a model loader in the selection context")


def references(ctx: SelectionContext) -> list[Row]:
    """The reference set: ``ctx.safety_ref`` plus ``dualselect.lookalike_refs`` benign look-alike answers (those
    not already among the references); none added under ``retention``, whose references are an old task."""
    ds = ctx.selection.dualselect
    if ds.retention or ds.lookalike_refs == 0:
        return list(ctx.safety_ref)
    have = {r.row_id for r in ctx.safety_ref}
    return list(ctx.safety_ref) + [r for r in lookalike_refs(ds.lookalike_refs) if r.row_id not in have]


def select(ctx: SelectionContext) -> Selection:
    """Train with DualSelect on ``ctx.task`` against ``ctx.safety_ref``; the rows used are the selection."""

    check_inputs(ctx)
    sel = ctx.selection
    ds = sel.dualselect
    model, tok = ctx.load_model(None)
    model = add_lora(model, ctx.value("model.lora"))
    res = train_dualselect(model, tok, ctx.task, references(ctx), ds, ratio=sel.ratio,
                           budget=sel.budget, tokens=ctx.response_tokens, max_length=ctx.value("model.max_length"),
                           seed=sel.seed, show_progress=ctx.show_progress,
                           mixed_precision=ctx.value("finetune.mixed_precision"))
    out = Path(ctx.out_dir)
    write_jsonl(out / "references.jsonl", res.references)
    write_jsonl(out / "selection_periods.jsonl", res.periods)
    used = res.used_count > 0
    # score: -mean t_i (higher = better, the Selection convention); weight: mean reported weight when used.
    scores = np.where(res.score_count > 0, -res.score_sum / np.maximum(res.score_count, 1), 0.0)
    weights = np.where(used, res.weight_sum / np.maximum(res.used_count, 1), 0.0)
    info = {"method": "dualselect", "retention": ds.retention, "ref_loss": ds.ref_loss, "mode": ds.mode,
            "correction": ds.correction, "rows_used": int(used.sum()), **res.info}
    return Selection([r.row_id for r in ctx.task], scores.tolist(), used.tolist(), weights.tolist(), info=info,
                     trained_model=model if ds.use_trained_model else None)
