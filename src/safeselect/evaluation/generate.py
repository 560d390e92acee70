"""Batched generation with the model's chat template: greedy by default, sampling for self-play.

:func:`generate` is HF ``generate`` (the reference backend); :func:`make_generate` picks the evaluation
backend the config asks for (``eval.backend``, ``eval.dtype``: see :mod:`safeselect.evaluation.ct2` and
:mod:`safeselect.evaluation.greedy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safeselect.errors import UserError
from safeselect.evaluation import ct2, greedy
from safeselect.training.encode import left_padded, prompt_ids


def generate(model: Any, tok: Any, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 16,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
             desc: str = "generate", seed: int = 0, show_progress: bool = True) -> list[str]:
    """Responses in prompt order (``num_return_sequences`` consecutive per prompt).

    Prompts are sorted by length and left-padded so each batch wastes little
    compute; results are put back in the original order.
    """
    import torch
    from tqdm.auto import tqdm

    if not prompts:
        return []
    device = next(model.parameters()).device
    encoded = [prompt_ids(tok, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    pad = tok.pad_token_id
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad,
                              "eos_token_id": tok.eos_token_id, "num_return_sequences": num_return_sequences}
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress, leave=False):
            idx = order[s:s + batch_size]
            ids, mask = left_padded([encoded[i] for i in idx], pad)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            new = gen[:, ids.shape[1]:]
            texts = tok.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = [t.strip() for t in texts[j * num_return_sequences:(j + 1) * num_return_sequences]]
    model.train(was_training)
    return [t for group in out for t in group]


def resolve_backend(backend: str, dtype: str, model: Any) -> str:
    """``hf``, ``ctranslate2`` or ``torch`` for ``eval.backend`` / ``eval.dtype`` (``auto``: bfloat16 decodes
    with the torch loop, which drops finished rows; otherwise ctranslate2 for a model on the CPU that it can
    convert, else hf, which on a GPU is fast already)."""

    if backend == "auto":
        on_cpu = next(model.parameters()).device.type == "cpu"
        if dtype == "bfloat16":
            backend = "torch"
        else:
            backend = "ctranslate2" if on_cpu and ct2.supports(model) else "hf"
    if backend in ("hf", "torch") and dtype == "int8":
        raise UserError(f"eval.dtype=int8 needs eval.backend=ctranslate2 (installed, and a model it converts), "
                        f"not {backend}")
    return backend


def make_generate(model: Any, tok: Any, eval_cfg: Any) -> Callable[..., list[str]]:
    """The greedy generator ``eval.backend`` / ``eval.dtype`` choose, same signature as :func:`generate`."""

    backend = resolve_backend(eval_cfg.backend, eval_cfg.dtype, model)
    if backend == "ctranslate2":
        device = next(model.parameters()).device.type
        return ct2.make_generate(model, tok, compute_type=eval_cfg.dtype, device=device,
                                 batch_size=eval_cfg.ct2_batch_size)
    if backend == "torch":
        return greedy.make_generate(model, tok, dtype=eval_cfg.dtype, batch_size=eval_cfg.torch_batch_size)
    if eval_cfg.dtype == "bfloat16":
        def generate_bf16(*args: Any, **kwargs: Any) -> list[str]:
            with greedy.precision(next(model.parameters()).device.type, "bfloat16"):
                return generate(*args, **kwargs)

        return generate_bf16
    return generate
