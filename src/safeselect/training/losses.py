"""Per-row losses: l_i = mean negative log-likelihood of row i's response tokens (prompt masked)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from safeselect.core.rows import Row
from safeselect.training import packing
from safeselect.training.batching import length_chunks
from safeselect.training.encode import collate, encode_rows


def token_nll(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Next-token NLL per position and the mask of learned positions (labels shifted by one)."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp(min=0), reduction="none")
    return nll * mask, mask


def learned_positions(labels: Any) -> Any:
    """Positions t whose next token is learned in at least one row (at least one position)."""
    import torch

    keep = (labels[:, 1:] != -100).any(dim=0).nonzero().squeeze(1)
    return keep if keep.numel() else torch.zeros(1, dtype=torch.long, device=labels.device)


# Off inside :func:`rows_apart`: per-example gradients by hooks need every row's own activations.
_SHARE_PREFIX: ContextVar[bool] = ContextVar("share_prefix", default=True)
# Off inside :func:`no_packing` (``finetune.split_padding=false``).
_PACK_ROWS: ContextVar[bool] = ContextVar("pack_rows", default=True)


@contextmanager
def rows_apart() -> Iterator[None]:
    """Within this block :func:`per_row_loss` runs every row in full (no shared-prefix pass)."""
    token = _SHARE_PREFIX.set(False)
    try:
        yield
    finally:
        _SHARE_PREFIX.reset(token)


@contextmanager
def no_packing(off: bool = True) -> Iterator[None]:
    """Within this block (if ``off``; else as outside it) :func:`per_row_loss` keeps a batch's padding."""
    token = _PACK_ROWS.set(_PACK_ROWS.get() and not off)
    try:
        yield
    finally:
        _PACK_ROWS.reset(token)


def shared_prefix_length(input_ids: Any) -> int:
    """Length of the token prefix every row of a (right-padded) batch starts with."""
    same = (input_ids == input_ids[:1]).all(dim=0)
    return int(same.long().cumprod(dim=0).sum())


def _active_dropout(model: Any) -> bool:
    """Training with any dropout: a module (LoRA's) or a probability in the model config (attention_dropout,
    resid_pdrop, ...) that the attention applies functionally."""
    import torch

    if not model.training:
        return False
    config = getattr(model, "config", None)
    probs = [v for k, v in (config.to_dict() if config is not None else {}).items()
             if ("dropout" in k or k.endswith("pdrop")) and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return any(v > 0 for v in probs) or any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def checkpointing_active(model: Any) -> bool:
    """Whether activation (gradient) checkpointing is on for ``model`` (DDP and PEFT wrappers are looked through)."""
    model = packing.unwrap(model)
    # transformers 5 renamed the flag; read the new name first so the old one's deprecation warning never fires.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flag = getattr(base, "is_activation_checkpointing", None)
    if flag is None:
        flag = getattr(base, "is_gradient_checkpointing", False)
    return bool(flag)


def _shareable_prefix(model: Any, batch: dict[str, Any], keep: Any) -> int:
    """P, the length of the batch's shared first tokens to run once for every row, or 0 when sharing does
    not apply: no shared prefix of 2+ tokens before the first learned position, dropout active (one mask
    for all rows would change the estimator), or gradient checkpointing (transformers keeps no cache while
    it recomputes)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if not _SHARE_PREFIX.get():
        return 0
    p = min(shared_prefix_length(ids), int(keep.min()))
    if p < 2 or ids.shape[0] < 2 or not bool(mask[:, :p].all()) or _active_dropout(model) \
            or (model.training and checkpointing_active(model)):
        return 0
    return p


def _prefix_cache(model: Any, batch: dict[str, Any], keep: Any) -> tuple[int, Any]:
    """(P, a KV cache of the batch's :func:`_shareable_prefix` computed once and broadcast to every row),
    or (0, None): no prefix to share, or a model whose cache is not the layered KV cache of transformers."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    p = _shareable_prefix(model, batch, keep)
    if not p:
        return 0, None
    out = model(input_ids=ids[:1, :p], attention_mask=mask[:1, :p], use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or not all(getattr(la, "keys", None) is not None and getattr(la, "values", None) is not None
                             for la in layers):
        return 0, None
    for la in layers:  # a view per row, no copy: gradients of every row flow back into the one prefix pass
        la.keys = la.keys.expand(ids.shape[0], *la.keys.shape[1:])
        la.values = la.values.expand(ids.shape[0], *la.values.shape[1:])
    return p, cache


def per_row_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Differentiable ``Tensor[B]``: each row's mean response-token NLL.

    The LM head runs only at positions that predict a response token in some row
    (``logits_to_keep`` with indices): with a 49k vocabulary the head is a large
    share of a small model's compute, and prompt positions are most of a chat row.
    The token prefix every row shares (the chat template's system prompt: 24 of
    about 80 tokens of a SmolLM2 row) is run once per batch and its keys and values
    broadcast to the rows: the same losses and gradients (up to float rounding,
    tests/test_encode_losses.py) for less compute (docs/results.md).
    ``batch["positions"]`` gives the learned positions precomputed (:func:`learned_positions`):
    finding them uses ``nonzero()``, a dynamic shape that ``torch.func.vmap`` cannot trace, and
    such a traced call also skips the prefix sharing.
    """
    import torch.nn.functional as F

    labels = batch["labels"]
    traced = "positions" in batch
    if not traced and packing_applies(model):
        return packed_row_loss(model, batch)
    keep = batch["positions"] if traced else learned_positions(labels)
    p, cache = (0, None) if traced else _prefix_cache(model, batch, keep)
    if cache is not None:
        out = model(input_ids=batch["input_ids"][:, p:], attention_mask=batch["attention_mask"], cache=cache,
                    use_cache=True, logits_to_keep=keep - p)
    else:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits
    if logits.shape[1] != keep.numel():  # a model without index support returned every position
        logits = logits[:, keep - p]
    targets = labels[:, 1:][:, keep]
    mask = targets != -100
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1),
                          reduction="none").view(targets.shape) * mask
    return nll.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def packing_applies(model: Any) -> bool:
    """Whether :func:`per_row_loss` runs its batches packed (:mod:`safeselect.training.packing`): packing
    on (:func:`no_packing` turns it off), rows not kept apart for per-example gradients, a model whose
    attention is SDPA, and no activation checkpointing (its recomputation runs outside the packed block).
    Not decided per batch: a batch without padding still saves the separate prefix pass, and under DDP
    every process must run as many forward passes (each one syncs buffers)."""
    return _PACK_ROWS.get() and _SHARE_PREFIX.get() and packing.supports(model) \
        and not (model.training and checkpointing_active(model))


def packed_row_loss(model: Any, batch: dict[str, Any]) -> Any:
    """:func:`per_row_loss` of a right-padded batch without compute on its padding, in one pass: the shared
    prefix (once, as in :func:`per_row_loss`) followed by every row's other real tokens, concatenated
    into one sequence, with attention kept per row (:mod:`safeselect.training.packing`). The same losses
    and gradients up to float rounding (tests/test_packing.py)."""
    import torch
    import torch.nn.functional as F

    ids, labels = batch["input_ids"], batch["labels"]
    n = ids.shape[0]
    p = _shareable_prefix(model, batch, learned_positions(labels))
    plan = packing.plan(batch["attention_mask"], p)
    width = plan.valid.shape[1]
    # Position t of row r (t >= p: the prefix predicts no learned token) sits at p + plan.index[r, t - p].
    targets = labels[:, 1 + p:1 + p + width]
    targets = F.pad(targets, (0, width - targets.shape[1]), value=-100)
    learned = (targets != -100) & plan.valid
    rows = torch.arange(n, device=ids.device)[:, None].expand(n, width)[learned]
    tokens = torch.cat([ids[0, :p], ids[:, p:p + width][plan.valid]])[None]
    with packing.packed(model, plan):
        out = model(input_ids=tokens, position_ids=plan.position_ids, attention_mask=plan.model_mask,
                    use_cache=False, logits_to_keep=p + plan.index[learned])
    nll = F.cross_entropy(out.logits[0].float(), targets[learned], reduction="none")
    total = torch.zeros(n, dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    return total / torch.bincount(rows, minlength=n).clamp(min=1)


def row_losses(model: Any, tok: Any, rows: list[Row], max_length: int, batch_size: int = 8,
               show_progress: bool = False) -> np.ndarray:
    """Loss of every row under ``model`` (no grad, eval mode), in row order."""
    import torch
    from tqdm.auto import tqdm

    items = encode_rows(tok, rows, max_length)
    out = np.zeros(len(rows), dtype=np.float64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for idx in tqdm(length_chunks(items, batch_size), desc="row losses", disable=not show_progress, leave=False):
            batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], tok.pad_token_id).items()}
            out[idx] = per_row_loss(model, batch).double().cpu().numpy()
    model.train(was_training)
    return out
