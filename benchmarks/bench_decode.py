"""Evaluation decoding alone: HF ``generate`` float32 against CTranslate2 at two batch sizes, in one run.

On the quickstart's aligned SmolLM2-135M (SmolLM2 itself with ``--base`` or when no aligned model is
cached) and the first ``--n`` prompts of its harmful and look-alike evaluation sets (half each), 48
greedy tokens, one thread:

* ``hf``: the reference, ``eval.backend=hf`` at ``eval.batch_size`` 16;
* ``ct2 b16``: CTranslate2 float32 at the same batch size;
* ``ct2 b64``: CTranslate2 float32 at ``eval.ct2_batch_size`` 64 (the default);
* ``ct2 int8 b64``: int8 weights (``eval.dtype=int8``), for the record;
* ``torch b64``, ``torch bf16 b64`` / ``b128``: the PyTorch loop that drops finished rows
  (``eval.backend=torch``) in float32 and in bfloat16 autocast (``eval.dtype=bfloat16``: fast with AMX
  or AVX-512 BF16, which the output names).

Both CTranslate2 rows decode the shared system-prompt prefix once (``static_prompt``). Each row
prints CPU seconds (user + system of this process; it moves far less with other jobs than wall time),
wall seconds, the speed-up over ``hf`` in CPU time, the share of replies identical to ``hf`` and the
share of identical refusal-judge verdicts.

    OMP_NUM_THREADS=1 python benchmarks/bench_decode.py [--n 128] [--base]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from bench_cell import cpu_flags, cpu_s, load_avg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="prompts (half harmful, half look-alike)")
    ap.add_argument("--base", action="store_true", help="SmolLM2 itself, not the aligned model")
    args = ap.parse_args(argv)

    import time

    import torch

    from safeselect.config import loading
    from safeselect.core.stats import wilson_interval
    from safeselect.evaluation.generate import make_generate
    from safeselect.judges.refusal import RefusalJudge
    from safeselect.models import load_model
    from safeselect.pipeline.run import build_bundle, load_aligned

    torch.set_num_threads(1)
    cfg = loading.load("quickstart", [])
    bundle = build_bundle(cfg)
    model, tok = load_model(cfg.model.name, cfg.model) if args.base else load_aligned(cfg, bundle)
    half = args.n // 2
    prompts = [r.prompt for r in next(iter(bundle.eval_harmful.values()))[:half]]
    prompts += [r.prompt for r in next(iter(bundle.eval_overrefusal.values()))[:args.n - half]]
    judge = RefusalJudge(cfg)
    paths = [("hf", dict(backend="hf")), ("ct2 b16", dict(backend="ctranslate2", ct2_batch_size=16)),
             ("ct2 b64", dict(backend="ctranslate2", ct2_batch_size=64)),
             ("ct2 int8 b64", dict(backend="ctranslate2", dtype="int8", ct2_batch_size=64)),
             ("torch b64", dict(backend="torch", torch_batch_size=64)),
             ("torch bf16 b64", dict(backend="torch", dtype="bfloat16", torch_batch_size=64)),
             ("torch bf16 b128", dict(backend="torch", dtype="bfloat16", torch_batch_size=128))]
    print(f"{len(prompts)} prompts, load average {load_avg()}, CPU {cpu_flags()}", file=sys.stderr)
    rows, ref, ref_cpu = [], None, None
    for name, knobs in paths:
        gen = make_generate(model, tok, dataclasses.replace(cfg.eval, **knobs))
        gen(model, tok, prompts[:2], max_new_tokens=2, show_progress=False)  # conversion outside the timing
        c, w = cpu_s(), time.perf_counter()
        out = gen(model, tok, prompts, max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                  show_progress=False)
        c, w = cpu_s() - c, time.perf_counter() - w
        verdicts = judge.refused(out)
        if ref is None:
            ref, ref_verdicts, ref_cpu = out, verdicts, c
        same = sum(a == b for a, b in zip(out, ref, strict=True)) / len(out)
        k = sum(a == b for a, b in zip(verdicts, ref_verdicts, strict=True))
        lo, hi = wilson_interval(k, len(out)) or (float("nan"), float("nan"))
        rows.append(f"| {name} | {c:.1f} ({w:.1f}) | {ref_cpu / c:.2f}x | {same:.3f} | {k / len(out):.3f} "
                    f"[{lo:.3f}, {hi:.3f}] |")
    print("| path | CPU s (wall s) | speed-up (CPU) | identical replies | identical verdicts [95% Wilson] |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{len(prompts)} prompts, {cfg.eval.max_new_tokens} tokens, one thread; load average at the end "
          f"{load_avg()}. Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} python "
          f"benchmarks/bench_decode.py --n {args.n}{' --base' if args.base else ''}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
