"""The torch greedy backend: HF's replies in float32 while rows leave their batch, bfloat16, config choices."""

from __future__ import annotations

import pytest
import torch

from safeselect.config import loading as config
from safeselect.errors import UserError
from safeselect.evaluation import greedy
from safeselect.evaluation.generate import generate, make_generate, resolve_backend

PROMPTS = ["hello there", "what is 2+3?", "tell me a story about a cat and a dog", "x", "kill a python process",
           "the weather is nice today, is it not?", "a b c", "one two three four five", "why", "count to ten"]


@pytest.fixture
def ending(tiny_lora):
    """The tiny Llama with LoRA and larger seeded weights, its end-of-sequence logit scaled up so that some
    replies end after a token or two and others run to the cap (rows leave their batch at different steps)."""
    model, tok = tiny_lora
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2 and "lora" not in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        w = model.get_base_model().lm_head.weight
        w[tok.eos_token_id] *= 3 * w.norm(dim=1).mean() / w[tok.eos_token_id].norm()
    return model, tok


@pytest.mark.parametrize("batch_size", [3, 64])
def test_float32_reproduces_hf_greedy_as_rows_leave(ending, batch_size):
    model, tok = ending
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=4, show_progress=False)
    lengths = {len(tok(r)["input_ids"]) for r in ref}
    assert min(lengths) <= 2 and max(lengths) >= 10, f"replies must end at different steps: {lengths}"
    fast = greedy.make_generate(model, tok, batch_size=batch_size)(model, tok, PROMPTS, max_new_tokens=12,
                                                                    show_progress=False)
    assert fast == ref
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters()), "the caller's model is unchanged"
    model.train()
    base = model.get_base_model()
    assert greedy.make_generate(base, tok)(base, tok, PROMPTS, max_new_tokens=12, show_progress=False) == \
        generate(base, tok, PROMPTS, max_new_tokens=12, batch_size=4, show_progress=False)
    assert base.training, "a plain model decoded in place is put back in training mode"


def test_rows_leave_the_batch(ending, monkeypatch):
    """Finished rows are dropped from the KV cache once they are a quarter of the batch."""
    from transformers import DynamicCache

    model, tok = ending
    sizes: list[int] = []
    real = DynamicCache.batch_select_indices

    def spy(self, indices):
        sizes.append(len(indices))
        return real(self, indices)

    monkeypatch.setattr(DynamicCache, "batch_select_indices", spy)
    greedy.decode(greedy.merged_copy(model), tok, PROMPTS, max_new_tokens=12, batch_size=64, show_progress=False)
    assert sizes and sizes == sorted(sizes, reverse=True) and sizes[-1] < len(PROMPTS)


def test_bfloat16_decodes_under_autocast(ending, monkeypatch):
    model, tok = ending
    seen: list[torch.dtype] = []
    real = torch.nn.functional.linear

    def spy(x, w, b=None):
        out = real(x, w, b)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    replies = greedy.make_generate(model, tok, dtype="bfloat16")(model, tok, PROMPTS, max_new_tokens=6,
                                                                 show_progress=False)
    assert len(replies) == len(PROMPTS) and all(isinstance(r, str) for r in replies)
    assert seen and set(seen) == {torch.bfloat16}


def test_merged_copy_caches_casts_and_folds_the_adapter(ending, tiny):
    assert greedy.merged_copy(tiny[0]) is tiny[0], "a plain model is decoded as it is"
    model, _ = ending
    plain = greedy.merged_copy(model)
    assert not hasattr(plain, "peft_config") and all(p.requires_grad for p in plain.parameters())
    assert not any("lora" in n for n, _ in plain.named_parameters())
    x = torch.randint(0, 100, (2, 5))
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, model(x).logits, atol=1e-4)


def test_backend_choices(tiny):
    model, tok = tiny
    assert resolve_backend("auto", "bfloat16", model) == "torch"
    assert resolve_backend("torch", "float32", model) == "torch"
    with pytest.raises(UserError, match="int8"):
        resolve_backend("torch", "int8", model)
    with pytest.raises(UserError, match="eval.dtype=int8"):
        config.load("quickstart", ["eval.backend=torch", "eval.dtype=int8"])
    gen = make_generate(model, tok, config.load("quickstart", ["eval.backend=torch"]).eval)
    with pytest.raises(UserError, match="greedily"):
        gen(model, tok, PROMPTS[:1], do_sample=True)
    assert greedy.decode(model, tok, [], show_progress=False) == []
