"""One fine-tune + evaluation cell, stage by stage: today's path against the fast path, in one run.

Cell = data -> selection (``random``, the quickstart's selector) -> fine-tune -> generation ->
judging, on SmolLM2-135M with the quickstart preset. Each stage runs twice in this process, the
reference path and the new path back to back, so both see the same machine load:

* fine-tune: ``train_sft`` with random batches, every row in full and whole micro-batches in float32
  (reference); packed rows in float32 (shared-prefix pass, each micro-batch's rows packed without
  padding: the same batches, so the same losses to float rounding); the same with
  ``finetune.group_by_length`` (other batches); and packed rows with ``finetune.mixed_precision=bf16``
  (bfloat16 autocast: fast where the CPU has AMX or AVX-512 BF16, which the report names), with the
  frozen base held as bf16 copies and, for comparison, cast by autocast at every pass as before. The
  defaults are packed rows with ``finetune.mixed_precision=auto``: the bf16 path where the device has
  bfloat16 units, else the float32 one (the report says which). Same rows, same steps (``--steps``),
  LoRA from the same seed;
* generation: HF ``generate`` float32 (reference, ``eval.backend=hf``) against CTranslate2
  float32 and int8 (``eval.backend=ctranslate2``) and the torch loop that drops finished rows in
  float32 and bfloat16 (``eval.backend=torch``), on the fine-tuned model, with the share of
  identical replies and of identical judge verdicts (refusal judge on the harmful and
  look-alike sets, exact match on the task sets);
* data, selection, judging: the same code on both paths (timed once each, ratio 1 by design).

Time is CPU time of this process (user + system; one torch / CTranslate2 thread): on a shared
machine it moves far less with other jobs than wall time, which is printed too. The starting model
is the aligned model when its cache exists, else SmolLM2 itself (``--base``); the speed ratios do
not depend on which.

    OMP_NUM_THREADS=1 python benchmarks/bench_cell.py [--n-eval 150] [--steps 50] [--write docs/results.md] [--demo-cold]

``--demo-cold`` then runs benchmarks/bench_demo.py in the same run: `make demo` cold on a fresh clone (wall time)
and the demo's table paired with the same demo on the reference path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from contextlib import contextmanager
from typing import Any

MARK_BEGIN = "<!-- bench_cell:begin -->"
MARK_END = "<!-- bench_cell:end -->"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextmanager
def timed(out: dict[str, tuple[float, float]], key: str):
    c, w = cpu_s(), time.perf_counter()
    yield
    out[key] = (cpu_s() - c, time.perf_counter() - w)


def warm_up(cfg: Any, start: str, rows: list[Any], device: str = "cpu") -> None:
    """One untimed training step: the first training in a process pays one-off costs (allocator, lazy
    initialisation) that would otherwise land on whichever timed path runs first."""
    import dataclasses

    import torch

    from safeselect.models import add_lora, load_model
    from safeselect.training.sft import train_sft

    torch.manual_seed(cfg.seed)
    model, tok = load_model(start, cfg.model, device=device)
    train_sft(add_lora(model, cfg.model.lora), tok, rows, dataclasses.replace(cfg.finetune, max_steps=1),
              cfg.model.max_length, seed=cfg.seed, show_progress=False)


@contextmanager
def recast():
    """bf16 training as before the frozen base was held as bf16 copies: autocast casts it at every pass."""
    from safeselect.training import sft

    real = sft.frozen_weights_cast
    sft.frozen_weights_cast = lambda *a, **k: contextlib.nullcontext()
    try:
        yield
    finally:
        sft.frozen_weights_cast = real


def cpu_flags() -> str:
    """What the CPU offers the low-precision paths: torch's capability level and the bf16 / int8 matrix units
    (the bf16 rows are fast only with AMX or AVX-512 BF16; development machines here have had both and neither)."""
    import torch

    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    units = [x for x in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni") if x in flags]
    return f"{torch.backends.cpu.get_cpu_capability()} ({', '.join(units) or 'no bf16 / int8 matrix units'})"


def load_avg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def prepare(config: str, n_eval: int, base: bool, t: dict[str, tuple[float, float]]) -> tuple[Any, Any, list[Any], str]:
    """(config, bundle, kept rows, starting model) of the quickstart cell with ``random`` selection; times the data
    and selection stages into ``t``. ``n_eval`` > 0 keeps that many prompts per evaluation set; the starting model
    is the cached aligned model unless ``base`` or none is cached."""
    import tempfile
    from pathlib import Path

    from safeselect.config.loading import load
    from safeselect.config.paths import cache_dir
    from safeselect.pipeline.run import _align_key, _slug, build_bundle, select

    cfg = load(config, ["compare=[]", "selection.method=random"])
    with timed(t, "data"):
        bundle = build_bundle(cfg)
    if n_eval:
        for sets in (bundle.eval_harmful, bundle.eval_overrefusal, bundle.eval_task):
            for k in sets:
                sets[k] = sets[k][:n_eval]
    with timed(t, "selection"):
        selection, _ = select(cfg, bundle, Path(tempfile.mkdtemp()), show_progress=False)
    aligned = cache_dir() / "aligned" / f"{_slug(cfg.model.name)}-{_align_key(cfg, cfg.model.name, bundle.align)}"
    start = str(aligned) if (aligned / "config.json").exists() and not base else cfg.model.name
    return cfg, bundle, selection.kept_rows(bundle.task), start


def finetune(cfg: Any, start: str, kept: list[Any], path: str, steps: int, device: str = "cpu"
             ) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, train_sft's result) of ``steps`` fine-tune steps on one path: ``ref`` (every row in
    full, float32, as before issue #13), ``f32`` (packed rows), ``grouped`` (packed, length-grouped batches), ``bf16``
    (packed, bf16 autocast) or ``bf16-recast``."""
    import dataclasses

    import torch

    from safeselect.models import add_lora, load_model
    from safeselect.training.losses import rows_apart
    from safeselect.training.sft import train_sft

    torch.manual_seed(cfg.seed)
    model, tok = load_model(start, cfg.model, device=device)
    model = add_lora(model, cfg.model.lora)
    tc = dataclasses.replace(cfg.finetune, group_by_length=path == "grouped", split_padding=path != "ref",
                             max_steps=steps, mixed_precision="bf16" if path.startswith("bf16") else "no")
    # the reference runs every row in full (rows_apart: no shared-prefix pass), as before issue #13;
    # bf16-recast: autocast casting the frozen base at every pass, as before the bf16 copies
    with rows_apart() if path == "ref" else recast() if path == "bf16-recast" else contextlib.nullcontext():
        res = train_sft(model, tok, kept, tc, cfg.model.max_length, seed=cfg.seed, show_progress=False)
    return model, tok, res


def generate(cfg: Any, model: Any, tok: Any, texts: list[str], backend: str, dtype: str) -> list[str]:
    """Greedy replies to ``texts`` with ``eval.backend`` / ``eval.dtype``; the conversion (ctranslate2) is inside."""
    import dataclasses

    from safeselect.evaluation.generate import make_generate

    gen = make_generate(model, tok, dataclasses.replace(cfg.eval, backend=backend, dtype=dtype))
    return gen(model, tok, texts, max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
               show_progress=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--n-eval", type=int, default=0, help="prompts per evaluation set (0 = all)")
    ap.add_argument("--steps", type=int, default=0, help="fine-tune steps on each path (0 = the config's)")
    ap.add_argument("--base", action="store_true", help="start from SmolLM2 itself even if an aligned model is cached")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (on a GPU compare the wall times)")
    ap.add_argument("--write", default=None, help="replace the bench_cell section of this markdown file")
    ap.add_argument("--demo-cold", action="store_true",
                    help="then time `make demo` cold on a fresh clone and pair its table with the reference path's "
                         "(benchmarks/bench_demo.py; about 20 more minutes, wall time: run it on an idle machine)")
    args = ap.parse_args(argv)

    import torch

    from safeselect.core.precision import resolve_mixed_precision
    from safeselect.evaluation.evaluate import judge_records, make_record
    from safeselect.judges.refusal import RefusalJudge

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t: dict[str, tuple[float, float]] = {}
    loads = [load_avg()]
    cfg, bundle, kept, start = prepare(args.config, args.n_eval, args.base, t)
    steps = args.steps if args.steps > 0 else cfg.finetune.max_steps

    warm_up(cfg, start, kept, args.device)
    res_ft: dict[str, dict[str, Any]] = {}
    # the defaults' fine-tune is one of the timed paths: packed rows in the precision auto resolves to here
    default = "bf16" if resolve_mixed_precision("auto", args.device) == "bf16" else "f32"
    for path in ("ref", "f32", "grouped", "bf16", "bf16-recast"):
        with timed(t, f"finetune.{path}"):
            m, tok, res_ft[path] = finetune(cfg, start, kept, path, steps, args.device)
        if path == "ref":
            model = m  # the model every backend decodes with
        else:
            del m
    loads.append(load_avg())

    prompts = [(kind, name, r) for kind, sets in (("harmful", bundle.eval_harmful), ("overrefusal", bundle.eval_overrefusal),
                                                 ("task", bundle.eval_task)) for name, rows in sets.items() for r in rows]
    texts = [r.prompt for _, _, r in prompts]

    replies: dict[str, list[str]] = {}
    for key, backend, dtype in (("hf", "hf", "float32"), ("ct2-float32", "ctranslate2", "float32"),
                                ("ct2-int8", "ctranslate2", "int8"), ("torch-float32", "torch", "float32"),
                                ("torch-bfloat16", "torch", "bfloat16")):
        try:
            with timed(t, f"generate.{key}"):
                replies[key] = generate(cfg, model, tok, texts, backend, dtype)
        except Exception as e:  # e.g. CTranslate2 without its CUDA libraries on a GPU machine: report, go on
            print(f"bench_cell: {key} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  file=sys.stderr)
            t[f"generate.{key}"] = (float("nan"), float("nan"))
    loads.append(load_avg())

    refusal = RefusalJudge(cfg)

    def verdicts(resp: list[str]) -> list[Any]:
        recs = [make_record(name, kind, r, x) for (kind, name, r), x in zip(prompts, resp, strict=True)]
        judge_records(recs, {"refusal": refusal}, refusal=refusal)
        return [rec["correct"] if rec["kind"] == "task" else next(iter(rec["verdicts"].values())) for rec in recs]

    with timed(t, "judge"):
        ref_v = verdicts(replies["hf"])
    kinds = [kind for kind, _, _ in prompts]

    def shares(same: list[bool]) -> tuple[float, ...]:
        """The share of ``same`` overall, then on the harmful, look-alike and task prompts."""
        groups = [list(range(len(same)))] + [[i for i, k in enumerate(kinds) if k == g]
                                              for g in ("harmful", "overrefusal", "task")]
        return tuple(sum(same[i] for i in g) / len(g) if g else float("nan") for g in groups)

    agree = {k: (sum(a == b for a, b in zip(replies["hf"], v, strict=True)) / len(v),
                 *shares([a == b for a, b in zip(ref_v, verdicts(v), strict=True)]))
             for k, v in replies.items() if k != "hf"}

    md = report(t, agree, res_ft, len(texts), len(kept), start, loads, argv, default)
    if args.demo_cold:
        import shutil

        import bench_demo

        del model
        demo = bench_demo.measure()
        try:
            md += "\n\nThe demo in the same run (`--demo-cold`: a fresh clone of the committed HEAD, empty pip and " \
                  "model caches, wall time with the machine's threads; benchmarks/bench_demo.py):\n\n" + \
                  bench_demo.report(demo, command=f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python "
                                    f"benchmarks/bench_cell.py {' '.join(argv if argv is not None else sys.argv[1:])}")
        finally:
            shutil.rmtree(demo["root"], ignore_errors=True)
    print(md)
    if args.write:
        write_section(args.write, md)
    return 0


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"  # NaN (a failed path) compares false: "-"


def report(t: dict[str, tuple[float, float]], agree: dict[str, tuple[float, ...]], res_ft: dict[str, dict[str, Any]],
           n_prompts: int, n_rows: int, start: str, loads: list[str], argv: list[str] | None,
           default: str = "f32") -> str:
    """Markdown tables of the stage times, whole cells and agreement; ``default``: the fine-tune path the
    defaults take here (``bf16`` where ``finetune.mixed_precision=auto`` resolves to it, else ``f32``)."""
    shared = sum(t[k][0] for k in ("data", "selection", "judge"))
    cell_ref = shared + t["finetune.ref"][0] + t["generate.hf"][0]
    rows = [
        ("data", t["data"], t["data"]),
        ("selection (random)", t["selection"], t["selection"]),
        (f"fine-tune ({res_ft['ref']['steps']} steps, {n_rows} rows): rows in full -> shared prefix + packed rows "
         f"in float32 (same batches{'; the defaults here' if default == 'f32' else ''})", t["finetune.ref"],
         t["finetune.f32"]),
        ("fine-tune: rows in full -> shared prefix + packed rows + `group_by_length` (other batches)",
         t["finetune.ref"], t["finetune.grouped"]),
        ("fine-tune: rows in full -> shared prefix + packed rows + bf16 autocast (same batches"
         f"{'; the defaults here: `finetune.mixed_precision=auto`' if default == 'bf16' else ''})",
         t["finetune.ref"], t["finetune.bf16"]),
        ("fine-tune: the same in bf16, autocast casting the frozen base at every pass (before the bf16 copies)",
         t["finetune.ref"], t["finetune.bf16-recast"]),
        (f"generation ({n_prompts} prompts): HF float32 -> CTranslate2 float32", t["generate.hf"],
         t["generate.ct2-float32"]),
        (f"generation ({n_prompts} prompts): HF float32 -> CTranslate2 int8", t["generate.hf"], t["generate.ct2-int8"]),
        (f"generation ({n_prompts} prompts): HF float32 -> torch loop float32", t["generate.hf"],
         t["generate.torch-float32"]),
        (f"generation ({n_prompts} prompts): HF float32 -> torch loop bfloat16", t["generate.hf"],
         t["generate.torch-bfloat16"]),
        ("judging", t["judge"], t["judge"]),
    ]
    lines = [
        "| stage | reference CPU s (wall s) | new CPU s (wall s) | speed-up (CPU) |",
        "|---|---|---|---|",
    ]
    for name, a, b in rows:
        lines.append(f"| {name} | {a[0]:.1f} ({a[1]:.1f}) | {b[0]:.1f} ({b[1]:.1f}) | {ratio(a[0], b[0])} |")
    for path, key, label in ((default, "ct2-float32", f"the defaults: packed rows{' + bf16 autocast' * (default == 'bf16')}"
                                                       " + ct2-float32"),
                             ("f32", "ct2-float32", "packed rows in float32 + ct2-float32 (exact; the defaults before "
                                                    "`finetune.mixed_precision=auto`)"),
                             ("grouped", "ct2-float32", "grouped batches + ct2-float32"),
                             ("f32", "torch-float32", "packed rows + torch loop float32"),
                             ("grouped", "ct2-int8", "grouped batches + ct2-int8"),
                             ("bf16", "torch-bfloat16", "packed rows + bf16 autocast + torch loop bfloat16")):
        cell_new = shared + t[f"finetune.{path}"][0] + t["generate." + key][0]
        lines.append(f"| **whole cell** ({label}) | {cell_ref:.1f} | {cell_new:.1f} | **{ratio(cell_ref, cell_new)}** |")
    lines += ["", "| backend | identical replies | identical verdicts, all prompts | harmful (refusal judge) | "
              "look-alike (refusal judge) | task (exact match) |", "|---|---|---|---|---|---|"]
    for key, (same, *verd) in agree.items():
        lines.append(f"| {key} vs HF float32 | {same:.3f} | " + " | ".join(f"{v:.3f}" for v in verd) + " |")
    lines += ["", f"Fine-tune final loss: reference {res_ft['ref']['losses'][-1]:.4f}, packed rows in float32 "
              f"{res_ft['f32']['losses'][-1]:.4f} (the same batches), length-grouped "
              f"{res_ft['grouped']['losses'][-1]:.3f} (one seed; other batches, so not identical), bf16 autocast "
              f"{res_ft['bf16']['losses'][-1]:.4f} (the same batches in lower precision). CPU: {cpu_flags()}. "
              f"Starting model: `{start}`. "
              f"Load average (1 / 5 / 15 min) at start, after fine-tuning, after generation: {'; '.join(loads)}. "
              f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/bench_cell.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`."]
    return "\n".join(lines)


def write_section(path: str, md: str) -> None:
    """Replace the text between the bench_cell markers (or append a section) atomically."""
    from pathlib import Path

    from safeselect.core.io import atomic_write_text

    p = Path(path)
    text = p.read_text() if p.exists() else ""
    block = f"{MARK_BEGIN}\n{md}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Cell cost, stage by stage (benchmarks/bench_cell.py)\n\n" + block + "\n"
    atomic_write_text(p, text)


if __name__ == "__main__":
    sys.exit(main())
