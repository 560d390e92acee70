"""What resumable checkpoints cost: size on disk and time per optimiser step, against the same fine-tune without them.

    python benchmarks/bench_checkpoint.py                      # SmolLM2-135M + LoRA r16, 8 steps, a checkpoint each step
    python benchmarks/bench_checkpoint.py --model tiny-llama   # seconds, for a smoke check

Prints the checkpoint's size beside the whole model's weights (a checkpoint keeps only the trained
LoRA weights, the optimiser state and the RNG states) and the wall-time ratio of the fine-tune with a
checkpoint every step to the same fine-tune without. Both runs are measured in this process, one after
the other, on the same rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    import torch

    from safeselect.config.schema import LoraConfig, TrainConfig
    from safeselect.core.rows import Row
    from safeselect.models import add_lora, load_model
    from safeselect.training.sft import train_sft

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [Row(f"r{i}", f"what is {i} plus {i}? answer with the number only.", f"the answer is {2 * i}.")
            for i in range(8 * args.steps)]
    cfg = TrainConfig(epochs=1, lr=3e-4, batch_size=8, micro_batch_size=8, max_steps=args.steps)

    def fine_tune(ckpt: Path | None) -> float:
        torch.manual_seed(0)
        model, tok = load_model(args.model)
        model = add_lora(model, LoraConfig())
        t0 = time.perf_counter()
        train_sft(model, tok, rows, cfg, 96, show_progress=False, checkpoint_dir=ckpt, save_every=1 if ckpt else 0)
        return time.perf_counter() - t0

    model, _ = load_model(args.model)
    full_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    del model
    fine_tune(None)  # warm-up: first-call costs (allocator, kernels) out of both measurements
    with tempfile.TemporaryDirectory() as d:
        plain = fine_tune(None)
        with_ckpt = fine_tune(Path(d) / "ckpt")
        step_dir = next((Path(d) / "ckpt").glob("step-*"))
        ckpt_mb = _dir_mb(step_dir)
    print(f"model {args.model}, LoRA r16, {args.steps} steps of 8 rows, a checkpoint every step")
    print(f"whole model weights          {full_mb:8.1f} MB")
    print(f"one checkpoint on disk       {ckpt_mb:8.1f} MB  ({ckpt_mb / full_mb:.3f}x the model)")
    print(f"fine-tune without checkpoints {plain:7.1f} s")
    print(f"fine-tune, checkpoint / step {with_ckpt:8.1f} s  ({with_ckpt / plain:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
