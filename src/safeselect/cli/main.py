"""``safeselect`` entry point: ``main(argv) -> int``. Exit 0 ok, 2 bad input (one line, no traceback), 1 failure."""

from __future__ import annotations

import argparse
import importlib
import sys

from safeselect import __version__
from safeselect.core.redact import redact
from safeselect.errors import UserError

# Subcommand modules; each must stay cheap to import (no torch at module level).
COMMANDS = ["ls", "cp", "validate", "data", "run", "select", "eval", "export", "eva", "reward", "ablate", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safeselect",
        description="Fine-tune aligned chat models on your data without losing their safety.",
    )
    parser.add_argument("--version", action="version", version=f"safeselect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"safeselect.cli.{name}")
        except ModuleNotFoundError as e:  # a subcommand whose module is not in this build
            if e.name == f"safeselect.cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, accepting ``key=value`` overrides anywhere, also after flags
    (``safeselect run quickstart --out x selection.ratio=0.5``), as Hydra-style tools do.

    argparse stops filling a ``nargs="*"`` positional at the first flag, so overrides written after
    one come back as unknown arguments; they join the command's overrides in the order given.
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        overrides = [a for a in extra if "=" in a and not a.startswith("-")]
        rest = [a for a in extra if a not in overrides]
        if rest or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(rest or extra)}")
        args.overrides = [*(args.overrides or []), *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as e:  # argparse: usage errors exit 2 with one line already printed
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if getattr(args, "verbose", False):
        _show_log()
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"safeselect: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: not an error
        return 0
    except KeyboardInterrupt:
        print("safeselect: interrupted", file=sys.stderr)
        return 130
    except INPUT_ERRORS as e:
        # A file the checks up front did not reach (a folder, not UTF-8, unreadable, not gzip): still the
        # user's input, so one line and exit 2, never a traceback.
        where = getattr(e, "filename", None)
        print(f"safeselect: error: {f'{where}: ' if where else ''}{one_line(e)}", file=sys.stderr)
        return 2


# Errors that can only come from what the user gave (files and folders), whichever code path met them.
INPUT_ERRORS: tuple[type[BaseException], ...] = (UnicodeError, IsADirectoryError, NotADirectoryError,
                                                 PermissionError, FileNotFoundError, FileExistsError, EOFError)


def one_line(e: BaseException) -> str:
    """The exception's message on one line, secrets masked."""
    text = " ".join(str(e).split()) or type(e).__name__
    return redact(text)


def _show_log() -> None:
    """``--verbose``: the package's INFO log (each training step's loss, skipped runs) on stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("safeselect")
    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
