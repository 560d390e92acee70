"""``safeselect eval TARGET [key=value ...] [--judge NAME ...] [--reference DIR] [--generate] [--out DIR]``.

TARGET is either a finished run directory, whose ``generations.jsonl`` is
re-scored with the given judges without generating again (the new figures are
merged into its ``metrics.json``); or a run directory whose saved model
(``RUN/model``) is evaluated afresh, without training, on the evaluation sets of
its config with the overrides applied (new sets: ``data.*`` overrides, or
``--generate``; files go to ``--out``, default ``RUN-eval``); or a config (path or preset name), whose
``model.name`` is evaluated as is (no alignment, no fine-tuning) on the
evaluation sets of its data builder. With ``--reference DIR`` the pairwise
judges compare against that run's generations (win rates). With alignment
benchmark files configured (``eval.benchmarks.*``) a config target also runs
AlpacaEval / Arena-Hard / MT-Bench through the ``llm`` judge.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safeselect.cli.common import add_progress_args
from safeselect.config import loading
from safeselect.config.loading import parse_override
from safeselect.core.lock import run_lock
from safeselect.core.rundir import RunDir
from safeselect.core.seeding import seed_stage
from safeselect.errors import UserError
from safeselect.evaluation.evaluate import rescore
from safeselect.inputs import check_out
from safeselect.judges.accuracy import card_section
from safeselect.models import resolve_device
from safeselect.models.saved import load_saved, model_dir
from safeselect.pipeline.evaluate import evaluate_config
from safeselect.registry import registry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model from a config, or re-score a finished run with other judges")
    p.add_argument("target", metavar="TARGET", help="a finished run directory (re-score) or a config (evaluate model.name)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.bootstrap=200")
    p.add_argument("--judge", action="append", default=None, metavar="NAME",
                   help="judge to score with (repeatable; default eval.judges); `safeselect ls judges`")
    p.add_argument("--reference", default=None, metavar="DIR", help="run directory to compute win rates against")
    p.add_argument("--out", default=None, help="output directory (default: the run directory itself, or runs/<config>-eval)")
    p.add_argument("--generate", action="store_true",
                   help="RUN: generate anew with its saved model (implied by data.* overrides) instead of re-scoring")
    add_progress_args(p, verbose=False)
    p.set_defaults(func=run)


def _check(judges: list[str], reference: str | None) -> None:
    for j in judges:
        registry("judges").entry(j)
    if reference is not None and not RunDir(reference).generations.exists():
        raise UserError(f"--reference {reference}: not a run directory (no generations.jsonl)")


def format_metrics(flat: dict[str, Any]) -> str:
    """One line per figure: name, value, [interval], n (and invalid when any)."""
    lines = []
    for k in sorted(flat):
        if k.endswith(("_ci", "_n", "_invalid")):
            continue
        v = flat[k]
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        ci = flat.get(f"{k}_ci")
        if ci:
            text += f" [{ci[0]:.4g}, {ci[1]:.4g}]"
        if f"{k}_n" in flat:
            text += f"  n={flat[f'{k}_n']}"
        if flat.get(f"{k}_invalid"):
            text += f"  invalid={flat[f'{k}_invalid']}"
        lines.append(f"{k:<48} {text}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if target.is_dir():
        if _wants_model(args, target):
            return _evaluate_saved(args, target)
        return _rescore(args, target)
    cfg = loading.load(args.target, args.overrides)
    if args.judge:
        cfg.eval.judges = list(args.judge)
    _check(list(cfg.eval.judges), args.reference)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.target).stem}-eval"
    flat = evaluate_config(cfg, out, reference_dir=args.reference, show_progress=not args.quiet)
    print(format_metrics(flat))
    print("\n" + card_section(list(cfg.eval.judges), [flat]))
    print(f"\neval files in {out}/ (metrics.json, generations.jsonl, config.yaml)")
    return 0


def _wants_model(args: argparse.Namespace, run_dir: Path) -> bool:
    """Generate with the saved model: asked for, new evaluation sets, or nothing to re-score."""

    new_sets = any(parse_override(o)[0].startswith("data.") for o in args.overrides)
    if not (args.generate or new_sets or not RunDir(run_dir).generations.exists()):
        return False
    if not model_dir(run_dir).is_dir():
        if not (args.generate or new_sets):
            return False  # neither generations nor a model: _rescore says it is not a finished run
        raise UserError(f"{run_dir} has no saved model (model/) to evaluate: rerun it, or drop --generate / "
                        "data.* overrides to re-score its generations")
    return True


def _evaluate_saved(args: argparse.Namespace, run_dir: Path) -> int:
    cfg_path = RunDir(run_dir).config
    if not cfg_path.exists():
        raise UserError(f"{run_dir}: no config.yaml beside the saved model")
    cfg = loading.load(str(cfg_path), args.overrides)
    if args.judge:
        cfg.eval.judges = list(args.judge)
    _check(list(cfg.eval.judges), args.reference)
    out = Path(args.out) if args.out else Path(f"{run_dir}-eval")
    if out.resolve() == run_dir.resolve():
        raise UserError("--out must differ from the run folder (its files belong to the training run)")

    model, tok = load_saved(model_dir(run_dir), dtype=cfg.model.dtype, device=resolve_device(cfg.device))
    flat = evaluate_config(cfg, out, reference_dir=args.reference, show_progress=not args.quiet, model=(model, tok))
    print(format_metrics(flat))
    print(f"\neval files in {out}/ (metrics.json, generations.jsonl, config.yaml)")
    return 0


def _rescore(args: argparse.Namespace, run_dir: Path) -> int:
    if not RunDir(run_dir).generations.exists():
        raise UserError(f"{run_dir} is not a finished run (no generations.jsonl)")
    cfg_path = RunDir(run_dir).config
    cfg = loading.load(str(cfg_path) if cfg_path.exists() else None, args.overrides)
    judges = list(args.judge) if args.judge else list(cfg.eval.judges)
    _check(judges, args.reference)
    out = check_out(Path(args.out) if args.out else run_dir)
    with run_lock(out):
        seed_stage(cfg.seed, "eval")
        new = rescore(run_dir, cfg, judges, reference_dir=args.reference, out_dir=args.out)
    print(format_metrics(new))
    print(f"\nmerged into {Path(args.out) if args.out else run_dir}/metrics.json")
    return 0


