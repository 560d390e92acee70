"""The CTranslate2 evaluation backend: same greedy replies as HF generate, config choices, guards."""

from __future__ import annotations

import pytest
import torch

from safeselect.config import loading as config
from safeselect.errors import UserError
from safeselect.evaluation import ct2
from safeselect.evaluation.generate import generate, make_generate, resolve_backend

pytest.importorskip("ctranslate2")

PROMPTS = ["hello there", "what is 2+3?", "tell me a story about a cat and a dog", "x", "kill a python process",
           "the weather is nice today, is it not?"]


def _lively(model):
    """Larger seeded weights, so greedy replies vary with the prompt (the seeded tiny model's are blank)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_ct2_float32_reproduces_hf_greedy_with_lora(tiny):
    from safeselect.models import add_lora

    model, tok = tiny
    model = add_lora(_lively(model), config.load("quickstart").model.lora)
    with torch.no_grad():  # a trained adapter (B != 0), so the merge matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=4, show_progress=False)
    fast = ct2.make_generate(model, tok)(model, tok, PROMPTS, max_new_tokens=10, batch_size=4, show_progress=False)
    assert len({r for r in ref}) > 2, "the test model must give varied replies"
    assert fast == ref
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before), "the caller's model must be left unchanged"


def test_backend_resolution(tiny):
    model, _ = tiny
    assert resolve_backend("auto", "float32", model) == "ctranslate2"
    assert resolve_backend("hf", "float32", model) == "hf"
    with pytest.raises(UserError, match="int8"):
        resolve_backend("hf", "int8", model)


def test_config_refuses_impossible_pairs():
    with pytest.raises(UserError, match="eval.dtype=int8"):
        config.load("quickstart", ["eval.backend=hf", "eval.dtype=int8"])
    with pytest.raises(UserError, match="eval.dtype=bfloat16"):
        config.load("quickstart", ["eval.backend=ctranslate2", "eval.dtype=bfloat16"])


def test_ct2_refuses_sampling(tiny):
    model, tok = tiny
    cfg = config.load("quickstart", ["eval.backend=ctranslate2"])
    gen = make_generate(model, tok, cfg.eval)
    with pytest.raises(UserError, match="greedily"):
        gen(model, tok, PROMPTS[:1], do_sample=True)


def test_shared_prefix_keeps_a_token_of_every_prompt():
    assert ct2.shared_prefix([["<s>", "sys", "a", "b"], ["<s>", "sys", "c"]]) == 2
    assert ct2.shared_prefix([["<s>", "sys", "a"], ["<s>", "sys", "a"]]) == 2  # one token stays outside
    assert ct2.shared_prefix([["a"], ["b", "c"]]) == 0 and ct2.shared_prefix([]) == 0


def test_ct2_large_batch_and_cached_prefix_keep_hf_replies(tiny):
    from safeselect.training.encode import prompt_ids

    model, tok = tiny
    model = _lively(model)
    tokens = [tok.convert_ids_to_tokens(prompt_ids(tok, p)) for p in PROMPTS]
    assert ct2.shared_prefix(tokens) > 0, "the chat template gives every prompt a common prefix"
    ref = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=2, show_progress=False)
    fast = ct2.make_generate(model, tok, batch_size=64)(model, tok, PROMPTS, max_new_tokens=10, batch_size=2,
                                                        show_progress=False)
    assert fast == ref
