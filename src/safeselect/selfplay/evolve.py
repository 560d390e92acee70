"""The creator's rewrites (eva step 3): evol-instruct style chains and self-instruct style fresh prompts.

A *creator* is any callable ``list[str] -> list[str]``: it gets one rewrite
request per prompt (a user message) and returns the raw replies. The shared
creator is the current solver, the independent one a frozen model or an
OpenAI-compatible endpoint (see :mod:`safeselect.selfplay.run`).

``evol-instruct``: each sampled prompt is rewritten ``evolutions`` times in a
chain, each step by one mutation drawn uniformly from five: four in-depth
(add a constraint, deepen, concretise, require reasoning) and one in-breadth
(a new prompt in the same domain). Every kept step is a new pool entry; a
step whose output is cleaned away leaves the chain at its last kept prompt.

``self-instruct``: for each sampled prompt, ``evolutions`` new prompts are
asked for, each from a request that shows the sampled prompt and a few other
pool prompts as examples (depth = parent depth + 1, not chained).

The request wording below is ours (not copied from WizardLM or distilabel).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from safeselect.errors import UserError, suggest
from safeselect.selfplay.pool import PromptEntry, PromptPool, norm_key

Creator = Callable[[list[str]], list[str]]

IN_DEPTH = {
    "constraint": "Keep the goal of the request, but add one extra requirement or limit that a good answer must "
                  "respect (a format, a length, an audience, a condition).",
    "deepen": "Keep the topic, but make the request go further into it: ask about causes, trade-offs, edge "
              "cases or consequences instead of only the surface question.",
    "concretise": "Replace the general words of the request with a specific, realistic situation: names, "
                  "numbers, places or details that make it concrete.",
    "reasoning": "Rewrite the request so that answering it well takes several explicit steps of thinking, "
                 "and ask for those steps to be shown.",
}
IN_BREADTH = {
    "breadth": "Do not rewrite the request: write a brand-new request from the same domain, about a different "
               "and less common topic, of similar length and difficulty.",
}
MUTATIONS = tuple(IN_DEPTH) + tuple(IN_BREADTH)

_EVOL_TEMPLATE = (
    "You help build training prompts for an assistant by making a user request more demanding.\n"
    "{how}\n"
    "The result must still be one clear request that a person could understand and answer, at most about "
    "30 words longer than the original. Reply with the new request only: no title, no explanation, no answer.\n\n"
    "Request:\n{prompt}"
)
_SELF_INSTRUCT_TEMPLATE = (
    "Here are some requests that users sent to an assistant:\n{examples}\n\n"
    "Write one new request in the same spirit, on a topic none of them covers. "
    "Reply with the new request only: no numbering, no explanation, no answer."
)


def evol_request(prompt: str, mutation: str) -> str:
    """The user message asking the creator to apply ``mutation`` to ``prompt``."""
    how = IN_DEPTH.get(mutation) or IN_BREADTH.get(mutation)
    if how is None:
        raise ValueError(f"unknown mutation '{mutation}' (one of {', '.join(MUTATIONS)})")
    return _EVOL_TEMPLATE.format(how=how, prompt=prompt.strip())


def self_instruct_request(examples: list[str]) -> str:
    """The user message asking for a fresh prompt in the style of ``examples``."""
    shown = "\n".join(f"{i + 1}. {e.strip()}" for i, e in enumerate(examples))
    return _SELF_INSTRUCT_TEMPLATE.format(examples=shown)


# Labels and template debris that creators put around the prompt they were asked for.
_CHAT_TOKENS = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]")
_LABEL = (r"(?:here(?:'s| is)[^:\n]{0,40}|(?:the )?(?:new|rewritten|revised|evolved|created|given|final)\s+"
          r"(?:request|prompt|instruction|question)|request|prompt|instruction|question|user|assistant)")
# a label counts only when a colon or a line break follows it, so "Question the data ..." survives
_LEAD_LABEL = re.compile(r"^\s*(?:#+\s*)?(?:\*\*)?\s*#?\s*" + _LABEL + r"\s*#?\s*(?:\*\*)?\s*(?::\s*(?:\*\*)?|\n)",
                         re.IGNORECASE)
_ENUM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_QUOTES = "\"'“”‘’`"


def clean_prompt(text: str) -> tuple[str, bool]:
    """Strip chat tokens, leading labels ("Rewritten request:"), numbering, wrapping quotes and markdown bold.

    Returns the cleaned text and whether anything but whitespace was removed.
    """
    raw = text or ""
    s = _CHAT_TOKENS.sub("", raw).strip()
    for _ in range(3):  # labels can be stacked ("**New request:**\nRequest: ...")
        t = _LEAD_LABEL.sub("", s, count=1).strip()
        t = _ENUM.sub("", t, count=1).strip()
        if t == s:
            break
        s = t
    s = s.strip("*").strip()
    if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
        s = s[1:-1].strip()
    # keep one request: later paragraphs are usually an answer or commentary the creator added
    s = re.split(r"\n\s*\n", s, maxsplit=1)[0].strip()
    s = re.sub(r"[ \t]+", " ", s)
    return s, re.sub(r"\s+", " ", s) != re.sub(r"\s+", " ", raw).strip()


CLEAN_COUNTS = ("generated", "markers_stripped", "empty", "too_short", "too_long", "duplicate", "kept")


def reject_reason(text: str, pool: PromptPool, seen: set[str], min_chars: int, max_chars: int) -> str | None:
    """Why a cleaned prompt is dropped (empty, too_short, too_long, duplicate), or None to keep it."""
    if not text.strip():
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    if pool.has_text(text) or norm_key(text) in seen:
        return "duplicate"
    return None


def evolve(pool: PromptPool, parents: list[PromptEntry], creator: Creator, *, method: str, evolutions: int,
           iteration: int, rng: np.random.Generator, min_chars: int, max_chars: int,
           context: list[PromptEntry] | None = None, n_examples: int = 3) -> tuple[list[PromptEntry], dict[str, int]]:
    """Evolve ``parents``; new entries are added to ``pool``. Returns them and the cleaning counts."""
    counts = dict.fromkeys(CLEAN_COUNTS, 0)
    new: list[PromptEntry] = []
    seen: set[str] = set()
    if evolutions <= 0 or not parents:
        return new, counts

    def keep(parent: PromptEntry, reply: str, mutation: str) -> PromptEntry | None:
        counts["generated"] += 1
        text, stripped = clean_prompt(reply)
        counts["markers_stripped"] += int(stripped)
        why = reject_reason(text, pool, seen, min_chars, max_chars)
        if why is not None:
            counts[why] += 1
            return None
        seen.add(norm_key(text))
        child = pool.evolve_child(parent, text, mutation, iteration)
        counts["kept"] += 1
        new.append(child)
        return child

    if method == "evol-instruct":
        current = list(parents)
        for _ in range(evolutions):
            mutations = [MUTATIONS[i] for i in rng.integers(0, len(MUTATIONS), size=len(current))]
            replies = creator([evol_request(c.text, m) for c, m in zip(current, mutations, strict=True)])
            _check(replies, current)
            for j, (reply, m) in enumerate(zip(replies, mutations, strict=True)):
                child = keep(current[j], reply, m)
                if child is not None:
                    current[j] = child  # the chain goes on from the last kept rewrite
    elif method == "self-instruct":
        others = [e for e in (context or parents)]
        requests: list[str] = []
        owners: list[PromptEntry] = []
        for p in parents:
            pool_texts = [e.text for e in others if e.prompt_id != p.prompt_id]
            for _ in range(evolutions):
                k = min(n_examples - 1, len(pool_texts))
                extra = [pool_texts[i] for i in rng.choice(len(pool_texts), size=k, replace=False)] if k else []
                requests.append(self_instruct_request([p.text, *extra]))
                owners.append(p)
        replies = creator(requests)
        _check(replies, owners)
        for p, reply in zip(owners, replies, strict=True):
            keep(p, reply, "self-instruct")
    else:
        raise UserError(f"unknown eva.evolve_method '{method}'{suggest(method, ['evol-instruct', 'self-instruct'])}")
    return new, counts


def _check(replies: list[Any], asked: list[Any]) -> None:
    if len(replies) != len(asked):
        raise RuntimeError(f"the creator returned {len(replies)} replies for {len(asked)} requests")
