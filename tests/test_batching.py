"""Length-grouped batches: every row once per epoch, similar lengths together, seeded; SFT and SEAL use them.
Sub-batches of one batch: the least padded compute, the same gradient."""

from __future__ import annotations

import numpy as np
import torch

from safeselect.core.rows import Row
from safeselect.training.batching import LengthGroupedSampler, length_grouped, padding_groups


def test_length_grouped_exact():
    lengths = [5, 1, 9, 3, 7, 2]
    batches = length_grouped([0, 1, 2, 3, 4, 5], lengths, 2, lambda k: list(reversed(range(k))), mega=50)
    # Sorted longest first: 2 (9), 4 (7), 0 (5), 3 (3), 5 (2), 1 (1); batches then reversed.
    assert batches == [[5, 1], [0, 3], [2, 4]]
    # Mega-batches of 1 batch: each batch is sorted within itself only.
    assert length_grouped([0, 1, 2, 3], lengths, 2, lambda k: range(k), mega=1) == [[0, 1], [2, 3]]


def test_padding_groups_exact():
    lengths = [10, 100, 12, 98]
    # Whole: 4 x 100 + 5 = 405; {10, 12} + {98, 100}: 2 x 12 + 5 + 2 x 100 + 5 = 234 (the least);
    # {10} {12} {98, 100}: 10 + 12 + 200 + 15 = 237.
    assert padding_groups(lengths, 5) == [[0, 2], [1, 3]]
    assert padding_groups(lengths, 1000) == [[0, 1, 2, 3]], "a dear pass: one batch"
    assert padding_groups(lengths, 0) == [[0], [2], [3], [1]], "a free pass: every length alone"
    assert padding_groups([7, 7, 7], 0) == [[0, 1, 2]], "ties cost nothing together"
    assert padding_groups([], 3) == []


def test_sampler_covers_every_row_and_pads_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 200, size=101).tolist()
    sampler = LengthGroupedSampler(lengths, 8, torch.Generator().manual_seed(3))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 13
    assert sorted(i for b in batches for i in b) == list(range(101))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    perm = torch.randperm(101, generator=torch.Generator().manual_seed(3)).tolist()
    plain = sum(max(lengths[i] for i in perm[s:s + 8]) * len(perm[s:s + 8]) for s in range(0, 101, 8))
    assert padded < 0.8 * plain
    again = list(LengthGroupedSampler(lengths, 8, torch.Generator().manual_seed(3)))
    assert again == batches, "same seed, same batches"


def test_sft_with_grouped_batches_learns(tiny):
    from safeselect.config.schema import LoraConfig, TrainConfig
    from safeselect.models import add_lora
    from safeselect.training.losses import row_losses
    from safeselect.training.sft import train_sft

    model, tok = tiny
    model = add_lora(model, LoraConfig(r=8, alpha=16))
    rows = [Row(f"r{i}", f"what is {i} plus {i}?" + " please" * (i % 4), f"the answer is {2 * i}.") for i in range(8)]
    before = row_losses(model, tok, rows, 64)
    cfg = TrainConfig(epochs=4, lr=5e-3, batch_size=4, micro_batch_size=2, group_by_length=True)
    res = train_sft(model, tok, rows, cfg, 64, show_progress=False)
    after = row_losses(model, tok, rows, 64)
    assert res["steps"] == 8
    assert np.mean(after) < np.mean(before) - 0.3


def test_seal_epoch_batches_grouped(tiny):
    from safeselect.config.loading import load
    from safeselect.selection.seal import SealTrainer

    model, tok = tiny
    cfg = load("seal", ["model.name=tiny-llama", "selection.seal.batch_size=4"])
    task = [Row(f"t{i}", "q" + " word" * (i * 3 % 11), "a") for i in range(12)]
    safe = [Row("s0", "bad", "no")]
    tr = SealTrainer(model, tok, task, safe, cfg.selection.seal, lora_cfg=cfg.model.lora, max_length=64,
                     group_by_length=True)
    batches = tr.epoch_batches(0)
    assert sorted(int(i) for b in batches for i in b) == list(range(12))
    lens = [len(it["input_ids"]) for it in tr.task_items]
    spread = sum(max(lens[i] for i in b) - min(lens[i] for i in b) for b in batches)
    tr.group_by_length = False
    plain = sum(max(lens[i] for i in b) - min(lens[i] for i in b) for b in tr.epoch_batches(0))
    assert spread < plain


def test_sub_batches_give_the_batch_gradient(tiny):
    # The split must be invisible to the optimiser: the same weighted mean loss, the same gradient.
    from safeselect.config.schema import LoraConfig
    from safeselect.models import add_lora
    from safeselect.training.encode import collate, encode
    from safeselect.training.losses import per_row_loss
    from safeselect.training.sft import sub_batches

    model, tok = tiny
    model = add_lora(model, LoraConfig(r=8, alpha=16))
    with torch.no_grad():  # a trained adapter, so every LoRA weight gets a gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
    texts = [("hi", "ok"), ("a much longer prompt " * 4, "and a longer reply " * 3), ("yo", "fine"),
             ("another long prompt " * 4, "reply " * 5)]
    batch = collate([encode(tok, p, r, 128) for p, r in texts], tok.pad_token_id)
    batch["weights"] = torch.tensor([1.0, 0.5, 2.0, 0.0])
    params = [p for p in model.parameters() if p.requires_grad]
    whole = (per_row_loss(model, batch) * batch["weights"]).mean()
    g_whole = torch.autograd.grad(whole, params)
    parts = sub_batches(batch, overhead=0.0)
    assert len(parts) > 1 and sum(p["input_ids"].shape[0] for p in parts) == 4
    assert max(p["input_ids"].shape[1] for p in parts) == batch["input_ids"].shape[1]
    assert min(p["input_ids"].shape[1] for p in parts) < batch["input_ids"].shape[1], "short rows lose their padding"
    split = sum((per_row_loss(model, p) * p["weights"]).sum() for p in parts) / 4
    g_split = torch.autograd.grad(split, params)
    assert torch.allclose(whole, split, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_whole, g_split, strict=True))
    assert sub_batches(batch, overhead=1e9) == [batch]


def test_sft_with_split_batches_matches_whole_batches(tiny):
    import copy

    from safeselect.config.schema import LoraConfig, TrainConfig
    from safeselect.models import add_lora
    from safeselect.training.sft import train_sft

    model, tok = tiny
    rows = [Row(f"r{i}", "q" + " word" * (i * 5 % 13), "a" + " b" * (i % 3)) for i in range(12)]
    runs = {}
    for split in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation for both
        m = add_lora(copy.deepcopy(model), LoraConfig(r=8, alpha=16))
        cfg = TrainConfig(epochs=2, lr=5e-3, batch_size=4, micro_batch_size=4, split_padding=split)
        runs[split] = train_sft(m, tok, rows, cfg, 64, seed=1, show_progress=False)["losses"]
    assert len(runs[True]) == len(runs[False]) == 6
    np.testing.assert_allclose(runs[True], runs[False], atol=1e-5)


def test_seal_micro_batches_by_length_keep_the_step():
    from safeselect.training.batching import in_order, length_chunks

    items = [{"input_ids": [0] * n} for n in (9, 2, 7, 2, 5)]
    chunks = length_chunks(items, 2)
    assert chunks == [[1, 3], [4, 2], [0]]  # by length, ties in item order
    parts = [torch.tensor([10.0, 30.0]), torch.tensor([40.0, 20.0]), torch.tensor([0.0])]
    assert in_order(parts, chunks).tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]


def test_seal_sorted_micro_batches_give_the_same_losses_and_gradient(tiny):
    # The model step's sum_j coef_j l_j must not depend on how its rows are cut into micro-batches.
    from safeselect.config.loading import load
    from safeselect.selection.seal import SealTrainer

    model, tok = tiny
    cfg = load("seal", ["model.name=tiny-llama"])
    task = [Row(f"t{i}", "q" + " word" * (i * 5 % 13), "a" + " b" * (i % 4)) for i in range(6)]
    tr = SealTrainer(model, tok, task, [Row("s0", "bad", "no")], cfg.selection.seal, lora_cfg=cfg.model.lora,
                     max_length=64)
    coef = torch.linspace(0.1, 1.0, 6)
    results = []
    for micro in (6, 2):  # one pass in item order; three passes of similar length
        tr.micro = micro
        tr.opt.zero_grad(set_to_none=True)
        losses = tr._backward_losses(tr.model, tr.task_items, coef, sync=False)
        grads = [p.grad.clone() for p in tr.main_params if p.grad is not None]
        results.append((losses, grads, tr._losses(tr.model, tr.task_items)))
    (l6, g6, n6), (l2, g2, n2) = results
    assert g6 and torch.allclose(l6, l2, atol=1e-6) and torch.allclose(n6, n2, atol=1e-6)
    assert torch.allclose(l6, n6, atol=1e-6), "losses come back in the rows' order"
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g6, g2, strict=True))
