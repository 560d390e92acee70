"""Per-example gradients over the trainable (LoRA) parameters, vectorised.

DualSelect (METHODS.md section 3) needs, for every row of a mini-batch, its loss
and the gradient of that loss alone: to score rows by the cosine of their
gradient with a fixed direction, and to average the kept rows' gradients into
the step. The released code does one backward pass per row. Three ways are
offered here, all returning the same ``(losses [B], grads [B, P])`` with the
columns in the order of :func:`trainable_names`:

- ``hooks``: one batched forward + backward. Every trainable parameter of a
  LoRA model lives in a bias-free ``nn.Linear`` (``lora_A``, ``lora_B``), and the
  gradient of a Linear weight for row b is ``dY_b^T X_b`` (output gradient times
  input, summed over that row's positions). Capturing X in a forward hook and
  dY with ``autograd.grad`` on the captured outputs gives every row's gradient
  for about the cost of one batched step: the low-rank structure of LoRA keeps
  the outer products small (``[r, in]`` and ``[out, r]``).
- ``vmap``: ``torch.func.vmap(grad(...))`` over the rows with
  ``functional_call`` (only the trainable parameters are substituted; frozen
  weights and buffers are read from the module and never differentiated).
  Works for any trainable parameter. Attention runs in the ``eager``
  implementation while vmapped: SDPA's padding-mask check is data-dependent
  control flow that vmap cannot trace, and SDPA has no vmap batching rule on CPU.
- ``loop``: the reference, one forward/backward per row (each row trimmed to its
  own length, as the released code does). Tests and benchmarks compare against it.

``auto`` picks ``hooks`` when every trainable parameter belongs to an
``nn.Linear`` (any LoRA model), else ``vmap``; ``loop`` under gradient
checkpointing (neither hooks nor vmap can see through recomputation).

A ``loss_fn(model, batch) -> Tensor[B]`` gives each row's loss (default: the
project's :func:`safeselect.training.losses.per_row_loss`); every tensor in
``batch`` has the rows on dim 0, and tensors whose dim 1 is the sequence are
sliced along it in the loop, so extra per-token inputs (reference log-probs for
a KL loss) travel with their row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safeselect.errors import UserError, suggest
from safeselect.training.losses import checkpointing_active, learned_positions, per_row_loss, rows_apart

METHODS = ("auto", "hooks", "vmap", "loop")

LossFn = Callable[[Any, dict[str, Any]], Any]


def trainable_names(model: Any) -> list[str]:
    """Names of the parameters that get gradients, in ``named_parameters`` order (the column order of grads)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def num_trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flatten_param_grads(model: Any) -> Any:
    """The ``.grad`` of every trainable parameter as one flat float32 vector (zeros where a grad is None)."""
    import torch

    parts = []
    for p in model.parameters():
        if p.requires_grad:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            parts.append(g.detach().reshape(-1).float())
    return torch.cat(parts)


def assign_flat_grad(model: Any, flat: Any) -> None:
    """Write a flat vector (as from :func:`flatten_param_grads`) into the trainable parameters' ``.grad``."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in params)
    if total != flat.numel():
        raise ValueError(f"flat gradient has {flat.numel()} entries, the model {total} trainable ones")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def resolve_method(model: Any, method: str = "auto") -> str:
    """The concrete method ``auto`` stands for on this model (see the module docstring)."""
    if method not in METHODS:
        raise UserError(f"unknown per-example gradient method '{method}'{suggest(method, list(METHODS))}")
    checkpointing = checkpointing_active(model)
    if method != "auto":
        if checkpointing and method != "loop":
            # Recomputed activations are not the ones hooks captured, and vmap cannot trace the recomputation.

            raise UserError(f"per-example gradients by '{method}' do not work with gradient checkpointing; use loop")
        return method
    if checkpointing:
        return "loop"
    return "hooks" if _linear_owners(model) is not None else "vmap"


def per_example_grads(model: Any, batch: dict[str, Any], loss_fn: LossFn | None = None, method: str = "auto",
                      chunk_size: int | None = None) -> tuple[Any, Any]:
    """``(losses [B], grads [B, P])``: each row's loss and the gradient of that loss alone (float32, detached).

    The model is used in whatever train/eval mode it is in; ``.grad`` of its
    parameters is left untouched. ``chunk_size`` bounds how many rows ``vmap``
    differentiates at once (memory); the other methods ignore it.
    """
    loss_fn = loss_fn or _default_loss()
    how = resolve_method(model, method)
    if how == "hooks":
        return _grads_hooks(model, batch, loss_fn)
    if how == "vmap":
        return _grads_vmap(model, batch, loss_fn, chunk_size)
    return per_example_grads_loop(model, batch, loss_fn)


def per_example_dots(model: Any, batch: dict[str, Any], vector: Any, loss_fn: LossFn | None = None,
                     method: str = "auto") -> tuple[Any, Any, Any]:
    """``(losses [B], dots [B], sq_norms [B])`` of each row's gradient against a fixed flat ``vector``.

    With ``hooks`` the per-row gradients are formed one layer at a time and
    reduced at once, so at most one layer's ``[B, out, in]`` block is alive
    (memory O(B * largest adapter) instead of O(B * P)); the other methods
    reduce the full matrix. cos_i = dots_i / (sqrt(sq_norms_i) * |vector|).
    """
    import torch

    loss_fn = loss_fn or _default_loss()
    v = vector.detach().float()
    if resolve_method(model, method) != "hooks":
        losses, grads = per_example_grads(model, batch, loss_fn, method)
        return losses, grads @ v, (grads * grads).sum(dim=1)
    losses, blocks = _hook_blocks(model, batch, loss_fn)
    offsets = _offsets(model)
    dots = torch.zeros(losses.shape[0], dtype=torch.float32, device=v.device)
    sq = torch.zeros_like(dots)
    for name, g in blocks():
        start, n = offsets[name]
        g = g.reshape(g.shape[0], -1)
        dots += g @ v[start:start + n]
        sq += (g * g).sum(dim=1)
    return losses, dots, sq


def per_example_grads_loop(model: Any, batch: dict[str, Any], loss_fn: LossFn | None = None) -> tuple[Any, Any]:
    """Reference implementation: one forward/backward per row, each row trimmed to its own length."""
    import torch

    loss_fn = loss_fn or _default_loss()
    params = [p for p in model.parameters() if p.requires_grad]
    seq = batch["input_ids"].shape[1]
    mask = batch.get("attention_mask")
    losses, rows = [], []
    for b in range(batch["input_ids"].shape[0]):
        # Right-padded rows are trimmed (what a per-example loop does); other paddings keep the full width.
        length = int(mask[b].sum()) if mask is not None and bool(mask[b, : int(mask[b].sum())].all()) else seq
        one = {k: _row_slice(v, b, seq, length) for k, v in batch.items()}
        loss = loss_fn(model, one)[0]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                               for g, p in zip(grads, params, strict=True)]))
        losses.append(loss.detach().float())
    return torch.stack(losses), torch.stack(rows)


# ----------------------------------------------------------------------------- hooks


def _linear_owners(model: Any) -> list[tuple[str, Any]] | None:
    """(module name, module) for every module owning a trainable parameter, or None if one is not an nn.Linear."""
    import torch.nn as nn

    owners = []
    for name, mod in model.named_modules():
        if not any(p.requires_grad for p in mod.parameters(recurse=False)):
            continue
        if not isinstance(mod, nn.Linear):
            return None
        owners.append((name, mod))
    return owners


def _hook_blocks(model: Any, batch: dict[str, Any], loss_fn: LossFn) -> tuple[Any, Callable[[], Any]]:
    """Run one batched forward/backward with input capture; return losses and a generator of per-row blocks."""
    import torch

    owners = _linear_owners(model)
    if owners is None:
        raise ValueError("hooks need every trainable parameter to belong to an nn.Linear (use vmap)")
    inputs: dict[str, list[Any]] = {n: [] for n, _ in owners}
    outputs: dict[str, list[Any]] = {n: [] for n, _ in owners}

    def capture(name: str) -> Callable[..., None]:
        def hook(_mod: Any, args: tuple, out: Any) -> None:
            inputs[name].append(args[0].detach())
            outputs[name].append(out)
        return hook

    handles = [mod.register_forward_hook(capture(n)) for n, mod in owners]
    try:
        with rows_apart():  # the hooks need each row's own inputs at every layer: no shared-prefix pass
            losses = loss_fn(model, batch)
    finally:
        for h in handles:
            h.remove()
    bsz = batch["input_ids"].shape[0]
    for n, _ in owners:
        # A module called twice per forward (weight sharing, recomputation) would need its
        # contributions summed per call; LoRA never does that, so refuse rather than guess.
        if len(inputs[n]) != 1:
            raise ValueError(f"module {n} ran {len(inputs[n])} times in one forward; use method=vmap or loop")
    outs = [outputs[n][0] for n, _ in owners]
    # Summed loss: row b's loss depends only on row b, so d(sum)/dY_b = d(loss_b)/dY_b exactly.
    grads_out = torch.autograd.grad(losses.sum(), outs, allow_unused=True)

    def blocks() -> Any:
        for (n, mod), dy in zip(owners, grads_out, strict=True):
            x = inputs[n][0].reshape(bsz, -1, mod.in_features).float()
            if dy is None:  # the layer does not reach the loss
                dy = torch.zeros(x.shape[0], x.shape[1], mod.out_features, device=x.device)
            dy = dy.reshape(bsz, -1, mod.out_features).float()
            if mod.weight.requires_grad:
                yield f"{n}.weight", torch.einsum("bso,bsi->boi", dy, x)
            if mod.bias is not None and mod.bias.requires_grad:
                yield f"{n}.bias", dy.sum(dim=1)

    return losses.detach().float(), blocks


def _offsets(model: Any) -> dict[str, tuple[int, int]]:
    out, offset = {}, 0
    for n, p in model.named_parameters():
        if p.requires_grad:
            out[n] = (offset, p.numel())
            offset += p.numel()
    return out


def _grads_hooks(model: Any, batch: dict[str, Any], loss_fn: LossFn) -> tuple[Any, Any]:
    import torch

    losses, blocks = _hook_blocks(model, batch, loss_fn)
    offsets = _offsets(model)
    total = sum(n for _, n in offsets.values())
    grads = torch.zeros(losses.shape[0], total, dtype=torch.float32, device=losses.device)
    seen = set()
    for name, g in blocks():
        start, n = offsets[name]
        grads[:, start:start + n] = g.reshape(g.shape[0], -1)
        seen.add(name)
    if seen != set(offsets):
        raise ValueError(f"hooks missed parameters: {sorted(set(offsets) - seen)[:3]}")
    return losses, grads


# ----------------------------------------------------------------------------- vmap


def _grads_vmap(model: Any, batch: dict[str, Any], loss_fn: LossFn, chunk_size: int | None) -> tuple[Any, Any]:
    import torch
    from torch.func import functional_call, grad_and_value, vmap

    names = trainable_names(model)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    static: dict[str, Any] = {}
    if loss_fn is _default_loss():
        # per_row_loss would find the learned positions with nonzero(), a dynamic shape vmap cannot
        # batch: find them once for the whole batch here and hand them over.

        static["positions"] = learned_positions(batch["labels"])

    def one_row(theta: dict[str, Any], row: dict[str, Any]) -> Any:
        def call(**kwargs: Any) -> Any:
            return functional_call(model, theta, args=(), kwargs=kwargs)

        one = {k: v.unsqueeze(0) for k, v in row.items()}
        return loss_fn(call, {**one, **static})[0]

    tensors = {k: v for k, v in batch.items() if hasattr(v, "shape")}
    fn = vmap(grad_and_value(one_row), in_dims=(None, 0), randomness="different",
              chunk_size=chunk_size)
    with _eager_attention(model):
        grads, losses = fn(params, tensors)
    flat = torch.cat([grads[n].reshape(grads[n].shape[0], -1).float() for n in names], dim=1)
    return losses.detach().float(), flat


class _eager_attention:
    """Switch a transformers model to eager attention for the duration of a vmapped call, then restore."""

    def __init__(self, model: Any) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model = base if hasattr(base, "set_attn_implementation") else None
        self.before = getattr(getattr(base, "config", None), "_attn_implementation", None)

    def __enter__(self) -> None:
        if self.model is not None and self.before not in (None, "eager"):
            self.model.set_attn_implementation("eager")

    def __exit__(self, *exc: Any) -> None:
        if self.model is not None and self.before not in (None, "eager"):
            self.model.set_attn_implementation(self.before)


# ----------------------------------------------------------------------------- helpers


def _row_slice(v: Any, b: int, seq: int, length: int) -> Any:
    if not hasattr(v, "shape"):
        return v
    row = v[b:b + 1]
    if row.dim() >= 2 and row.shape[1] == seq:
        row = row[:, :length]
    return row


def _default_loss() -> LossFn:
    return per_row_loss
