"""The judge contracts. A judge is built by name with :func:`make_judge` and used through one of two calls.

- Safety verdicts: ``judge.harmful(prompts, responses) -> list[bool | None]`` (None = the
  judge could not decide; callers count those, never drop them silently). Judges that
  give a 1-5 harmfulness score also expose ``judge.scores(prompts, responses) -> list[float | None]``.
- Pairwise preference: ``judge.compare(prompts, responses_a, responses_b, rows=None) -> list[float | None]``
  with 1.0 = A better, 0.0 = B better, 0.5 = tie.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from safeselect.core.rows import Row


@runtime_checkable
class SafetyJudge(Protocol):
    name: str

    def harmful(self, prompts: list[str], responses: list[str]) -> list[bool | None]: ...


@runtime_checkable
class PairwiseJudge(Protocol):
    name: str

    def compare(self, prompts: list[str], responses_a: list[str], responses_b: list[str],
                rows: list[Row] | None = None) -> list[float | None]: ...


def make_judge(name: str, cfg: Any = None) -> Any:
    """Build the judge registered as ``name``; its class takes the experiment config (or None for defaults)."""
    from safeselect.registry import registry

    cls = registry("judges").get(name)
    return cls(cfg)
