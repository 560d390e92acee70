"""Per-example gradients: the vectorised methods equal a per-example loop (tiny-llama + LoRA), exactly enough."""

from __future__ import annotations

import pytest

from safeselect.config.schema import LoraConfig
from safeselect.errors import UserError

ROWS = [
    ("how many apples does tom have", "tom has 3 apples"),
    ("review: great movie, i love it", "positive"),
    ("how do i hack a bank account", "sorry, i cannot help with that request because it is illegal"),
    ("hi", "hello there friend, how can i help you with your code"),
]


@pytest.fixture
def lora_batch(tiny):
    """A LoRA model whose B matrices are non-zero (so A gets gradients too) and a right-padded batch."""
    import torch

    from safeselect.models import add_lora
    from safeselect.training.encode import collate, encode

    model, tok = tiny
    model = add_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model.train()
    batch = collate([encode(tok, p, r, 64) for p, r in ROWS], tok.pad_token_id)
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1  # rows of different lengths: padding matters
    return model, batch


@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_vectorised_equals_per_example_loop(lora_batch, method):
    from safeselect.training.per_example import num_trainable, per_example_grads, per_example_grads_loop

    model, batch = lora_batch
    loss_ref, g_ref = per_example_grads_loop(model, batch)
    loss, g = per_example_grads(model, batch, method=method)
    assert g.shape == (len(ROWS), num_trainable(model))
    assert g_ref.abs().max() > 1e-3  # a real gradient, not zeros equal to zeros
    assert (g - g_ref).abs().max().item() < 1e-5
    assert (loss - loss_ref).abs().max().item() < 1e-5


def test_per_row_loss_with_precomputed_positions_is_the_same_loss(lora_batch):
    import torch

    from safeselect.training.losses import learned_positions, per_row_loss

    model, batch = lora_batch
    pos = learned_positions(batch["labels"])
    assert pos.tolist() == [t for t in range(batch["labels"].shape[1] - 1)
                            if (batch["labels"][:, t + 1] != -100).any()]
    with torch.no_grad():
        a = per_row_loss(model, batch)
        b = per_row_loss(model, {**batch, "positions": pos})
    assert torch.allclose(a, b, atol=1e-6)


def test_vmap_restores_attention_implementation(lora_batch):
    from safeselect.training.per_example import per_example_grads

    model, batch = lora_batch
    before = model.get_base_model().config._attn_implementation
    per_example_grads(model, batch, method="vmap")
    assert model.get_base_model().config._attn_implementation == before


def test_mean_of_per_example_grads_is_the_batched_gradient(lora_batch):
    from safeselect.training.losses import per_row_loss
    from safeselect.training.per_example import flatten_param_grads, per_example_grads

    model, batch = lora_batch
    _, g = per_example_grads(model, batch, method="hooks")
    model.zero_grad()
    per_row_loss(model, batch).mean().backward()
    assert (g.mean(0) - flatten_param_grads(model)).abs().max().item() < 1e-6
    model.zero_grad()


@pytest.mark.parametrize("method", ["hooks", "loop"])
def test_dots_against_a_fixed_vector(lora_batch, method):
    import torch

    from safeselect.training.per_example import per_example_dots, per_example_grads_loop

    model, batch = lora_batch
    _, g = per_example_grads_loop(model, batch)
    v = torch.randn(g.shape[1], generator=torch.Generator().manual_seed(1))
    _, dots, sq = per_example_dots(model, batch, v, method=method)
    assert torch.allclose(dots, g @ v, atol=1e-5)
    assert torch.allclose(sq, (g * g).sum(1), atol=1e-6)


def test_flat_grad_round_trip(lora_batch):
    import torch

    from safeselect.training.per_example import assign_flat_grad, flatten_param_grads, num_trainable

    model, _ = lora_batch
    flat = torch.arange(num_trainable(model), dtype=torch.float32)
    assign_flat_grad(model, flat)
    assert torch.equal(flatten_param_grads(model), flat)
    with pytest.raises(ValueError):
        assign_flat_grad(model, flat[:-1])
    model.zero_grad(set_to_none=True)


def test_auto_method(lora_batch):
    from safeselect.models import add_lora, load_model
    from safeselect.training.per_example import resolve_method

    model, _ = lora_batch
    assert resolve_method(model) == "hooks"  # every trainable parameter is a LoRA Linear
    full, _ = load_model("tiny-llama")
    full = add_lora(full, LoraConfig(enabled=False))  # embeddings and norms trainable: not Linear-only
    assert resolve_method(full) == "vmap"
    with pytest.raises(UserError, match="did you mean 'vmap'"):
        resolve_method(model, "vmapp")
    full.activation_checkpointing_enable()
    assert resolve_method(full) == "loop"  # hooks and vmap cannot see through recomputation
    with pytest.raises(UserError, match="checkpointing"):
        resolve_method(full, "hooks")
