"""What SEAL's selector training costs next to plain SFT, per epoch, in time and peak memory.

One run, same data and model for every mode: SmolLM2-135M (``--model``), LoRA with the
project defaults (r16 on q/k/v/o), rows from the built-in benchmark (``--n-task`` task
rows, ``--n-safe`` safety references), ``--batch`` rows per step, float32. Modes:

* ``sft``: one epoch of ``train_sft`` over the task rows (the pipeline's plain SFT);
* ``memory_efficient``: one epoch of SEAL Algorithm 2 (model step on S + B, selector step);
* ``auxiliary``: one epoch of SEAL Algorithm 1 (plus theta_hat: a second adapter taking
  ``aux_steps`` steps on B, then one no-grad pass to read l_i(theta_hat)).

SEAL runs with a constant gamma (``--gamma``, default 0.1) so that every iteration does
its full work (at gamma = 0, the first epoch of the default schedule, the task rows need
no backward pass and the epoch is cheaper). Expected from the operation counts: Algorithm 2
about 2x plain SFT (two batches through forward + backward), Algorithm 1 about 3.3x (plus
theta_hat's forward + backward and one forward).

Every mode runs in its own subprocess (its peak RSS is that mode's alone: VmHWM reset after the
model is loaded, so the figure is the epoch's peak), each time as one
untimed warm-up step followed by one timed epoch (setup included: encoding, adapters,
optimisers); the three subprocesses are interleaved ``--repeats`` times and the median is
reported, so that load drift on a shared machine hits all modes alike. CPU time (user + system,
one torch thread by default) is the primary figure on a shared CPU: wall time there depends
on the other jobs. On a GPU the peak is
``torch.cuda.max_memory_allocated`` of the timed epoch.

    flock /tmp/heavy.lock python benchmarks/bench_seal.py [--write FRAGMENT.md]   # a markdown section for docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from bench_cell import cpu_flags

MODES = ("sft", "memory_efficient", "auxiliary")


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """High-water RSS since the last :func:`reset_peak_rss` (Linux VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is the epoch's, not the model load's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def cpu_s() -> float:
    """CPU time (user + system) of this process so far: less sensitive than wall time to other jobs."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One mode: warm up on one batch, then time one epoch; report time and memory as a dict."""
    import gc

    import torch

    from safeselect.config import loading
    from safeselect.config.schema import GammaConfig, SealConfig, TrainConfig
    from safeselect.models import add_lora, load_model, resolve_device
    from safeselect.pipeline.run import build_bundle
    from safeselect.selection.seal import train_selector
    from safeselect.training.sft import make_accelerator, train_sft

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = loading.load("seal", [f"data.n_task={args.n_task}", f"data.safety_ref.n={args.n_safe}",
                               f"model.max_length={args.max_length}", f"data.difficulty={args.difficulty}"])
    bundle = build_bundle(cfg)
    task, safe = bundle.task, bundle.safety_ref
    acc = make_accelerator(cpu=device == "cpu")
    seal = SealConfig(algorithm=args.mode if args.mode != "sft" else "memory_efficient", epochs=1,
                      lr=cfg.selection.seal.lr, batch_size=args.batch,
                      micro_batch_size=args.seal_micro or cfg.selection.seal.micro_batch_size,
                      gamma=GammaConfig(schedule="constant", value=args.gamma))
    sft_cfg = TrainConfig(epochs=1, lr=cfg.finetune.lr, batch_size=args.batch, micro_batch_size=args.batch,
                          mixed_precision=args.mixed_precision)

    def once(rows: list) -> dict[str, Any]:
        model, tok = load_model(args.model, cfg.model, device=device)
        gc.collect()
        start_rss = rss_mb()
        reset = reset_peak_rss()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0, c0 = time.perf_counter(), cpu_s()
        if args.mode == "sft":
            model = add_lora(model, cfg.model.lora)
            res = train_sft(model, tok, rows, sft_cfg, cfg.model.max_length, seed=0, show_progress=False,
                            accelerator=acc)
            steps = res["steps"]
        else:
            run = train_selector(model, tok, rows, safe, seal, lora_cfg=cfg.model.lora,
                                 max_length=cfg.model.max_length, seed=0, accelerator=acc, show_progress=False,
                                 mixed_precision=args.mixed_precision)
            steps = -(-len(rows) // args.batch)
            loop_s = run.epoch_s[0]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out = {"epoch_s": time.perf_counter() - t0, "cpu_s": cpu_s() - c0, "steps": steps,
               "rss_start_mb": start_rss, "epoch_peak_rss_mb": peak_rss_mb() if reset else float("nan")}
        if args.mode != "sft":
            out["loop_s"] = loop_s
        if device.startswith("cuda"):
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        del model
        gc.collect()
        return out

    once(task[: args.batch])  # warm-up: one step (lazy inits, allocator, thread pools)
    timed = once(task)
    timed.update({"mode": args.mode, "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_task": len(task), "n_safe": len(safe), "device": device})
    return timed


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", mode, "--model", args.model, "--device", args.device,
           "--n-task", str(args.n_task), "--n-safe", str(args.n_safe), "--batch", str(args.batch),
           "--max-length", str(args.max_length), "--gamma", str(args.gamma), "--threads", str(args.threads),
           "--difficulty", args.difficulty, "--seal-micro", str(args.seal_micro),
           "--mixed-precision", args.mixed_precision]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-task", type=int, default=48)
    ap.add_argument("--n-safe", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--difficulty", default="easy")
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0 = torch default); 1 keeps CPU time a clean measure of work")
    ap.add_argument("--seal-micro", type=int, default=0,
                    help="SEAL's rows per forward pass (0 = the shipped selection.seal.micro_batch_size)")
    ap.add_argument("--mixed-precision", default="auto", choices=("no", "bf16", "auto"),
                    help="finetune.mixed_precision of both SEAL's model passes and the plain SFT (auto, the "
                         "package's default: bf16 where the device has bfloat16 units)")
    ap.add_argument("--write", default=None, help="write the results as a markdown fragment here")
    ap.add_argument("--worker", choices=MODES, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from safeselect.core.precision import resolve_mixed_precision
    from safeselect.models import resolve_device

    args.mixed_precision = resolve_mixed_precision(args.mixed_precision, resolve_device(args.device))
    if args.worker:
        args.mode = args.worker
        print(json.dumps(worker(args)))
        return 0

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for rep in range(args.repeats):
        for mode in MODES:  # interleaved: drift in machine load hits every mode alike
            r = run_mode(mode, args)
            results[mode].append(r)
            print(f"[{rep + 1}/{args.repeats}] {mode}: epoch {r['epoch_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
                  f"epoch peak RSS {r['epoch_peak_rss_mb']:.0f} MB", file=sys.stderr)
    wall = time.perf_counter() - t0

    def med(mode: str, key: str) -> float | None:
        vals = [r[key] for r in results[mode] if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    sft_s, sft_cpu, sft_rss = med("sft", "epoch_s"), med("sft", "cpu_s"), med("sft", "epoch_peak_rss_mb")
    sft_over = sft_rss - med("sft", "rss_start_mb")
    first = results["sft"][0]
    lines = [
        "## SEAL: selector cost next to plain SFT (benchmarks/bench_seal.py)",
        "",
        f"Model {args.model}, LoRA r16 on q/k/v/o, float32 weights, "
        f"{'bf16 autocast' if args.mixed_precision == 'bf16' else 'float32 passes'}, device {first['device']}; "
        f"CPU {cpu_flags()}; built-in benchmark "
        f"({args.difficulty}), {first['n_task']} task rows, {first['n_safe']} safety references, batch {args.batch}, "
        f"max_length {args.max_length}, {args.threads or 'default'} torch thread(s); SEAL at constant gamma "
        f"{args.gamma} (full work every iteration), {args.seal_micro or 'the shipped'} rows per forward pass of its "
        f"model step (plain SFT: {args.batch}). "
        f"One epoch per subprocess after a one-step warm-up, median of {args.repeats} interleaved repeats.",
        "",
        "| mode | epoch CPU (s) | x plain SFT | epoch wall (s) | x plain SFT | SEAL loop wall (s) | "
        "epoch peak RSS (MB) | x plain SFT | "
        "above the loaded model (MB) | x plain SFT |" + (" peak GPU (MB) | x plain SFT |" if med("sft", "peak_gpu_mb") else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if med("sft", "peak_gpu_mb") else ""),
    ]
    for mode in MODES:
        e, rss = med(mode, "epoch_s"), med(mode, "epoch_peak_rss_mb")
        over = rss - med(mode, "rss_start_mb")
        loop = med(mode, "loop_s")
        c = med(mode, "cpu_s")
        row = (f"| {mode} | {c:.1f} | {c / sft_cpu:.2f} | {e:.1f} | {e / sft_s:.2f} | "
               f"{'-' if loop is None else f'{loop:.1f}'} | {rss:.0f} | "
               f"{rss / sft_rss:.2f} | {over:.0f} | {over / sft_over:.2f} |")
        gpu = med(mode, "peak_gpu_mb")
        if gpu:
            row += f" {gpu:.0f} | {gpu / med('sft', 'peak_gpu_mb'):.2f} |"
        lines.append(row)
    lines += [
        "",
        "Expected from the operation counts: Algorithm 2 about 2x (safe and task batch through forward + backward), "
        "Algorithm 1 about 3.3x (plus theta_hat's forward + backward and one forward to read it).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before the run "
        f"(shared machine: timings are noisy); total wall {wall / 60:.1f} min.",
        "",
        f"Command: `flock /tmp/heavy.lock python benchmarks/bench_seal.py --model {args.model} "
        f"--n-task {args.n_task} --n-safe {args.n_safe} --batch {args.batch} --max-length {args.max_length} "
        f"--gamma {args.gamma} --repeats {args.repeats} --threads {args.threads}"
        f"{f' --seal-micro {args.seal_micro}' if args.seal_micro else ''}"
        f" --mixed-precision {args.mixed_precision}`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        from safeselect.core.io import atomic_write_text

        atomic_write_text(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
