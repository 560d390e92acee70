"""Arguments shared by subcommands: CONFIG, key=value overrides, --out."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser, out: bool = True) -> None:
    p.add_argument("config", metavar="CONFIG", help="a YAML config path or the name of a shipped preset")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. selection.ratio=0.5")
    if out:
        p.add_argument("--out", default=None, help="output directory (default runs/<config name>)")
