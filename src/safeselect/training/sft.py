"""Supervised fine-tuning: a lean accelerate loop over chat rows with response-only loss.

Why not TRL's SFTTrainer: SEAL and DualSelect need per-row weights and per-row
losses inside the step, and the alignment stage, the baselines and the final
SFT must share one loss definition (mean response NLL per row, then mean over
rows, as METHODS.md defines l_i). This loop runs unchanged under
``accelerate launch`` (multi-GPU, FSDP / DeepSpeed configs) and on one CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

from safeselect.config.schema import TrainConfig
from safeselect.core.precision import resolve_mixed_precision
from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.training.batching import LengthGroupedSampler, padding_groups
from safeselect.training.checkpoint import Checkpointer, generator_state, set_generator_state
from safeselect.training.encode import collate, encode_rows
from safeselect.training.losses import no_packing, packing_applies, per_row_loss, shared_prefix_length


def make_accelerator(cpu: bool | None = None) -> Any:
    import torch
    from accelerate import Accelerator

    if cpu is None:
        cpu = not torch.cuda.is_available()
    return Accelerator(cpu=cpu)


def autocast(device_type: str, mixed_precision: str) -> Any:
    """The forward pass's autocast for ``mixed_precision`` ("no" = a no-op).

    torch's own autocast, not Accelerator(mixed_precision=...): accelerate keeps one global
    state per process, so the alignment, the selectors and the fine-tune could not each
    choose their precision.
    """
    import torch

    # a config built without loading.build (a dataclass made in code) may still say auto
    mixed_precision = resolve_mixed_precision(mixed_precision, device_type)
    if mixed_precision == "no":
        return contextlib.nullcontext()
    if mixed_precision != "bf16":
        raise UserError(f"mixed_precision={mixed_precision!r}: choose no or bf16")
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


@contextlib.contextmanager
def frozen_weights_cast(model: Any, mixed_precision: str, distributed_type: str = "NO") -> Iterator[None]:
    """While open, the frozen float32 weights of ``model``'s Linear layers are held as bfloat16 copies.

    Why: autocast keeps its bf16 cast of a weight across a forward only for weights that require
    grad, so a frozen LoRA base (and a tied output layer) was cast again at every forward: 3-6% of a
    bf16 LoRA step on SmolLM2-135M on one CPU thread (docs/results.md), more with fewer rows per pass
    or a larger model. The copies hold exactly the values autocast's own
    cast gives, so every output and gradient is unchanged; the float32 Parameters themselves are put
    back on exit (ties included), so merging, saving and evaluation see them untouched. Costs the
    copies' memory (half that of the frozen Linear weights) while open. A no-op without bf16, for
    adapter weights (a frozen second adapter may be trained later) and under FSDP / DeepSpeed, which
    own their parameters' storage.
    """
    import torch

    device_type = next(model.parameters()).device.type
    if resolve_mixed_precision(mixed_precision, device_type) != "bf16" or any(k in str(distributed_type).upper() for k in ("FSDP", "DEEPSPEED", "MEGATRON")):
        yield
        return
    swapped: list[tuple[Any, str, Any]] = []
    copies: dict[int, Any] = {}  # one copy per Parameter, so a weight shared by two layers stays shared
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or "lora_" in name:
            continue
        for key in ("weight", "bias"):
            p = mod._parameters.get(key)
            if p is None or p.requires_grad or p.dtype != torch.float32:
                continue
            if id(p) not in copies:
                copies[id(p)] = torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
            swapped.append((mod, key, p))
            mod._parameters[key] = copies[id(p)]
    try:
        yield
    finally:
        for mod, key, p in reversed(swapped):
            mod._parameters[key] = p


# One more sub-batch costs about as much as this many token positions on a CPU, besides the shared system
# prompt it runs again: the per-operation work of two more passes (prefix and rest) through 30 small LoRA
# layers. Measured on SmolLM2-135M, one thread: splitting batches of close lengths was 5-10% slower with a
# smaller figure, and an extra pass cost about 0.4 s, 70 token positions' worth (docs/results.md).
PASS_OVERHEAD_TOKENS = 64


def sub_batches(batch: dict[str, Any], overhead: float | None = None) -> list[dict[str, Any]]:
    """``batch`` (right-padded) as sub-batches of similar length, each cut to its own longest row.

    Their per-row losses are the batch's rows' losses, so the sum of their weighted losses has the
    batch's gradient: the same optimiser step with less compute on padding (random batches of the
    built-in benchmark are 20-50% padding). ``overhead``: the cost of one more pass, in token
    positions (default: the shared prefix + :data:`PASS_OVERHEAD_TOKENS`).
    """
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    if overhead is None:
        overhead = shared_prefix_length(batch["input_ids"]) + PASS_OVERHEAD_TOKENS
    groups = padding_groups(lengths, overhead)
    if len(groups) == 1:
        return [batch]
    out = []
    for g in groups:
        idx, width = batch["input_ids"].new_tensor(g), max(lengths[i] for i in g)
        out.append({k: (v[idx, :width] if v.dim() == 2 else v[idx]) for k, v in batch.items()})
    return out


def checkpoint_key(rows: list[Row], train_cfg: TrainConfig, max_length: int, seed: int,
                   weights: list[float] | None) -> str:
    """Hash of what a training run depends on: a checkpoint of another key is not resumed."""
    import dataclasses
    import hashlib
    import json

    payload = {"cfg": dataclasses.asdict(train_cfg), "max_length": max_length, "seed": seed,
               "weights": weights, "rows": [(r.row_id, r.prompt, r.response) for r in rows]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_sft(model: Any, tok: Any, rows: list[Row], train_cfg: TrainConfig, max_length: int, seed: int = 0,
              weights: list[float] | None = None, desc: str = "sft", show_progress: bool = True,
              accelerator: Any = None, checkpoint_dir: Any = None, save_every: int = 0,
              tracker: Any = None, stage: str = "finetune", local: bool = False) -> dict[str, Any]:
    """Train ``model`` in place on ``rows``; returns {"losses", "steps", "train_s", "model", "resumed_from"}.

    ``weights`` (one per row) scale each row's loss; None = plain SFT.
    ``batch_size`` is the effective batch; ``micro_batch_size`` rows per forward pass, which
    ``split_padding`` runs packed (:mod:`safeselect.training.packing`: no compute on padding), or,
    for a model whose attention cannot be packed, as :func:`sub_batches` of similar length (one CPU
    process only: under DDP every process must run as many backward passes).
    ``checkpoint_dir`` + ``save_every``: the state is saved every N optimiser steps and at the
    end (:class:`~safeselect.training.checkpoint.Checkpointer`); a call that finds a checkpoint
    of the same rows and settings resumes from it, ending exactly where an uninterrupted call
    ends. ``tracker`` (a :class:`~safeselect.training.tracking.TrainLog`) receives each step's
    loss and learning rate under ``stage``. ``local``: train in this process only, without
    DDP (the alignment is trained on the main process alone while the others wait).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    t0 = time.perf_counter()
    if not rows or train_cfg.epochs <= 0:
        return {"losses": [], "steps": 0, "train_s": 0.0, "model": model, "resumed_from": 0}
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

    if train_cfg.group_by_length:
        sampler = LengthGroupedSampler([len(it["input_ids"]) for it in items], micro, gen)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=_collate)
    else:
        loader = DataLoader(data, batch_size=micro, shuffle=True, generator=gen, collate_fn=_collate)
    # No compute on padding: packed rows where the model's attention allows (one pass per micro-batch, any
    # device), else sub-batches on one CPU process (under DDP every process must run as many passes).
    pack = train_cfg.split_padding and packing_applies(model)
    split = train_cfg.split_padding and not pack and acc.device.type == "cpu" and (local or acc.num_processes == 1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    if local:
        model = model.to(acc.device)
    else:
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
    ckpt = Checkpointer(checkpoint_dir, 0 if local else save_every,
                        checkpoint_key(rows, train_cfg, max_length, seed, weights), acc)
    losses: list[float] = []
    step, micro_i, running, epoch, skip = 0, 0, 0.0, 0, 0
    restored = ckpt.load()
    if restored is not None:
        state, _ = restored
        step, micro_i, epoch, skip = state["step"], state["micro_i"], state["epoch"], state["batch"]
        losses = list(state["losses"])
        sched.load_state_dict(state["scheduler"])
        # The data order of the interrupted epoch: the generator as it was when that epoch began.
        set_generator_state(gen, state["generator"])
        if tracker is not None:
            tracker.rewind(stage, step)
    resumed_from = step
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not (show_progress and acc.is_main_process),
               leave=False)
    with frozen_weights_cast(model if local else acc.unwrap_model(model), train_cfg.mixed_precision,
                             acc.distributed_type):
        while step < total_steps:
            epoch_gen = generator_state(gen)
            for b_i, batch in enumerate(loader):
                if skip:  # batches the checkpointed run had already trained on in this epoch
                    skip -= 1
                    continue
                # The micro-batch's mean weighted row loss, as a sum over its sub-batches' rows.
                n_rows = batch["input_ids"].shape[0]
                for part in sub_batches(batch) if split else [batch]:
                    with autocast(acc.device.type, train_cfg.mixed_precision), no_packing(not pack):
                        row_loss = per_row_loss(model, part)
                    loss = (row_loss.float() * part["weights"].to(row_loss.device)).sum() / (n_rows * accum)
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
                step += 1
                if tracker is not None:
                    tracker.log(stage, step, {"loss": running, "lr": sched.get_last_lr()[0], "epoch": epoch})
                bar.set_postfix(loss=f"{running:.3f}")
                bar.update(1)
                running = 0.0
                if ckpt.due(step) or (ckpt.enabled and step >= total_steps):
                    ckpt.save(step, {"micro_i": micro_i, "epoch": epoch, "batch": b_i + 1, "losses": losses,
                                     "scheduler": sched.state_dict(), "generator": epoch_gen})
                if step >= total_steps:
                    break
            epoch += 1
    bar.close()
    model.eval()
    unwrapped = model if local else acc.unwrap_model(model)
    return {"losses": losses, "steps": step, "train_s": time.perf_counter() - t0, "model": unwrapped,
            "resumed_from": resumed_from}
