"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2``: the SFT loop on two gloo processes."""

from __future__ import annotations

import json
import sys

import torch
from accelerate import Accelerator

from safeselect.config.schema import LoraConfig, TrainConfig
from safeselect.core.rows import Row
from safeselect.models import add_lora, load_model
from safeselect.training.losses import row_losses
from safeselect.training.sft import train_sft


def main(out: str) -> None:
    acc = Accelerator(cpu=True)
    model, tok = load_model("tiny-llama")
    model = add_lora(model, LoraConfig(r=4, alpha=8))
    rows = [Row(f"r{i}", f"what is {i} plus {i}?", f"the answer is {2 * i}.") for i in range(16)]
    before = float(row_losses(model, tok, rows, 64).mean())
    res = train_sft(model, tok, rows, TrainConfig(epochs=3, lr=5e-3, batch_size=4, micro_batch_size=4), 64,
                    show_progress=False, accelerator=acc)
    model = res["model"]
    after = float(row_losses(model, tok, rows, 64).mean())
    checksum = float(sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad))
    with open(f"{out}.{acc.process_index}.json", "w") as fh:
        json.dump({"world": acc.num_processes, "before": before, "after": after, "checksum": checksum,
                   "steps": res["steps"]}, fh)
    torch.distributed.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
