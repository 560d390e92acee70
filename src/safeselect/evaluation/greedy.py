"""Greedy evaluation decoding in PyTorch that drops each row from its batch as soon as it ends.

Why: HF ``generate`` keeps every row of a batch in the forward pass until the longest one ends. Evaluation
replies are short or long by design (a refusal ends in about 15 tokens, a compliant reply runs to the
48-token cap), so most of a large batch's later steps decode rows that are already done: on the built-in
benchmark the mean reply is about 27 of 48 tokens and 5-15% of replies reach the cap, so nearly every
batch of 64 runs all 48 steps. This loop removes finished rows from the KV cache
(``DynamicCache.batch_select_indices``, once a quarter of the batch has ended: each removal copies the
cache), which lets larger batches pay off, as CTranslate2 does.
Unlike CTranslate2 it needs no conversion and runs in any dtype torch has kernels for, so on a CPU with
AMX / AVX-512 BF16 it decodes in bfloat16 autocast (``eval.dtype=bfloat16``), where matrix products are
several times faster than in float32 (docs/results.md).

A PEFT model is decoded from a copy with its LoRA merged in (fewer operations per step; the caller's model
is left as it is; the copy holds one more model's memory while the generator lives), made once per
:func:`make_generate` on the first call. In float32 the replies are HF's up to
float rounding (another batch shape); in bfloat16 they are not, and `benchmarks/bench_decode.py` measures how many
judge verdicts they keep (docs/results.md).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from safeselect.errors import UserError
from safeselect.training.encode import left_padded, prompt_ids
from safeselect.training.sft import autocast

# Finished rows leave the batch once they are this share of it. Removing rows copies the whole KV cache
# (about 30 ms for 64 rows of SmolLM2-135M), while a finished row kept costs one row's step (about 1 ms in
# bfloat16 on the CPU); removing at every finished row spent 7% of decoding on cache copies.
COMPACT_SHARE = 0.25


def merged_copy(model: Any) -> Any:
    """What :func:`decode` runs for ``model``: a PEFT model as a copy with its adapter folded into the weights
    (fewer operations per step; the caller's model is left as it is), any other model as it is.

    Every parameter of the copy requires grad: torch's autocast caches the bfloat16 cast of a weight only
    for leaf tensors that require grad, and PEFT's frozen base weights would be cast again at every step.
    """
    if not hasattr(model, "merge_and_unload"):
        return model
    plain = copy.deepcopy(model).merge_and_unload()
    return plain.requires_grad_(True)


def precision(device_type: str, dtype: str) -> Any:
    """The autocast context of ``eval.dtype`` (float32: none; bfloat16: the training loops' bf16 autocast)."""
    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"eval.backend=torch decodes in float32 or bfloat16, not {dtype}")
    return autocast(device_type, "bf16" if dtype == "bfloat16" else "no")


def decode(model: Any, tok: Any, prompts: list[Any], max_new_tokens: int = 48, batch_size: int = 64,
           desc: str = "generate", show_progress: bool = True) -> list[str]:
    """Greedy replies in prompt order, each row leaving its batch at its end-of-sequence token.

    Prompts are sorted by length and left-padded, as in :func:`safeselect.evaluation.generate.generate`;
    positions follow the attention mask as HF ``generate`` sets them, so a row's computation is the same
    whatever else is in its batch, up to float rounding.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import DynamicCache

    if not prompts:
        return []
    device = next(model.parameters()).device
    encoded = [prompt_ids(tok, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    params = inspect.signature(model.forward).parameters
    # Only the last position's logits are needed; models whose forward takes logits_to_keep skip the rest.
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()  # no dropout
    with torch.no_grad():
        for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress, leave=False):
            idx = order[s:s + batch_size]
            ids, mask = (t.to(device) for t in left_padded([encoded[i] for i in idx], pad))
            pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            cache = DynamicCache()
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                           **{cache_arg: cache}, **keep_last).logits[:, -1]
            alive = list(idx)  # prompt index of each row still in the batch
            done = [False] * len(alive)
            replies: dict[int, list[int]] = {i: [] for i in idx}
            for step in range(max_new_tokens):
                # max().indices: the same first-of-ties token as argmax (HF's greedy pick), 4x faster on a CPU
                # over a 49k vocabulary in bfloat16 (argmax was 4% of decoding).
                nxt = logits.max(-1).indices
                for j, t in enumerate(nxt.tolist()):
                    if done[j]:
                        continue
                    if t == eos:
                        done[j] = True
                    else:
                        replies[alive[j]].append(t)
                if all(done) or step == max_new_tokens - 1:
                    break
                if sum(done) >= max(1, int(len(alive) * COMPACT_SHARE)):
                    going = [j for j, d in enumerate(done) if not d]
                    keep = torch.tensor(going, device=device)
                    cache.batch_select_indices(keep)
                    mask, pos, nxt = mask[keep], pos[keep], nxt[keep]
                    alive, done = [alive[j] for j in going], [False] * len(going)
                mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
                pos = pos[:, -1:] + 1
                logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                               **{cache_arg: cache}, **keep_last).logits[:, -1]
            for i in idx:
                out[i] = tok.decode(replies[i], skip_special_tokens=True).strip()
    model.train(was_training)
    return out


def make_generate(model: Any, tok: Any, dtype: str = "float32", batch_size: int | None = None
                  ) -> Callable[..., list[str]]:
    """A drop-in for :func:`safeselect.evaluation.generate.generate` (greedy only) decoding ``model`` (a PEFT
    model: its merged copy) with :func:`decode` in ``dtype`` (``float32`` or ``bfloat16``).

    The copy is made on the first call. As with the ctranslate2 backend, the returned function decodes the
    model given here and ignores its ``model`` argument; ``batch_size`` (``eval.torch_batch_size``) replaces
    the caller's batch size when given.
    """
    loop_batch = batch_size
    state: dict[str, Any] = {}

    def generate(_model: Any, _tok: Any, prompts: list[Any], max_new_tokens: int = 48, batch_size: int = 16,
                 do_sample: bool = False, num_return_sequences: int = 1, desc: str = "generate", seed: int = 0,
                 show_progress: bool = True, **_: Any) -> list[str]:
        if do_sample or num_return_sequences != 1:
            raise UserError("eval.backend=torch decodes greedily only (sampling stays with the hf backend)")
        if "model" not in state:
            state["model"] = merged_copy(model)
        plain = state["model"]
        with precision(next(plain.parameters()).device.type, dtype):
            return decode(plain, tok, prompts, max_new_tokens, loop_batch or batch_size, desc, show_progress)

    return generate
