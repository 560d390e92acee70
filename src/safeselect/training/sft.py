"""Supervised fine-tuning: a lean accelerate loop over chat rows with response-only loss.

Why not TRL's SFTTrainer: SEAL and DualSelect need per-row weights and per-row
losses inside the step, and the alignment stage, the baselines and the final
SFT must share one loss definition (mean response NLL per row, then mean over
rows, as METHODS.md defines l_i). This loop runs unchanged under
``accelerate launch`` (multi-GPU, FSDP / DeepSpeed configs) and on one CPU.
"""

from __future__ import annotations

import math
import time
from typing import Any

from safeselect.config.schema import TrainConfig
from safeselect.core.rows import Row


def make_accelerator(cpu: bool | None = None) -> Any:
    import torch
    from accelerate import Accelerator

    if cpu is None:
        cpu = not torch.cuda.is_available()
    return Accelerator(cpu=cpu)


def train_sft(model: Any, tok: Any, rows: list[Row], train_cfg: TrainConfig, max_length: int, seed: int = 0,
              weights: list[float] | None = None, desc: str = "sft", show_progress: bool = True,
              accelerator: Any = None) -> dict[str, Any]:
    """Train ``model`` in place on ``rows``; returns {"losses", "steps", "train_s"}.

    ``weights`` (one per row) scale each row's loss; None = plain SFT.
    ``batch_size`` is the effective batch; ``micro_batch_size`` rows per forward pass.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from safeselect.training.encode import collate, encode_rows
    from safeselect.training.losses import per_row_loss

    t0 = time.perf_counter()
    if not rows or train_cfg.epochs <= 0:
        return {"losses": [], "steps": 0, "train_s": 0.0}
    acc = accelerator or make_accelerator()
    items = encode_rows(tok, rows, max_length)
    w = [1.0] * len(rows) if weights is None else [float(x) for x in weights]
    data = [(it, wi) for it, wi in zip(items, w, strict=True)]
    micro = min(train_cfg.micro_batch_size, train_cfg.batch_size)
    accum = max(1, train_cfg.batch_size // micro)
    gen = torch.Generator().manual_seed(seed)

    def _collate(batch: list[tuple[dict, float]]) -> dict[str, Any]:
        out = collate([b[0] for b in batch], tok.pad_token_id)
        out["weights"] = torch.tensor([b[1] for b in batch], dtype=torch.float32)
        return out

    loader = DataLoader(data, batch_size=micro, shuffle=True, generator=gen, collate_fn=_collate)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    model, opt, loader = acc.prepare(model, opt, loader)
    # Steps are counted on the sharded loader (per process), so N processes take 1/N of the steps.
    micro_per_epoch = len(loader)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / accum))
    total_steps = max(1, math.ceil(train_cfg.epochs * steps_per_epoch))
    if train_cfg.max_steps > 0:
        total_steps = min(total_steps, train_cfg.max_steps)
    # Not passed through accelerate.prepare: a prepared scheduler steps once per process per step.
    sched = get_scheduler("linear" if train_cfg.warmup_ratio > 0 else "constant_with_warmup", opt,
                          num_warmup_steps=int(train_cfg.warmup_ratio * total_steps),
                          num_training_steps=total_steps)
    model.train()
    losses: list[float] = []
    step, micro_i, running = 0, 0, 0.0
    bar = tqdm(total=total_steps, desc=desc, disable=not (show_progress and acc.is_main_process), leave=False)
    while step < total_steps:
        for batch in loader:
            row_loss = per_row_loss(model, batch)
            loss = (row_loss * batch["weights"]).mean() / accum
            acc.backward(loss)
            running += float(loss.detach())
            micro_i += 1
            if micro_i % accum and micro_i % micro_per_epoch:
                continue
            if train_cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(params, train_cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(running)
            bar.set_postfix(loss=f"{running:.3f}")
            bar.update(1)
            running = 0.0
            step += 1
            if step >= total_steps:
                break
    bar.close()
    model.eval()
    unwrapped = acc.unwrap_model(model)
    return {"losses": losses, "steps": step, "train_s": time.perf_counter() - t0, "model": unwrapped}
