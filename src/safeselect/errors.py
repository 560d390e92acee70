"""Errors users can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: an unknown key, a value out of range, a malformed file. Exit code 2."""


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or a list of the valid ones."""
    import difflib

    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    shown = ", ".join(sorted(choices)[:12])
    return f" (choose from: {shown})" if shown else ""
