"""Fine-tuning alone: the training paths side by side in one run, per optimiser step.

The quickstart's fine-tune (SmolLM2-135M with LoRA on the `random` selection of the built-in
task mix; the aligned model when cached, else SmolLM2 itself), ``--steps`` optimiser steps each,
the same rows, seed and LoRA initialisation on every path:

* ``reference``: every row run in full (no shared-prefix pass), whole random batches: the path
  before issue #13;
* ``shared prefix``: the token prefix every row of a batch shares (the chat template's system
  prompt) run once per batch (:func:`safeselect.training.losses.per_row_loss`), whole batches;
* ``shared prefix + sub-batches``: each batch run as sub-batches of similar length
  (:func:`safeselect.training.sft.sub_batches`, the fallback of ``finetune.split_padding`` for models
  that cannot be packed), the same batches;
* ``shared prefix + packed`` (the default): each batch's rows packed into one sequence, attention
  per row (``finetune.split_padding``: :mod:`safeselect.training.packing`), the same batches;
* ``shared prefix + packed + grouped``: ``finetune.group_by_length`` (batches of similar length:
  other batches).

Time is CPU time of this process (one thread); the first four paths see the same batches, so
their losses agree to float rounding, which the table shows.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--steps 8] [key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from bench_cell import cpu_s, load_avg, warm_up


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimiser steps per path")
    ap.add_argument("overrides", nargs="*", help="config overrides of the quickstart, e.g. data.difficulty=erosion")
    args = ap.parse_args(argv)

    import dataclasses
    import tempfile
    from pathlib import Path

    import torch

    from safeselect.config.loading import load
    from safeselect.models import add_lora, load_model
    from safeselect.pipeline.run import aligned_dir, build_bundle, select
    from safeselect.training.losses import no_packing, rows_apart
    from safeselect.training.sft import train_sft

    torch.set_num_threads(1)
    cfg = load("quickstart", ["compare=[]", "selection.method=random", *args.overrides])
    bundle = build_bundle(cfg)
    selection, _ = select(cfg, bundle, Path(tempfile.mkdtemp()), show_progress=False)
    kept = selection.kept_rows(bundle.task)
    aligned = aligned_dir(cfg, bundle, show_progress=False)
    start = str(aligned) if aligned is not None else cfg.model.name
    print(f"{len(kept)} rows, {args.steps} steps per path, start {start}, load average {load_avg()}", file=sys.stderr)

    warm_up(cfg, start, kept)
    rows = []
    ref_cpu = None
    for name, share, split, pack, group in (
            ("reference", False, False, False, False), ("shared prefix", True, False, False, False),
            ("shared prefix + sub-batches", True, True, False, False),
            ("shared prefix + packed (default)", True, True, True, False),
            ("shared prefix + packed + grouped", True, True, True, True)):
        torch.manual_seed(cfg.seed)
        model, tok = load_model(start, cfg.model)
        model = add_lora(model, cfg.model.lora)
        tc = dataclasses.replace(cfg.finetune, group_by_length=group, split_padding=split, max_steps=args.steps)
        c = cpu_s()
        with contextlib.nullcontext() if share else rows_apart(), no_packing(not pack):
            res = train_sft(model, tok, kept, tc, cfg.model.max_length, seed=cfg.seed, show_progress=False)
        c = cpu_s() - c
        ref_cpu = ref_cpu or c
        losses = res["losses"]
        rows.append(f"| {name} | {c / res['steps']:.2f} | {ref_cpu / c:.2f}x | {losses[0]:.4f} | {losses[-1]:.4f} |")
    print("| path | CPU s per step | speed-up (CPU) | first-step loss | last-step loss |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{len(kept)} rows, batch {cfg.finetune.batch_size}, {args.steps} steps, one thread; load average at "
          f"the end {load_avg()}. Command: `OMP_NUM_THREADS=1 python benchmarks/bench_train.py --steps {args.steps}"
          f"{''.join(' ' + o for o in args.overrides)}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
