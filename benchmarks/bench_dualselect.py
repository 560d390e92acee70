"""What DualSelect costs next to plain SFT: per-example gradients, the whole step, a reference refresh.

Setting (the issue's): SmolLM2-135M (``--model``), LoRA r16 on q_proj/v_proj,
a batch of 8 rows of 64 tokens, float32 (and, where ``finetune.mixed_precision=auto`` means bf16,
the plain step and DualSelect's step also in bf16 autocast). Rows are seeded random token ids with
the first 16 positions masked as prompt, so every row has exactly 64 tokens and
48 learned ones (the cost does not depend on the text). LoRA B starts at small
random values instead of zeros so that every gradient is non-zero.

Timed, each the median of ``--repeats`` calls after one untimed call, the
methods interleaved within every repeat so that load drift on a shared machine
hits them alike:

1. a plain batched SFT step: forward, backward of the mean row loss, clip,
   AdamW (what ``train_sft`` does per step) -- the unit of every ratio;
2. per-example gradients of the 8 rows as a [8, P] matrix: ``hooks`` (LoRA
   outer products), ``vmap`` (torch.func), ``loop`` (one backward per row, the
   released code's way); max |difference| of each against the loop;
3. the whole DualSelect step (``filtered_step``: per-example gradients,
   compatibility scores, budget, weights, correction, clip, AdamW) with each
   per-example method;
4. a refresh over ``--refs`` references (``refresh_references``: per-example
   gradients in chunks of 8, conflicts, top-K heap, g_ref): total and per
   reference, hooks against loop.

Targets from the issue: (2) at most 1.25x a plain step, (3) at most 2.5x.

``--shared-prefix 24`` gives every row the same first 24 tokens, as SmolLM2's chat template does: the plain
step then runs them once per batch (issue #13's shared-prefix pass), while per-example gradients run every row
apart, so the ratios are those of a real chat-data cell.

    flock /tmp/heavy.lock python benchmarks/bench_dualselect.py [--write FRAGMENT.md]   # a markdown section for docs/results.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BF16_STEP = "plain SFT step, bf16 autocast (the fine-tune's default here)"
BF16_DS = "DualSelect step (hooks), bf16 autocast (its default here)"


def build(model_name: str, device: str, r: int, targets: list[str], seed: int) -> tuple[Any, Any]:
    import torch

    from safeselect.config.schema import LoraConfig
    from safeselect.models import add_lora, load_model

    model, tok = load_model(model_name, device=device)
    model = add_lora(model, LoraConfig(r=r, alpha=2 * r, dropout=0.0, target_modules=targets))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_((torch.randn(p.shape, generator=gen) * 0.01).to(p.device))
    model.train()
    return model, tok


def make_batch(vocab: int, rows: int, tokens: int, prompt: int, seed: int, device: str,
               shared: int = 0) -> dict[str, Any]:
    """Random rows; the first ``shared`` tokens the same in every row (a chat template's system prompt), so
    plain SFT takes its shared-prefix pass as on real chat data."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, tokens), generator=gen)
    ids[:, :shared] = ids[0, :shared]
    labels = ids.clone()
    labels[:, :max(prompt, shared)] = -100
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device)}


def timed(fn: Any, sync: Any) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"])
    ap.add_argument("--refs", type=int, default=32, help="reference pool size for the refresh")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--refresh-repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--shared-prefix", type=int, default=0,
                    help="tokens every row starts with (SmolLM2's chat template: 24); plain SFT then runs them once "
                         "per batch, DualSelect's per-example gradients once per row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", default=None, help="write the results as a markdown fragment here")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from safeselect.config.schema import DualSelectConfig
    from safeselect.core.precision import resolve_mixed_precision
    from safeselect.models import resolve_device
    from safeselect.selection.dualselect import BudgetTracker, filtered_step, refresh_references
    from safeselect.training.losses import per_row_loss
    from safeselect.training.per_example import num_trainable, per_example_grads
    from safeselect.training.sft import autocast, frozen_weights_cast

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    load_before = os.getloadavg()
    model, tok = build(args.model, device, args.lora_r, args.targets, args.seed)
    vocab = model.get_input_embeddings().weight.shape[0]
    batch = make_batch(vocab, args.rows, args.tokens, args.tokens // 4, args.seed, device, args.shared_prefix)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)  # tiny lr: timings must not depend on a drifting model
    ds = DualSelectConfig()
    n_params = num_trainable(model)
    g_ref = torch.randn(n_params, generator=torch.Generator().manual_seed(1)).to(device)

    def plain_step(mixed_precision: str = "no") -> None:
        with autocast(device.split(":")[0], mixed_precision):
            loss = per_row_loss(model, batch).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    grads: dict[str, Any] = {}

    def per_example(method: str) -> Any:
        def run() -> None:
            grads[method] = per_example_grads(model, batch, method=method)[1]
        return run

    def ds_step(method: str) -> Any:
        def run() -> None:
            filtered_step(model, opt, batch, g_ref, ds, BudgetTracker(0.8, "rows"), None, method)
        return run

    cases = {"plain SFT step": plain_step}
    # Where finetune.mixed_precision=auto means bf16, the plain fine-tune step and DualSelect's forward passes run
    # in bf16 autocast (its per-example products stay float32): time both, for the ratio a user meets.
    bf16_default = resolve_mixed_precision("auto", device) == "bf16"
    if bf16_default:
        cases[BF16_DS] = lambda: filtered_step(model, opt, batch, g_ref, ds, BudgetTracker(0.8, "rows"), None,
                                               "hooks", "bf16")
    for m in ("hooks", "vmap", "loop"):
        cases[f"per-example grads ({m})"] = per_example(m)
    for m in ("hooks", "vmap", "loop"):
        cases[f"DualSelect step ({m})"] = ds_step(m)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():  # untimed first call: allocator, kernels, vmap tracing
        fn()
    # Exactness against the loop, on the same parameters (timed calls of DualSelect steps move them).
    _, g_loop = per_example_grads(model, batch, method="loop")
    diffs = {m: float((per_example_grads(model, batch, method=m)[1] - g_loop).abs().max()) for m in ("hooks", "vmap")}
    scale = float(g_loop.abs().max())
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn, sync))
    if bf16_default:
        # Not interleaved: the fine-tune holds its frozen base as bf16 copies for the whole loop
        # (frozen_weights_cast), which the float32 passes above must not see.
        with frozen_weights_cast(model, "bf16"):
            plain_step("bf16")
            times[BF16_STEP] = [timed(lambda: plain_step("bf16"), sync) for _ in range(args.repeats)]

    # Refresh over a pool of references (same shape as the task rows).
    pool = make_batch(vocab, args.refs, args.tokens, args.tokens // 4, args.seed + 1, device, args.shared_prefix)
    d = torch.randn(n_params, generator=torch.Generator().manual_seed(2)).to(device)

    def chunks() -> Any:
        for s in range(0, args.refs, 8):
            idx = np.arange(s, min(s + 8, args.refs))
            yield idx, {k: v[s:s + 8] for k, v in pool.items()}

    refresh_times: dict[str, list[float]] = {"hooks": [], "loop": []}
    for _ in range(args.refresh_repeats):
        for m in refresh_times:
            refresh_times[m].append(timed(lambda m=m: refresh_references(model, chunks(), d, ds, args.refs, method=m),
                                          sync))
    load_after = os.getloadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain SFT step"]
    loop_pe = med["per-example grads (loop)"]
    lines = [
        "| measurement | median s | x plain step | x per-example loop | spread (min-max) s |",
        "|---|---|---|---|---|",
    ]
    for name, v in times.items():
        vs_loop = f"{med[name] / loop_pe:.2f}" if name.startswith("per-example") else "-"
        if name.startswith("DualSelect"):
            vs_loop = f"{med[name] / med['DualSelect step (loop)']:.2f} (vs its loop step)"
        lines.append(f"| {name} | {med[name]:.3f} | {med[name] / base:.2f} | {vs_loop} | {min(v):.3f}-{max(v):.3f} |")
    per_ref = {m: statistics.median(v) / args.refs for m, v in refresh_times.items()}
    for m, v in refresh_times.items():
        lines.append(f"| refresh over {args.refs} references ({m}) | {statistics.median(v):.3f} | - | "
                     f"{statistics.median(v) / statistics.median(refresh_times['loop']):.2f} | "
                     f"{min(v):.3f}-{max(v):.3f} |")
    lines.append(f"| refresh per reference (hooks / loop) | {per_ref['hooks']:.4f} / {per_ref['loop']:.4f} | "
                 f"{per_ref['hooks'] / (base / args.rows):.2f} / {per_ref['loop'] / (base / args.rows):.2f} "
                 "(x a plain step's cost per row) | - | - |")
    pe_best = min(med["per-example grads (hooks)"], med["per-example grads (vmap)"])
    step_best = min(med["DualSelect step (hooks)"], med["DualSelect step (vmap)"])
    verdict = [
        f"- per-example gradients, best vectorised method: {pe_best / base:.2f}x a plain step "
        f"(target <= 1.25x: {'met' if pe_best / base <= 1.25 else 'NOT met'}); the loop: {loop_pe / base:.2f}x.",
        f"- whole DualSelect step, best method: {step_best / base:.2f}x a plain step "
        f"(target <= 2.5x: {'met' if step_best / base <= 2.5 else 'NOT met'}).",
        *([f"- in bf16 autocast, the default on this CPU (`finetune.mixed_precision=auto`): the whole DualSelect step "
           f"{med[BF16_DS] / med[BF16_STEP]:.2f}x the bf16 plain step (target <= 2.5x: "
           f"{'met' if med[BF16_DS] / med[BF16_STEP] <= 2.5 else 'NOT met'}); a float32 DualSelect step would be "
           f"{step_best / med[BF16_STEP]:.2f}x it."] if bf16_default else []),
        f"- exactness: max |grad - loop grad| = {diffs['hooks']:.1e} (hooks), {diffs['vmap']:.1e} (vmap); "
        f"largest gradient entry {scale:.1e}.",
    ]
    cpu = platform.processor() or platform.machine()
    head = [
        "## DualSelect cost (benchmarks/bench_dualselect.py)", "",
        f"`{args.model}`, LoRA r{args.lora_r} on {'/'.join(args.targets)} ({n_params:,} trainable parameters), "
        f"{args.rows} rows x {args.tokens} tokens"
        + (f" ({args.shared_prefix} shared by every row, learned from position {max(args.tokens // 4, args.shared_prefix)})"
           if args.shared_prefix else "") + f", float32{' (+ the bf16 autocast rows)' if bf16_default else ''}, device `{device}` ({cpu}, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}); median of {args.repeats} (refresh: {args.refresh_repeats}) "
        f"interleaved repeats. Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores (a shared machine: other jobs run beside this one).", "",
        "Command: `flock /tmp/heavy.lock python benchmarks/bench_dualselect.py " + " ".join(argv or sys.argv[1:]) + "`",
        "",
    ]
    text = "\n".join(head + lines + [""] + verdict) + "\n"
    print(text)
    if args.write:
        from safeselect.core.io import atomic_write_text

        atomic_write_text(Path(args.write), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
