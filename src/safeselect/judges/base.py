"""The judge contract (:class:`Judge`). A judge is built by name with :func:`make_judge` and answers one or both of
two kinds of call, which its ``safety`` / ``pairwise`` flags declare.

- Safety verdicts: ``judge.harmful(prompts, responses) -> list[bool | None]`` (None = the
  judge could not decide; callers count those, never drop them silently). Judges that
  give a 1-5 harmfulness score also expose ``judge.scores(prompts, responses) -> list[float | None]``.
- Pairwise preference: ``judge.compare(prompts, responses_a, responses_b, rows=None) -> list[float | None]``
  with 1.0 = A better, 0.0 = B better, 0.5 = tie.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.registry import registry


@runtime_checkable
class Judge(Protocol):
    """The one judge contract. ``safety`` and ``pairwise`` say which calls a judge answers; the others
    raise :class:`UserError`. ``abstains``: the judge may leave an item undecided (None)."""

    name: str
    safety: bool
    pairwise: bool
    abstains: bool

    def harmful(self, prompts: list[str], responses: list[str]) -> list[bool | None]: ...

    def verdicts(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]: ...

    def compare(self, prompts: list[str], responses_a: list[str], responses_b: list[str],
                rows: list[Row] | None = None) -> list[float | None]: ...

    def stats(self) -> dict[str, int]: ...


class BaseJudge:
    """Defaults for :class:`Judge`: a judge overrides the calls it answers and sets the matching flag."""

    name = ""
    safety = False
    pairwise = False
    abstains = False

    def harmful(self, prompts: list[str], responses: list[str]) -> list[bool | None]:
        raise UserError(f"judge '{self.name}' gives no safety verdicts (it is pairwise: use eval.pairwise)")

    def verdicts(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        """One dict per item, at least ``{"harmful": bool | None}``; judges add their own fields."""
        return [{"harmful": h} for h in self.harmful(prompts, responses)]

    def compare(self, prompts: list[str], responses_a: list[str], responses_b: list[str],
                rows: list[Row] | None = None) -> list[float | None]:
        raise UserError(f"judge '{self.name}' cannot compare two responses (choose a pairwise judge: rule, llm)")

    def stats(self) -> dict[str, int]:
        """Counters the judge reports (requests, cache hits, malformed replies); none by default."""
        return {}


def make_judge(name: str, cfg: Any = None) -> Judge:
    """Build the judge registered as ``name``; its class takes the experiment config (or None for defaults)."""

    cls = registry("judges").get(name)
    return cls(cfg)
