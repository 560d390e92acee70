"""Length-grouped batches: every row once per epoch, similar lengths together, seeded; SFT and SEAL use them."""

from __future__ import annotations

import numpy as np
import torch

from safeselect.core.rows import Row
from safeselect.training.batching import LengthGroupedSampler, length_grouped


def test_length_grouped_exact():
    lengths = [5, 1, 9, 3, 7, 2]
    batches = length_grouped([0, 1, 2, 3, 4, 5], lengths, 2, lambda k: list(reversed(range(k))), mega=50)
    # Sorted longest first: 2 (9), 4 (7), 0 (5), 3 (3), 5 (2), 1 (1); batches then reversed.
    assert batches == [[5, 1], [0, 3], [2, 4]]
    # Mega-batches of 1 batch: each batch is sorted within itself only.
    assert length_grouped([0, 1, 2, 3], lengths, 2, lambda k: range(k), mega=1) == [[0, 1], [2, 3]]


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
