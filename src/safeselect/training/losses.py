"""Per-row losses: l_i = mean negative log-likelihood of row i's response tokens (prompt masked)."""

from __future__ import annotations

from typing import Any

import numpy as np

from safeselect.core.rows import Row
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


def per_row_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Differentiable ``Tensor[B]``: each row's mean response-token NLL.

    The LM head runs only at positions that predict a response token in some row
    (``logits_to_keep`` with indices): with a 49k vocabulary the head is a large
    share of a small model's compute, and prompt positions are most of a chat row.
    ``batch["positions"]`` gives those positions precomputed (:func:`learned_positions`):
    finding them uses ``nonzero()``, a dynamic shape that ``torch.func.vmap`` cannot trace.
    """
    import torch.nn.functional as F

    labels = batch["labels"]
    keep = batch["positions"] if "positions" in batch else learned_positions(labels)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits
    if logits.shape[1] != keep.numel():  # a model without index support returned every position
        logits = logits[:, keep]
    targets = labels[:, 1:][:, keep]
    mask = targets != -100
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1),
                          reduction="none").view(targets.shape) * mask
    return nll.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def row_losses(model: Any, tok: Any, rows: list[Row], max_length: int, batch_size: int = 8,
               show_progress: bool = False) -> np.ndarray:
    """Loss of every row under ``model`` (no grad, eval mode), in row order."""
    import torch
    from tqdm.auto import tqdm

    items = encode_rows(tok, rows, max_length)
    order = np.argsort([len(it["input_ids"]) for it in items], kind="stable")  # less padding per batch
    out = np.zeros(len(rows), dtype=np.float64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in tqdm(range(0, len(rows), batch_size), desc="row losses", disable=not show_progress, leave=False):
            idx = order[s:s + batch_size]
            batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], tok.pad_token_id).items()}
            out[idx] = per_row_loss(model, batch).double().cpu().numpy()
    model.train(was_training)
    return out
