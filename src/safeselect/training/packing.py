"""Packed rows: a padded batch run as one sequence of its real tokens, with attention kept per row.

Why: the linear layers, which are most of a small chat model's compute, cost per token position, and
random batches of chat rows are 20-50% padding (docs/results.md). The sequence is the token prefix
every row shares (the chat template's system prompt, once) followed by each row's other tokens: no
padding and no repeated prefix reach a linear layer or the MLP. Attention, a small share at these
lengths, runs on the rows laid out padded again (a gather before it, a gather after), so each row
sees exactly the prefix's keys and its own, as in the padded batch. The same losses and gradients up
to float rounding, in one forward and backward pass per micro-batch (sub-batches cost a pass each,
and the shared prefix run apart costs one more).

The packed forward swaps the model's attention function for :func:`packed_attention` while it runs
(``config._attn_implementation``, transformers' attention interface); only models whose attention is
``sdpa`` are packed (the default of transformers' decoder models).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

NAME = "safeselect_packed"
_PLAN: ContextVar[Plan | None] = ContextVar("packing_plan", default=None)
_registered = False


@dataclass
class Plan:
    """Where each row's tokens sit in the packed sequence.

    ``valid[r, j]``: slot j of row r (its token p + j) is a real token; ``real``: the flat positions of
    those slots (row-major: the packed order); ``index[r, j]``: that token's position among the packed
    rows' tokens (after the prefix; 0 for padding slots, which are masked and dropped); ``mask``: the
    ``[rows, 1, width, p + width]`` attention mask of the padded layout (prefix keys, then the row's own
    keys causally); ``position_ids``: ``[1, p + N]`` positions of the packed sequence (the prefix's
    0..p-1, then p + j for each row's tokens); ``model_mask``: a 4-D placeholder handed to the model so
    that it builds no mask of its own."""

    prefix: int
    valid: Any
    real: Any
    index: Any
    mask: Any
    position_ids: Any
    model_mask: Any


def unwrap(model: Any) -> Any:
    """``model`` without DistributedDataParallel-style wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def _config(model: Any) -> Any:
    model = unwrap(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "config", None)


def supports(model: Any) -> bool:
    """Whether ``model``'s attention can be packed: transformers' SDPA attention."""
    config = _config(model)
    return getattr(config, "_attn_implementation", None) == "sdpa"


def plan(attention_mask: Any, prefix: int) -> Plan:
    """The :class:`Plan` of a right-padded batch whose first ``prefix`` tokens, the same in every row, head
    the packed sequence once."""
    import torch

    lengths = attention_mask.sum(dim=1) - prefix
    width = int(lengths.max())
    slot = torch.arange(width, device=attention_mask.device)
    valid = slot[None, :] < lengths[:, None]
    offsets = torch.cumsum(lengths, dim=0) - lengths
    index = (offsets[:, None] + slot[None, :]) * valid
    causal = slot[None, :] <= slot[:, None]  # [query, key]
    own = causal[None, None] & valid[:, None, None, :]
    rows = valid.shape[0]
    mask = torch.cat([own.new_ones(rows, 1, width, prefix), own], dim=-1)
    position_ids = torch.cat([torch.arange(prefix, device=slot.device),
                              (prefix + slot)[None, :].expand(rows, width)[valid]])[None]
    real = valid.reshape(-1).nonzero().squeeze(1)
    return Plan(prefix, valid, real, index, mask, position_ids, own.new_ones(1, 1, 1, 1))


def sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> tuple[Any, Any]:
    """transformers' SDPA attention, in float32 when bfloat16 autocast is on for a CPU tensor.

    Why: torch's CPU flash-attention kernel in bfloat16 has a slow backward (9 ms a call on SmolLM2's
    packed batches, 27% of a bf16 training step against 9% for float32 attention); the matrix products
    around it are where bfloat16 pays. On a GPU the bfloat16 kernel is the fast one, so it is left alone.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dtype = query.dtype
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(dtype), weights


def packed_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
                     ) -> tuple[Any, None]:
    """SDPA attention of a packed ``[1, heads, P + N, dim]`` sequence (the shared prefix, then the rows'
    tokens): the prefix attends causally to itself; the rows' tokens, laid out as the padded batch, to
    the prefix and their own earlier tokens (the plan's mask), and are packed again."""
    import torch

    p = _PLAN.get()
    if p is None:  # not inside packed(): an ordinary call
        return sdpa(module, query, key, value, attention_mask, **kwargs)
    rows, width = p.valid.shape
    flat = p.index.reshape(-1)

    def padded(x: Any) -> Any:  # [1, h, N, d] -> [rows, h, width, d]
        # index_select, not x[..., flat]: its backward is index_add, much cheaper on a CPU than index_put's.
        return x[0].index_select(1, flat).unflatten(1, (rows, width)).transpose(0, 1)

    keys, values = padded(key[:, :, p.prefix:]), padded(value[:, :, p.prefix:])
    if p.prefix:  # the shared prefix's keys and values, a view per row
        keys = torch.cat([key[:, :, :p.prefix].expand(rows, -1, -1, -1), keys], dim=2)
        values = torch.cat([value[:, :, :p.prefix].expand(rows, -1, -1, -1), values], dim=2)
    out, _ = sdpa(module, padded(query[:, :, p.prefix:]), keys, values, p.mask, **kwargs)
    # out: [rows, width, heads, dim] -> the packed tokens' [1, N, heads, dim]
    out = out.reshape(rows * width, *out.shape[2:]).index_select(0, p.real)[None]
    if p.prefix:  # no mask: causal
        head, _ = sdpa(module, query[:, :, :p.prefix], key[:, :, :p.prefix], value[:, :, :p.prefix], None,
                       **kwargs)
        out = torch.cat([head, out], dim=1)
    return out, None


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, packed_attention)
        _registered = True


@contextmanager
def packed(model: Any, the_plan: Plan) -> Iterator[None]:
    """Within this block ``model``'s attention runs :func:`packed_attention` with ``the_plan``."""
    _register()
    config = _config(model)
    before = config._attn_implementation
    config._attn_implementation = NAME
    token = _PLAN.set(the_plan)
    try:
        yield
    finally:
        _PLAN.reset(token)
        config._attn_implementation = before
