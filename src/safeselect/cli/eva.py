"""``safeselect eva CONFIG [key=value ...] [--out DIR]``: eva self-play iterations (creator step, solver step)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safeselect.cli.common import add_config_args, add_progress_args
from safeselect.config import loading
from safeselect.core.lock import run_lock
from safeselect.errors import UserError
from safeselect.inputs import check_out, check_paths
from safeselect.registry import registry
from safeselect.selfplay.run import run_eva


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eva", help="eva self-play: evolve informative prompts, preference-optimise the solver")
    add_config_args(p)
    add_progress_args(p)
    p.set_defaults(func=run)


def check(cfg: Any) -> None:
    """Fail fast (exit 2) on names that would only fail after model loading."""

    for name in [cfg.eva.reward, *cfg.eva.eval_rewards]:
        registry("rewards").entry(name)
    if cfg.eva.creator == "independent" and not cfg.eva.creator_model:
        raise UserError("eva.creator=independent needs eva.creator_model (a model name/path, or 'llm')")


def run(args: argparse.Namespace) -> int:
    cfg = loading.load(args.config, args.overrides)
    check(cfg)
    out = check_out(Path(args.out) if args.out else Path("runs") / Path(args.config).stem)
    check_paths(cfg)
    with run_lock(out):
        flat = run_eva(cfg, out, show_progress=not args.quiet)
    print(summary(flat))
    print(f"\nrun files in {out}/ (metrics.json, iter_<k>/, pool.jsonl, heldout.jsonl)")
    return 0


def summary(flat: dict[str, Any]) -> str:
    """A few lines: held-out reward start -> final, rule win rate, pair and cleaning counts."""
    def fmt(key: str, scale: float = 1.0) -> str:
        v = flat.get(key)
        if v is None:
            return "n/a"
        ci = flat.get(f"{key}_ci")
        tail = f" [{ci[0] * scale:.3f}, {ci[1] * scale:.3f}]" if ci else ""
        return f"{v * scale:.3f}{tail} (n={flat.get(f'{key}_n')})"

    lines = [f"held-out reward: start {fmt('eva.reward.start_mean')} -> final {fmt('eva.reward.mean')}"]
    for key in sorted(k for k in flat if k.startswith("eva.eval.") and k.endswith(".mean")):
        name = key[len("eva.eval."):-len(".mean")]
        lines.append(f"held-out {name}: start {fmt(key.replace('.mean', '.start_mean'))} -> final {fmt(key)}")
    lines.append(f"rule win rate vs start: {fmt('eva.win_rate.rule')}")
    lines.append(f"pairs: {flat.get('eva.pairs.total')} ({flat.get('eva.pairs.original')} original, "
                 f"{flat.get('eva.pairs.evolved')} evolved; {flat.get('eva.pairs.ties')} ties dropped)")
    lines.append("evolved prompts: " + ", ".join(f"{c} {flat.get(f'eva.clean.{c}')}" for c in
                                                 ("generated", "kept", "empty", "too_short", "too_long", "duplicate")))
    return "\n".join(lines)
