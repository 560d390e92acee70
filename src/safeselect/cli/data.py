"""``safeselect data build``: write a benchmark (the built-in one, or a real-data recipe) as JSONL splits.

    safeselect data build                                  # built-in, easy, into data/builtin-easy
    safeselect data build --difficulty hard --out DIR data.n_task=400 data.harmful_ratio=0.1
    safeselect data build --preset sst2-advbench --out DIR  # needs the real data folder

``--preset`` names a data builder (``safeselect ls data``) or a config preset / YAML file (a
recipe preset wins over the data builder of the same name, so its data settings apply);
``key=value`` overrides any config key. Prints one line per file
with its row count (never the rows themselves: harmful prompts stay on disk).
"""

from __future__ import annotations

import argparse

from safeselect.config import loading
from safeselect.config.paths import preset_names, resolve_preset
from safeselect.data.builtin import write_benchmark
from safeselect.errors import UserError, suggest
from safeselect.inputs import check_out, check_paths
from safeselect.registry import registry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build benchmark data (JSONL splits)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    b = dsub.add_parser("build", help="write the built-in benchmark (or a recipe) as JSONL splits")
    b.add_argument("--preset", default="builtin",
                   help="data builder name (builtin, jsonl, sst2-advbench, ...) or a config preset / YAML path")
    b.add_argument("--difficulty", choices=("easy", "hard", "erosion"), default=None, help="built-in benchmark level")
    b.add_argument("--out", default=None, help="output directory (default data/<preset>-<difficulty>)")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.n_task=400")
    b.set_defaults(func=run_build)
    p.set_defaults(func=_need_action, parser=p)


def _need_action(args: argparse.Namespace) -> int:
    args.parser.print_help()
    return 2


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    overrides = list(args.overrides)
    data_reg = registry("data")
    if args.preset in data_reg and args.preset not in preset_names():
        base = None
        overrides.insert(0, f"data.benchmark={args.preset}")
    else:
        base = args.preset  # a config preset or YAML path; resolve_preset raises a did-you-mean otherwise
        try:
            resolve_preset(base)
        except Exception:
            raise UserError(f"unknown data preset '{args.preset}'"
                            f"{suggest(args.preset, data_reg.names() + preset_names())}") from None
    if args.difficulty:
        overrides.append(f"data.difficulty={args.difficulty}")
    cfg = loading.load(base, overrides)
    data_reg.entry(cfg.data.benchmark)
    out = check_out(Path(args.out) if args.out else Path("data") / f"{cfg.data.benchmark}-{cfg.data.difficulty}")
    check_paths(cfg)
    counts = write_benchmark(cfg, out)  # builds (and so reads) everything before the first file is written
    width = max(len(k) for k in counts) + len(".jsonl")
    for stem, n in counts.items():
        print(f"  {stem + '.jsonl':<{width}} {n:>6} rows")
    print(f"wrote {len(counts)} files to {out} (benchmark {cfg.data.benchmark}, difficulty {cfg.data.difficulty}, "
          f"harmful ratio {cfg.data.harmful_ratio}, seed {cfg.data.seed})")
    return 0
