"""Chat-template encoding with response-only loss masks.

The prompt is rendered with the model's own chat template (generation prompt
included) and tokenised separately from the response, so the boundary is exact:
every prompt token gets label -100, every response token and the closing
end-of-turn token are learned.
"""

from __future__ import annotations

from typing import Any

from safeselect.core.rows import Row

IGNORE = -100


def prompt_ids(tok: Any, prompt: str | list[dict[str, str]]) -> list[int]:
    """Token ids of the chat-templated prompt up to the assistant's turn; ``prompt`` may be a message list
    (multi-turn, e.g. MT-Bench's second turn)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def response_ids(tok: Any, response: str) -> list[int]:
    """Response tokens followed by the end-of-turn (eos) token, which the model must learn to emit."""
    return list(tok(response, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]


def encode(tok: Any, prompt: str | list[dict[str, str]], response: str, max_length: int) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (prompt masked). Over-long rows lose the start of the prompt first,
    and the response keeps at least half of ``max_length`` (the learned part matters most)."""
    p = prompt_ids(tok, prompt)
    r = response_ids(tok, response)
    if len(p) + len(r) > max_length:
        r_keep = min(len(r), max(max_length // 2, max_length - len(p)))
        r = r[:r_keep]
        p = p[len(p) - (max_length - len(r)):] if max_length - len(r) > 0 else []
    return {"input_ids": p + r, "labels": [IGNORE] * len(p) + r}


def encode_rows(tok: Any, rows: list[Row], max_length: int) -> list[dict[str, list[int]]]:
    return [encode(tok, r.chat, r.response, max_length) for r in rows]


def response_token_counts(tok: Any, rows: list[Row]) -> list[int]:
    """Response length of each row in tokens (what token budgets count)."""
    return [len(response_ids(tok, r.response)) for r in rows]


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)`` of prompt token lists left-padded to the longest, for generation (every
    row's next token then sits in the last column)."""
    import torch

    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for j, p in enumerate(prompts):
        ids[j, n - len(p):] = torch.tensor(p)
        mask[j, n - len(p):] = 1
    return ids, mask


def collate(items: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest item: input_ids, attention_mask, labels as LongTensors."""
    import torch

    n = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for i, it in enumerate(items):
        k = len(it["input_ids"])
        ids[i, :k] = torch.tensor(it["input_ids"])
        labels[i, :k] = torch.tensor(it["labels"])
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
