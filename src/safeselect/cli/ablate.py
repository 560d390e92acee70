"""``safeselect ablate PLAN``: run an ablation plan (YAML or markdown), resumable, locally or on Ray.

    safeselect ablate seal_gamma_value --dry-run                 # list the runs (a shipped plan by name)
    safeselect ablate ../shared/plans/plan_seal_aux_and_gamma_schedule.md --explain
    safeselect ablate plan.md model.name=tiny-llama --seeds 0 1 --workers 2 --out runs/abl
    safeselect ablate plan.md --ablation "gamma schedule sensitivity"  # one section of the plan
    safeselect ablate plan.yaml --backend ray --ray-address auto --ray-gpus 1   # on a Ray cluster

A killed plan resumes where it stopped: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safeselect.ablation.grid import describe, expand, run_dir
from safeselect.ablation.plan import explain, load_plan, metric_lines, only_ablations
from safeselect.ablation.runner import run_plan
from safeselect.cli.common import add_progress_args, add_worker_args, check_worker_args
from safeselect.config.loading import MAX_SEED
from safeselect.core.rundir import is_complete
from safeselect.errors import UserError
from safeselect.inputs import check_file, check_out
from safeselect.reporting.ablation import build_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation plan (YAML or markdown)",
                       description="Expand a plan into runs (ablations x replacements x seeds, plus one shared "
                                   "reference run), run the unfinished ones, write results.csv, report.md, plots.")
    p.add_argument("plan", metavar="PLAN", help="a YAML or markdown plan, or the name of a shipped plan "
                                                "(configs/ablations)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run, "
                                                                     "e.g. model.name=tiny-llama")
    p.add_argument("--base", default=None, metavar="CONFIG", help="base preset or YAML (replaces the plan's)")
    p.add_argument("--out", default=None, help="output folder (default runs/ablate/<plan name>)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (replace the plan's)")
    p.add_argument("--ablation", action="append", default=None, metavar="NAME",
                   help="run only this ablation of the plan (section name or slug; repeatable); a later run of the "
                        "whole plan into the same --out reuses its runs")
    add_worker_args(p, "runs of the plan (local backend)")
    add_progress_args(p)
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="local processes or Ray tasks")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join ('auto', 'ray://head:10001'); default starts a local Ray")
    p.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per Ray task")
    p.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs per Ray task (e.g. 1, or 0.5 to share)")
    p.add_argument("--bounds", action=argparse.BooleanOptionalAction, default=None,
                   help="also run `oracle` and `full` at the base config for every seed, so each table prints its "
                        "floor, ceiling and headroom (default: on for the built-in benchmark, whose rows know "
                        "whether they are bad; a plan's `bounds:` key sets it too)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done; run nothing")
    p.add_argument("--explain", action="store_true",
                   help="print how every ablated part, replacement and metric was mapped (evidence, confidence, "
                        "competing keys, value transforms); run nothing")
    p.add_argument("--strict", action="store_true",
                   help="all or nothing: any section or replacement that cannot be mapped is an error (exit 2); "
                        "by default a markdown plan runs what maps and lists the rest with a reason")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_worker_args(args)
    if args.seeds and any(not 0 <= s <= MAX_SEED for s in args.seeds):
        raise UserError(f"--seeds: each seed must be in [0, {MAX_SEED}]")
    if Path(args.plan).exists() or Path(args.plan).suffix in (".md", ".yaml", ".yml"):
        check_file(args.plan, "PLAN")  # a folder, or not UTF-8 text: one line, before the parser
    plan = load_plan(args.plan, overrides=args.overrides, base=args.base, seeds=args.seeds,
                     strict=True if args.strict else None)
    if args.ablation:
        plan = only_ablations(plan, args.ablation)
    if args.bounds is not None:
        plan.bounds = args.bounds
    out = check_out(Path(args.out) if args.out else Path("runs") / "ablate" / plan.name)
    if args.explain:
        print(explain(plan))
    if args.dry_run:
        grid = expand(plan)
        done = sum(is_complete(run_dir(out, r.run_id)) for r in grid.runs)
        print(f"{len(grid.runs)} runs ({len(grid.cells)} table cells), {done} already complete in {out}:")
        for line, r in zip(describe(grid).splitlines(), grid.runs, strict=True):
            print(("  done  " if is_complete(run_dir(out, r.run_id)) else "  todo  ") + line)
        if not args.explain:
            for a in plan.ablations:
                if plan.only is not None and a.slug not in plan.only:
                    print(f"ablation '{a.name}': not run now (--ablation)")
                    continue
                flagged = [ln for ln in metric_lines(plan, a) if "FLAGGED" in ln]
                low = "  [LOW CONFIDENCE: see --explain]" if a.low_confidence else ""
                print(f"ablation '{a.name}' -> {a.parameter}{low}")
                for text, why in a.skipped:
                    print(f"  replacement {text!r} NOT RUN: {why}")
                for ln in flagged:
                    print(ln)
            for r in plan.refused:
                print(f"NOT RUN: section '{r.name}'" + (f" (line {r.line})" if r.line else "") + f": {r.reason}")
    if args.explain or args.dry_run:
        return 0
    if not plan.ablations:
        raise UserError(f"{plan.source}: no section of the plan can run (" +
                        "; ".join(f"'{r.name}': {r.reason}" for r in plan.refused) + ")")
    for r in plan.refused:
        print(f"NOT RUN: section '{r.name}': {r.reason}", file=sys.stderr)
    try:
        outcomes = run_plan(plan, out, workers=args.workers, threads=args.threads, backend=args.backend, ray_address=args.ray_address,
                            ray_num_cpus=args.ray_cpus, ray_num_gpus=args.ray_gpus, show_progress=not args.quiet)
    except RuntimeError as e:
        print(f"safeselect: {e}", file=sys.stderr)
        return 1
    build_report(out)
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    print(f"{done} run(s) done, {skipped} already complete, {len(failed)} failed; report: {out / 'report.md'}")
    for o in failed:
        print(f"failed: {o.run_id}: {o.error} (see {run_dir(out, o.run_id) / 'error.txt'})", file=sys.stderr)
    return 1 if failed else 0
