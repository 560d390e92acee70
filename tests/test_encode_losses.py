"""Chat encoding masks, per-row losses and the SFT loop on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import torch

from safeselect.config.schema import TrainConfig
from safeselect.core.rows import Row
from safeselect.training.encode import IGNORE, collate, encode, prompt_ids, response_ids
from safeselect.training.losses import per_row_loss, row_losses, token_nll


def test_mask_covers_exactly_the_prompt(tiny):
    _, tok = tiny
    enc = encode(tok, "what is two plus two?", "the answer is 4.", max_length=200)
    p, r = prompt_ids(tok, "what is two plus two?"), response_ids(tok, "the answer is 4.")
    assert enc["input_ids"] == p + r
    assert enc["labels"] == [IGNORE] * len(p) + r
    assert r[-1] == tok.eos_token_id  # the model learns to end its turn
    assert tok.decode(p).endswith("<|im_start|>assistant\n")


def test_truncation_keeps_response_and_prompt_end(tiny):
    _, tok = tiny
    enc = encode(tok, "word " * 100, "short reply", max_length=40)
    assert len(enc["input_ids"]) == 40
    learned = [t for t in enc["labels"] if t != IGNORE]
    assert learned == response_ids(tok, "short reply")
    assert tok.decode(enc["input_ids"][: 40 - len(learned)]).endswith("assistant\n")


def test_collate_pads_right_with_ignored_labels(tiny):
    _, tok = tiny
    a, b = encode(tok, "a", "x", 50), encode(tok, "a longer prompt here", "y", 50)
    batch = collate([a, b], tok.pad_token_id)
    n = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == (2, n)
    assert batch["attention_mask"][0].sum() == len(a["input_ids"])
    assert (batch["labels"][0, len(a["input_ids"]):] == IGNORE).all()


def test_token_nll_exact():
    # Uniform logits over V tokens: every learned position costs log V.
    V = 5
    logits = torch.zeros(1, 4, V)
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3]])
    nll, mask = token_nll(logits, labels)
    assert mask.tolist() == [[False, True, True]]
    assert torch.allclose(nll.sum(), torch.tensor(2 * math.log(V)))


def test_per_row_loss_is_mean_over_response_tokens(tiny):
    model, tok = tiny
    rows = [encode(tok, "p", "one two three", 64), encode(tok, "p", "one", 64)]
    batch = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        both = per_row_loss(model, batch)
        alone = [per_row_loss(model, collate([r], tok.pad_token_id)) for r in rows]
    # Padding must not change a row's loss.
    assert torch.allclose(both, torch.cat(alone), atol=1e-5)


def test_sft_loss_falls_and_row_losses_drop(tiny):
    from safeselect.config.schema import LoraConfig
    from safeselect.models import add_lora
    from safeselect.training.sft import train_sft

    model, tok = tiny
    model = add_lora(model, LoraConfig(r=8, alpha=16))
    rows = [Row(f"r{i}", f"what is {i} plus {i}?", f"the answer is {2 * i}.") for i in range(8)]
    before = row_losses(model, tok, rows, 64)
    res = train_sft(model, tok, rows, TrainConfig(epochs=4, lr=5e-3, batch_size=4, micro_batch_size=2), 64,
                    show_progress=False)
    after = row_losses(model, tok, rows, 64)
    assert res["steps"] == 8
    assert np.mean(after) < np.mean(before) - 0.3
    assert res["losses"][-1] < res["losses"][0]


def test_per_row_loss_equals_full_logits_reference(tiny):
    # Computing the head only at response positions must give the same losses as full logits.
    model, tok = tiny
    items = [encode(tok, "a prompt of some length", "one two three", 64), encode(tok, "p", "four", 64)]
    batch = collate(items, tok.pad_token_id)
    with torch.no_grad():
        fast = per_row_loss(model, batch)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, mask = token_nll(full, batch["labels"])
        ref = nll.sum(1) / mask.sum(1)
    assert torch.allclose(fast, ref, atol=1e-5)


def test_shared_prefix_pass_gives_the_same_losses_and_gradients(tiny_lora):
    from safeselect.training import losses

    model, tok = tiny_lora  # a trained adapter, so the LoRA path of the prefix matters
    items = [encode(tok, "a prompt of some length", "one two three", 64), encode(tok, "p", "four", 64),
             encode(tok, "another one", "five six", 64)]
    batch = collate(items, tok.pad_token_id)
    assert losses.shared_prefix_length(batch["input_ids"]) >= 2, "the chat template gives rows a shared prefix"
    assert losses.shared_prefix_length(torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, 3]])) == 1
    params = [p for p in model.parameters() if p.requires_grad]
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True)
    with losses.no_packing():  # padded rows (packed ones: tests/test_packing.py)
        shared = per_row_loss(model, batch)
    hook.remove()
    g_shared = torch.autograd.grad(shared.mean(), params)
    traced = per_row_loss(model, {**batch, "positions": losses.learned_positions(batch["labels"])})  # no sharing
    g_plain = torch.autograd.grad(traced.mean(), params)
    width = batch["input_ids"].shape[1]
    assert len(seen) == 2 and sum(seen) == width, "one pass over the prefix, one over the rest"
    assert torch.allclose(shared, traced, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_shared, g_plain, strict=True))
    keep = losses.learned_positions(batch["labels"])
    model.train()
    assert losses._prefix_cache(model, batch, keep)[0] > 0  # training without dropout shares the prefix
    model.activation_checkpointing_enable()
    assert losses._prefix_cache(model, batch, keep) == (0, None), "checkpointing keeps no cache"
    model.activation_checkpointing_disable()
    model.config.attention_dropout = 0.1
    assert losses._prefix_cache(model, batch, keep) == (0, None), "dropout: every row draws its own mask"
    model.config.attention_dropout = 0.0
    model.add_module("lora_like_dropout", torch.nn.Dropout(0.1))  # e.g. LoRA's dropout module
    assert losses._prefix_cache(model, batch, keep) == (0, None)
