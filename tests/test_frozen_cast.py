"""bf16 training holds the frozen base as bf16 copies (sft.frozen_weights_cast): the same losses and gradients
as autocast casting it at every pass, the float32 weights and the tied output layer put back afterwards."""

from __future__ import annotations

import pytest
import torch

from safeselect.config.schema import LoraConfig, TrainConfig
from safeselect.core.rows import Row
from safeselect.training import sft
from safeselect.training.encode import collate, encode
from safeselect.training.losses import per_row_loss


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    with sft.autocast("cpu", "bf16"):
        rows = per_row_loss(model, batch)
    rows.float().sum().backward()
    return rows.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_the_cast_copies_give_the_same_losses_and_gradients_and_are_put_back(tiny_lora):
    model, tok = tiny_lora
    batch = collate([encode(tok, "a prompt of some length", "one two three", 64), encode(tok, "p", "four", 64)],
                    tok.pad_token_id)
    before = {n: p for n, p in model.named_parameters()}
    ref_losses, ref_grads = _loss_and_grads(model, batch)
    with sft.frozen_weights_cast(model, "bf16"):
        base = model.get_base_model()
        q = base.model.layers[0].self_attn.q_proj
        assert q.base_layer.weight.dtype == torch.bfloat16, "a frozen LoRA base weight is held in bf16"
        assert q.lora_A["default"].weight.dtype == torch.float32, "adapter weights are never cast"
        assert base.lm_head.weight.dtype == torch.bfloat16
        assert base.model.embed_tokens.weight.dtype == torch.float32, "the tied embedding keeps its float32 table"
        losses, grads = _loss_and_grads(model, batch)
    assert torch.equal(losses, ref_losses)
    assert grads.keys() == ref_grads.keys() and all(torch.equal(grads[n], ref_grads[n]) for n in grads)
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in after), "the same Parameters back"
    base = model.get_base_model()
    assert base.lm_head.weight is base.model.embed_tokens.weight, "the tie is restored"
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(("precision", "dist"), [("no", "NO"), ("bf16", "DistributedType.FSDP"),
                                                 ("bf16", "DistributedType.DEEPSPEED")])
def test_the_cast_is_a_no_op_without_bf16_and_under_sharded_training(tiny_lora, precision, dist):
    model, _ = tiny_lora
    with sft.frozen_weights_cast(model, precision, dist):
        assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_sft_trains_as_without_the_cast_and_leaves_a_float32_model(monkeypatch):
    from safeselect.models import add_lora, load_model

    rows = [Row(f"r{i}", f"what is {i} plus {i}?" + " please" * (i % 3), f"the answer is {2 * i}.") for i in range(6)]
    cfg = TrainConfig(epochs=1, lr=5e-3, batch_size=3, micro_batch_size=3, mixed_precision="bf16")
    cast_entered: list[bool] = []
    real = sft.frozen_weights_cast

    def spy(model, precision, dist="NO"):
        cast_entered.append(precision == "bf16")
        return real(model, precision, dist)

    out = {}
    for with_cast in (True, False):
        monkeypatch.setattr(sft, "frozen_weights_cast", spy if with_cast else (lambda *a: sft.contextlib.nullcontext()))
        torch.manual_seed(0)
        model, tok = load_model("tiny-llama")
        model = add_lora(model, LoraConfig(r=8, alpha=16))
        res = sft.train_sft(model, tok, rows, cfg, 64, seed=1, show_progress=False)
        out[with_cast] = res["losses"]
        assert all(p.dtype == torch.float32 for p in res["model"].parameters())
    assert cast_entered == [True]
    assert len(out[True]) == 2 and out[True] == out[False], "the copies hold autocast's own values"


@pytest.mark.parametrize("algorithm", ["memory_efficient", "auxiliary"])
def test_bf16_seal_selects_as_without_the_cast(algorithm, monkeypatch):
    """SEAL's epochs take the copies too; Algorithm 1's second adapter (frozen while theta steps) is never cast."""
    from test_seal_train import make_rows

    from safeselect.config.schema import SealConfig
    from safeselect.models import load_model
    from safeselect.selection import seal

    task, safe = make_rows(12, 8, 4, length=5)
    cfg = SealConfig(epochs=1, lr=3e-3, batch_size=4, micro_batch_size=4, selector_lr=5e-2, algorithm=algorithm,
                     aux_steps=1)
    out = {}
    for with_cast in (True, False):
        if not with_cast:
            monkeypatch.setattr(seal, "frozen_weights_cast", lambda *a: sft.contextlib.nullcontext())
        torch.manual_seed(0)
        model, tok = load_model("tiny-llama")
        trainer = seal.SealTrainer(model, tok, task, safe, cfg, lora_cfg=LoraConfig(r=4, alpha=8), max_length=48,
                                   seed=0, mixed_precision="bf16")
        run = trainer.fit(show_progress=False)
        out[with_cast] = (run.logits, [h["mean_safe_loss"] for h in run.history])
        assert all(p.dtype == torch.float32 for p in trainer.core.parameters())
    assert (out[True][0] == out[False][0]).all() and out[True][1] == out[False][1]
    assert not (out[True][0] == out[True][0][0]).all(), "the selector moved, or the test shows nothing"
