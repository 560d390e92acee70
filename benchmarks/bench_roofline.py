"""How fast can an exact float32 cell be on this core? Matmul FLOPs of each stage against the core's GEMM peak.

Issue #13 asks for a cell 2.5x faster than the path before it, with exact decoding. This bench asks
whether any float32 path could get there on the machine at hand, in one run:

* the core's GEMM peak, float32 and bfloat16 (``torch.mm``, one thread, CPU time): the best rate over
  a large square product and the shapes of the model's own products (a micro-batch of packed rows,
  a decoding step of 64 rows, the LM head);
* the matmul FLOPs each stage does, counted by ``torch.utils.flop_counter.FlopCounterMode`` (linear
  layers and attention; CPU attention counted by the formulas registered below): the fine-tune on
  the reference path (every row in full) and on the defaults (shared prefix once, packed rows); and
  the work greedy decoding cannot avoid: one teacher-forced pass over each prompt and the reference
  reply, the shared system prompt once, the LM head only where a token is produced;
* the CPU time of each stage on the reference path and on the exact defaults (CTranslate2 float32), and
  where the defaults' fine-tune spends it (``torch.profiler``: matrix products, attention, the rest).

At the measured float32 peak, with everything that is not a matmul (loading, norms, softmax, the
optimiser, data, judging) free, a stage cannot take less than its FLOPs / peak. That gives an upper
bound on the speed-up any exact float32 path could reach on this core; the same with the bfloat16
peak bounds the bf16 paths. Stage names and settings follow ``bench_cell.py`` (quickstart, random).

    OMP_NUM_THREADS=1 python benchmarks/bench_roofline.py [--n-eval 32] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cell import cpu_flags, cpu_s, finetune, generate, load_avg, prepare, timed, warm_up  # noqa: E402

# (M, K, N) of the model's products on SmolLM2-135M: a packed micro-batch (about 512 tokens) through the
# MLP, a decoding step of 64 rows through the MLP and through the LM head (49152 words).
MODEL_SHAPES = ((512, 576, 1536), (64, 576, 1536), (64, 576, 49152))


def gemm_rate(m: int, k: int, n: int, dtype: Any, seconds: float = 1.5) -> float:
    """GFLOP/s of ``torch.mm`` at (m x k) @ (k x n) in ``dtype``, CPU time, after one warm-up product."""
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)
    reps, start = 0, cpu_s()
    while cpu_s() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * m * k * n * reps / (cpu_s() - start) / 1e9


def gemm_peak(dtype: Any) -> tuple[float, dict[str, float]]:
    """(the best rate, the rate at each shape) for ``dtype``."""
    rates = {f"{m}x{k}x{n}": gemm_rate(m, k, n, dtype) for m, k, n in ((2048, 2048, 2048), *MODEL_SHAPES)}
    return max(rates.values()), rates


def _register_cpu_attention() -> None:
    """FlopCounterMode counts GPU attention kernels but not the CPU one SDPA dispatches to on CPU: count it as
    the products it computes (Q K^T and P V forward; four products of the same size backward)."""
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu in flop_counter.flop_registry:
        return

    def products(q_shape: Any, k_shape: Any) -> int:
        b, h, lq, e = q_shape
        return 2 * b * h * lq * k_shape[-2] * e

    @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _fwd(q_shape: Any, k_shape: Any, *args: Any, **kwargs: Any) -> int:
        return 2 * products(q_shape, k_shape)

    @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _bwd(grad_shape: Any, q_shape: Any, k_shape: Any, *args: Any, **kwargs: Any) -> int:
        return 4 * products(q_shape, k_shape)


PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def _group(op: str) -> str:
    """Which part of a step an operator belongs to: "products", "attention" or "other"."""
    name = op.replace(".", "::").removesuffix("::default")
    return "attention" if "scaled_dot_product" in name else "products" if name in PRODUCTS else "other"


def counted(fn: Any, by_part: bool = False) -> tuple[Any, Any]:
    """(fn(), the matmul FLOPs it did), or with ``by_part`` a dict of them per :func:`_group`."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention()
    mode = FlopCounterMode(display=False)
    with mode:
        out = fn()
    if not by_part:
        return out, mode.get_total_flops()
    parts = {"products": 0, "attention": 0, "other": 0}
    for op, n in mode.get_flop_counts()["Global"].items():
        parts[_group(str(op))] += n
    return out, parts


def profiled(fn: Any) -> dict[str, float]:
    """Seconds of fn() per :func:`_group`, from the profiler's self time of each operator (wall time of
    this thread inside the operator: under load it includes time another process held the core)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    parts = {"products": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        parts[_group(event.key)] += event.self_cpu_time_total / 1e6
    return parts


def decode_flops(model: Any, tok: Any, prompts: list[str], replies: list[str]) -> int:
    """Matmul FLOPs greedy decoding of ``replies`` cannot avoid: one pass over each prompt's own tokens and its
    reply (teacher forcing does the products a KV-cached decode does), the system prompt every prompt shares
    once, the LM head at the last prompt position and every reply token but the last (the end token)."""
    import torch

    from safeselect.evaluation.ct2 import shared_prefix
    from safeselect.training.encode import prompt_ids

    encoded = [prompt_ids(tok, p) for p in prompts]
    shared = shared_prefix([[str(i) for i in ids] for ids in encoded])
    total, repeated = 0, 0
    model.eval()
    with torch.no_grad():
        if shared:  # counted once here; each row's pass below repeats its products but the LM head's
            prefix = torch.tensor([encoded[0][:shared]])
            _, total = counted(lambda: model(input_ids=prefix, logits_to_keep=1))
            _, every = counted(lambda: model(input_ids=prefix, logits_to_keep=0))  # 0: logits at every position
            repeated = every - 2 * model.config.hidden_size * model.config.vocab_size * shared
        for ids, reply in zip(encoded, replies, strict=True):
            new = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            full = torch.tensor([ids + new])
            _, row = counted(lambda full=full, n=len(new): model(input_ids=full, logits_to_keep=n))
            total += row - repeated
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--n-eval", type=int, default=32, help="prompts per evaluation set (0 = all)")
    ap.add_argument("--steps", type=int, default=8, help="fine-tune steps on each path")
    args = ap.parse_args(argv)

    import torch

    from safeselect.evaluation.greedy import merged_copy

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    loads = [load_avg()]
    peak32, rates32 = gemm_peak(torch.float32)
    peak16, rates16 = gemm_peak(torch.bfloat16)
    t: dict[str, tuple[float, float]] = {}
    cfg, bundle, kept, start = prepare(args.config, args.n_eval, False, t)

    warm_up(cfg, start, kept)
    flops: dict[str, int] = {}
    for path in ("ref", "default"):
        with timed(t, f"finetune.{path}"):
            model, tok, _ = finetune(cfg, start, kept, path, args.steps)
        _, parts = counted(lambda path=path: finetune(cfg, start, kept, path, args.steps), by_part=True)
        flops[f"finetune.{path}"] = sum(parts.values())
    # where the defaults' fine-tune spends its time: the products against everything else
    seconds = profiled(lambda: finetune(cfg, start, kept, "default", args.steps))
    split = {part: (sec, parts[part]) for part, sec in seconds.items()}
    loads.append(load_avg())

    texts = [r.prompt for sets in (bundle.eval_harmful, bundle.eval_overrefusal, bundle.eval_task)
             for rows in sets.values() for r in rows]
    replies: dict[str, list[str]] = {}
    for key, backend in (("hf", "hf"), ("ct2-float32", "ctranslate2")):
        with timed(t, f"generate.{key}"):
            replies[key] = generate(cfg, model, tok, texts, backend, "float32")
    same = sum(a == b for a, b in zip(replies["hf"], replies["ct2-float32"], strict=True))
    useful = decode_flops(merged_copy(model), tok, texts, replies["hf"])  # decoders run the adapter merged
    flops["generate.hf"] = flops["generate.ct2-float32"] = useful
    loads.append(load_avg())

    print(report(t, flops, useful, (peak32, rates32), (peak16, rates16), split, args, len(kept), len(texts), same,
                 start, loads, argv))
    return 0


def report(t: dict[str, tuple[float, float]], flops: dict[str, int], useful: int, p32: tuple[float, dict[str, float]],
           p16: tuple[float, dict[str, float]], split: dict[str, tuple[float, int]], args: Any, n_rows: int, n_prompts: int, same: int, start: str,
           loads: list[str], argv: list[str] | None) -> str:
    peak32, peak16 = p32[0], p16[0]
    shared = t["data"][0] + t["selection"][0]
    lines = ["| GEMM shape (M x K x N) | float32 GFLOP/s | bfloat16 GFLOP/s |", "|---|---|---|"]
    lines += [f"| {s} | {p32[1][s]:.0f} | {p16[1][s]:.0f} |" for s in p32[1]]
    lines += ["", "| stage | matmul GFLOP | CPU s | GFLOP/s | share of the float32 peak | least CPU s at the float32 "
              "peak | at the bfloat16 peak |", "|---|---|---|---|---|---|---|"]
    names = {"finetune.ref": f"fine-tune, reference ({args.steps} steps, every row in full)",
             "finetune.default": f"fine-tune, the defaults ({args.steps} steps, shared prefix + packed rows)",
             "generate.hf": f"generation, reference (HF float32, {n_prompts} prompts)",
             "generate.ct2-float32": f"generation, the defaults (CTranslate2 float32, {n_prompts} prompts)"}
    for key, name in names.items():
        g, s = flops[key] / 1e9, t[key][0]
        lines.append(f"| {name} | {g:.0f} | {s:.1f} | {g / s:.0f} | {g / s / peak32:.2f} | {g / peak32:.1f} | "
                     f"{g / peak16:.1f} |")
    total = sum(sec for sec, _ in split.values())
    lines += ["", "| the defaults' fine-tune, profiled | share of the profiled time | GFLOP | GFLOP/s inside |",
              "|---|---|---|---|"]
    for part, (sec, n) in split.items():
        rate = f"{n / 1e9 / sec:.0f}" if n and sec else "-"
        lines.append(f"| {part} | {sec / total:.2f} | {n / 1e9:.0f} | {rate} |")
    ref = shared + t["finetune.ref"][0] + t["generate.hf"][0]
    now = shared + t["finetune.default"][0] + t["generate.ct2-float32"][0]
    least32 = shared + (flops["finetune.default"] + useful) / 1e9 / peak32
    least16 = shared + (flops["finetune.default"] + useful) / 1e9 / peak16
    lines += ["", f"Cell (data + selection + these two stages): reference {ref:.1f} CPU s, the exact defaults {now:.1f} s "
              f"(**{ref / now:.2f}x**). At the float32 GEMM peak ({peak32:.0f} GFLOP/s) with all else free, no exact "
              f"float32 path takes less than {least32:.1f} s: **at most {ref / least32:.2f}x** the reference cell on "
              f"this core. At the bfloat16 peak ({peak16:.0f} GFLOP/s): at most {ref / least16:.2f}x. "
              f"CTranslate2 float32 replies identical to HF float32 on {same} / {n_prompts} prompts. "
              f"Rows: {n_rows}. CPU: {cpu_flags()}. Starting model: `{start}`. Load average (1 / 5 / 15 min) at start, "
              f"after fine-tuning, after generation: {'; '.join(loads)}. Command: `OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/bench_roofline.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
