"""`make demo` from cold, timed, and its table paired against the same demo on the reference path.

Issue #13 asks for the demo's cold wall time and an unchanged demo table beside the cell's speed-ups. This
measures both in one run:

1. **cold**: a fresh clone of the committed HEAD with ``../shared`` beside it, an empty pip cache and an
   empty model cache (``SAFESELECT_CACHE``): ``make setup`` (venv, pip), then ``make demo`` (the GGUF
   conversion, the alignment, the demo's fine-tunes and evaluations), as a new user's first ``make demo``;
2. **warm, the defaults**: the demo's job again in the same clone (aligned model cached), into another
   folder: the job alone, and a check that a rerun repeats the replies;
3. **warm, the reference path**: the same job with ``eval.backend=hf finetune.split_padding=false
   finetune.mixed_precision=no --workers 0`` (HF ``generate`` float32, every micro-batch padded, float32
   fine-tuning and the cells one after another in one process, as before issue #13; the shared-prefix pass,
   exact up to float rounding, has no config key and stays).

Each row of the cold demo's table is paired with the reference path's row on the same prompts
(:func:`safeselect.reporting.comparison.paired`): difference, 95% interval, verdict, smallest detectable
difference. Times are wall seconds with the machine's threads, as users run the demo: run it on an idle
machine (the load averages are printed).

    python benchmarks/bench_demo.py [--keep DIR] [--no-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_cell import load_avg

from safeselect.core.io import read_jsonl
from safeselect.core.metrics import single_set_safety_avg
from safeselect.core.rundir import RunDir
from safeselect.reporting.comparison import fmt_stat, paired, prompt_values

REPO = Path(__file__).resolve().parents[1]
DEMO_OUT = "quickstart"  # `make demo` writes runs/quickstart
REFERENCE = ["eval.backend=hf", "finetune.split_padding=false", "finetune.mixed_precision=no", "--workers", "0"]


def clean_env(cache: Path, pip_cache: Path) -> dict[str, str]:
    """The environment of a user's fresh shell: this process's venv, thread pinning and import paths dropped,
    empty caches."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHOME")}
    if sys.prefix != sys.base_prefix:  # running inside a venv: its bin must not shadow the clone's python3
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if not p.startswith(sys.prefix))
    env.update(SAFESELECT_CACHE=str(cache), PIP_CACHE_DIR=str(pip_cache))
    return env


def step(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Wall seconds of ``cmd``; its output appended to ``log``; a failure raises with the log's path."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {rc}; see {log}")
    return time.perf_counter() - t0


def demo_rows(out: Path) -> dict[str, Path]:
    """The demo's finished runs by method (``aligned``, ``full``, ``random``), in its compare order."""
    cfg = RunDir(out / "aligned").saved_config() or {}
    order = cfg.get("compare") or sorted(p.name for p in out.iterdir() if (p / RunDir.METRICS).exists())
    return {m: out / m for m in order if (out / m / RunDir.METRICS).exists()}


def per_prompt_metrics(run: Path) -> list[str]:
    """The run's figures that have per-prompt values (harmful rate, over-refusal, task accuracy, win rates; Safety
    Avg where there are several safety sets)."""
    names = RunDir(run).read_metrics()
    return [k for k in names if prompt_values(run, k) is not None and not single_set_safety_avg(k, names)]


def same_replies(a: Path, b: Path) -> tuple[int, int]:
    """(prompts whose reply is the same in both runs, prompts in both)."""
    def replies(run: Path) -> dict[tuple[str, str], str]:
        return {(r["set"], str(r["row_id"])): r["response"] for r in read_jsonl(run / RunDir.GENERATIONS)}

    ra, rb = replies(a), replies(b)
    both = ra.keys() & rb.keys()
    return sum(ra[k] == rb[k] for k in both), len(both)


def measure(keep: Path | None = None, reference: bool = True) -> dict[str, Any]:
    """Run the three steps of the module docstring; returns their times and run folders (under ``keep``, or a
    temporary folder removed by :func:`report`'s caller)."""
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    clone, log = root / "main", root / "demo.log"
    if clone.exists():
        shutil.rmtree(clone)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    if (REPO.parent / "shared").exists() and not (root / "shared").exists():
        (root / "shared").symlink_to(REPO.parent / "shared")
    for d in ("cache", "pip-cache"):
        shutil.rmtree(root / d, ignore_errors=True)
    env = clean_env(root / "cache", root / "pip-cache")
    res: dict[str, Any] = {"root": root, "commit": commit, "dirty": dirty, "loads": [load_avg()], "t": {}}
    t = res["t"]
    t["setup"] = step(["make", "setup"], clone, env, log)
    t["demo"] = step(["make", "demo"], clone, env, log)  # setup is done: the stamp makes it a no-op here
    res["loads"].append(load_avg())
    # The alignment's own time, which the cache keeps (when the cells run in workers it is no cell's align_s).
    res["align_s"] = [json.loads(p.read_text()).get("train_s") for p in (root / "cache").glob("aligned/*/align.json")]
    safeselect = str(clone / ".venv" / "bin" / "safeselect")
    t["warm"] = step([safeselect, "run", "quickstart", "--out", f"runs/{DEMO_OUT}-warm"], clone, env, log)
    if reference:
        t["reference"] = step([safeselect, "run", "quickstart", *REFERENCE, "--out", f"runs/{DEMO_OUT}-reference"],
                              clone, env, log)
    res["loads"].append(load_avg())
    res["runs"] = {name: demo_rows(clone / "runs" / folder) for name, folder in
                   (("cold", DEMO_OUT), ("warm", f"{DEMO_OUT}-warm"), ("reference", f"{DEMO_OUT}-reference"))
                   if (clone / "runs" / folder).exists()}
    return res


def report(res: dict[str, Any], argv: list[str] | None = None, command: str | None = None) -> str:
    """Markdown: the times, the rerun's agreement, and the cold demo paired row by row against the reference.
    ``command``: the command line to print (default: this script's, with ``argv``)."""
    t, runs = res["t"], res["runs"]
    cold = runs["cold"]
    lines = ["| demo step | wall s |", "|---|---|",
             f"| set-up (`make setup`: venv, pip from an empty cache) | {t['setup']:.0f} |",
             f"| `make demo` after it (conversion, alignment, {len(cold) - 1} fine-tunes, {len(cold)} evaluations) "
             f"| {t['demo']:.0f} |",
             f"| **cold total** | **{t['setup'] + t['demo']:.0f}** ({(t['setup'] + t['demo']) / 60:.1f} min) |",
             f"| the demo's job again, aligned model cached (the defaults) | {t['warm']:.0f} |"]
    if "reference" in t:
        lines.append(f"| the same on the reference path (`{' '.join(REFERENCE)}`) | {t['reference']:.0f} "
                     f"(the defaults {t['reference'] / t['warm']:.2f}x faster) |")
    res_keys = sorted({k for run in cold.values() for k in RunDir(run).read_metrics()
                       if k.startswith("resources.") and k.endswith("_s")})
    if res_keys:
        lines += ["", "| cold demo run | " + " | ".join(k.split(".", 1)[1] for k in res_keys) + " |",
                  "|---|" + "---|" * len(res_keys)]
        for m, run in cold.items():
            figs = RunDir(run).read_metrics()
            lines.append(f"| {m} | " + " | ".join(f"{figs[k]:.0f}" if isinstance(figs.get(k), (int, float)) else "-"
                                                  for k in res_keys) + " |")
        trained = [a for a in res.get("align_s", []) if a is not None]
        if trained:
            lines += ["", f"The alignment took {trained[0]:.0f} s (the aligned model's `align.json` in the cache: "
                          "the cells' align_s is 0 when the alignment ran before them, in the parent process). "
                          "Cells that run in worker processes (`--workers`, by default one single-threaded worker "
                          "per core) overlap: their stage times add up to more than the wall time."]
    warm = runs.get("warm", {})
    agree = [same_replies(cold[m], warm[m]) for m in cold if m in warm]
    if agree:
        lines += ["", f"The warm rerun repeats the cold demo's replies on {sum(a for a, _ in agree)} of "
                      f"{sum(n for _, n in agree)} prompts."]
    ref = runs.get("reference", {})
    if ref:
        lines += ["", "The cold demo's table against the reference path's, paired on the same prompts (same seed; "
                      "difference [95% interval], verdict, smallest detectable difference):", "",
                  "| run | figure | the defaults (cold) | the reference path | difference | verdict | "
                  "smallest detectable | identical replies |", "|---|---|---|---|---|---|---|---|"]
        for m, run in cold.items():
            if m not in ref:
                continue
            same, n = same_replies(run, ref[m])
            for metric in per_prompt_metrics(run):
                d = paired({0: run}, {0: ref[m]}, metric)
                if d is None or d["value"] is None:
                    continue
                a, b = RunDir(run).read_metrics()[metric], RunDir(ref[m]).read_metrics()[metric]
                lines.append(f"| {m} | {metric} | {a:.3f} | {b:.3f} | {fmt_stat(d, signed=True)} | {d['verdict']} | "
                             f"{d['detectable']:.2f} | {same} / {n} |")
    lines += ["", f"Code: the clone of {res['commit']}"
                  f"{' (the working tree had uncommitted changes, not in the clone)' if res['dirty'] else ''}. "
                  f"Load average (1 / 5 / 15 min) at start, after the cold demo, at the end: "
                  f"{'; '.join(res['loads'])}. Command: `"
                  + (command or "python benchmarks/bench_demo.py " + " ".join(argv if argv is not None else sys.argv[1:]))
                  + "`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one, removed)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference-path demo (no table pairing)")
    args = ap.parse_args(argv)
    try:
        res = measure(Path(args.keep) if args.keep else None, reference=not args.no_reference)
    except RuntimeError as e:  # a failed step: its folder and log stay for the post-mortem
        print(f"bench_demo: {e}", file=sys.stderr)
        return 1
    try:
        print(report(res, argv))
    finally:
        if not args.keep:
            shutil.rmtree(res["root"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
