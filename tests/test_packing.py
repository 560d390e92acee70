"""Packed rows: a padded batch run as one sequence of its real tokens gives the padded batch's losses and
gradients, in one pass; where packing must not apply, it does not."""

from __future__ import annotations

import torch

from safeselect.config.schema import LoraConfig, TrainConfig
from safeselect.core.rows import Row
from safeselect.training import losses, packing
from safeselect.training.encode import collate, encode


def _batch(tok):
    items = [encode(tok, "a prompt of some length here", "one two three four", 64), encode(tok, "p", "four", 64),
             encode(tok, "another one", "five six", 64)]
    return collate(items, tok.pad_token_id)


def test_plan_exact():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    plan = packing.plan(mask, 2)  # after the prefix: 2, 1 and 3 tokens
    assert plan.valid.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert plan.index.tolist() == [[0, 1, 0], [2, 0, 0], [3, 4, 5]]
    assert plan.real.tolist() == [0, 1, 3, 6, 7, 8]
    assert plan.position_ids.tolist() == [[0, 1, 2, 3, 2, 2, 3, 4]], "the prefix, then each row's tokens"
    assert plan.mask.shape == (3, 1, 3, 5)
    # Row 0: both prefix keys, then its own keys causally; its padding key (slot 2) never.
    assert plan.mask[0, 0].long().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    assert plan.mask[2, 0].long().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert packing.plan(mask, 0).position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]]


def test_packed_losses_and_gradients_equal_the_padded_batch(tiny_lora, monkeypatch):
    model, tok = tiny_lora
    batch = _batch(tok)
    params = [p for p in model.parameters() if p.requires_grad]
    plans: list[packing.Plan] = []
    real_plan = packing.plan
    monkeypatch.setattr(packing, "plan", lambda *a: plans.append(real_plan(*a)) or plans[-1])
    seen: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    assert losses.packing_applies(model)
    packed = losses.per_row_loss(model, batch)
    hook.remove()
    g_packed = torch.autograd.grad(packed.mean(), params)
    with losses.no_packing():
        padded = losses.per_row_loss(model, batch)
    g_padded = torch.autograd.grad(padded.mean(), params)
    lengths = batch["attention_mask"].sum(dim=1)
    p = plans[0].prefix
    assert len(plans) == 1 and p >= 2, "the chat template's shared prefix, run once"
    assert seen == [(1, p + int((lengths - p).sum()))], "one pass: the prefix once, then every row's real tokens"
    assert torch.allclose(packed, padded, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_packed, g_padded, strict=True))
    assert model.get_base_model().config._attn_implementation == "sdpa", "the attention is restored"
    with torch.no_grad():  # scoring (eval mode, no grad) packs as well, and so does a batch without padding
        model.eval()
        assert torch.allclose(losses.per_row_loss(model, batch), padded, atol=1e-5)
        same = collate([encode(tok, "p", "four", 64)] * 2, tok.pad_token_id)
        assert bool(same["attention_mask"].all())
        with losses.no_packing():
            expected = losses.per_row_loss(model, same)
        assert torch.allclose(losses.per_row_loss(model, same), expected, atol=1e-5)


def test_packing_does_not_apply_where_it_must_not(tiny_lora):
    model, _ = tiny_lora
    assert losses.packing_applies(model)
    with losses.no_packing():
        assert not losses.packing_applies(model)
        with losses.no_packing(False):
            assert not losses.packing_applies(model), "an inner block does not turn it back on"
    with losses.rows_apart():
        assert not losses.packing_applies(model), "per-example gradients need every row's activations"
    model.train()
    model.activation_checkpointing_enable()
    assert not losses.packing_applies(model), "checkpointing recomputes outside the packed block"
    model.activation_checkpointing_disable()
    base = model.get_base_model()
    base.config._attn_implementation = "eager"
    assert not losses.packing_applies(model), "only SDPA attention is packed"
    base.config._attn_implementation = "sdpa"


def test_sft_packs_its_batches_and_trains_as_padded(tiny, monkeypatch):
    from safeselect.models import add_lora, load_model
    from safeselect.training import sft

    rows = [Row(f"r{i}", f"what is {i} plus {i}?" + " please" * (i % 4), f"the answer is {2 * i}.") for i in range(8)]
    calls: list[int] = []
    real_packed = losses.packed_row_loss
    monkeypatch.setattr(losses, "packed_row_loss", lambda m, b: calls.append(1) or real_packed(m, b))
    result = {}
    for split in (True, False):
        torch.manual_seed(0)
        model, tok = load_model("tiny-llama")
        model = add_lora(model, LoraConfig(r=8, alpha=16))
        cfg = TrainConfig(epochs=2, lr=5e-3, batch_size=4, micro_batch_size=4, split_padding=split)
        result[split] = sft.train_sft(model, tok, rows, cfg, 64, seed=1, show_progress=False)["losses"]
        assert bool(calls) == split, "split_padding packs; false keeps the padded batches"
        calls.clear()
    assert len(result[True]) == 4
    assert all(abs(a - b) < 1e-5 for a, b in zip(result[True], result[False], strict=True))


def test_cpu_bf16_autocast_attention_runs_in_float32():
    """Under CPU bfloat16 autocast the packed path's attention runs in float32 (the bf16 CPU kernel's backward
    is slow), returning the query's dtype; outside autocast it is transformers' SDPA as it is."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.is_causal, module.training = True, False
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    plain, _ = sdpa_attention_forward(module, q, k, v, None)
    assert torch.equal(packing.sdpa(module, q, k, v, None)[0], plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, _ = packing.sdpa(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None)
        stock, _ = sdpa_attention_forward(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None)
    exact, _ = sdpa_attention_forward(module, q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), None)
    assert fast.dtype == torch.bfloat16 and torch.equal(fast, exact.bfloat16())
    assert not torch.equal(stock, exact.bfloat16()), "the bf16 kernel must differ, or the test shows nothing"
