"""Exact-match answers: the answer a response gives, in the form the task's gold answers use.

sentiment / sst2 compare label words, arithmetic / gsm8k the final number,
any other task the normalised first line (or the final number when the gold
answer is numeric).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

LABEL_TASKS = {"sentiment", "sst2", "sst-2"}
NUMBER_TASKS = {"arithmetic", "gsm8k", "math"}
_LABEL_RE = re.compile(r"\b(positive|negative)\b", re.IGNORECASE)
# A number: optional sign and currency, digits with optional thousands commas, optional decimals.
_NUM_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_CUE = re.compile(r"####|\bfinal answer\b\s*(?:is|:|=)?|\banswer\s*(?:is|:|=)", re.IGNORECASE)
_SENTIMENT_GOLD = {"1": "positive", "0": "negative", "pos": "positive", "neg": "negative"}


def normalise_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5', '$7' -> '7', '-3.0' -> '-3'; None if not a number."""
    t = text.replace(",", "").replace("$", "").strip()
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _final_number(response: str) -> str | None:
    """The number after the last answer cue ("####", "The answer is", "Answer:"), else the last number."""
    cues = list(_ANSWER_CUE.finditer(response))
    if cues:
        m = _NUM_RE.search(response, cues[-1].end())
        if m:
            return normalise_number(m.group())
    nums = _NUM_RE.findall(response)
    return normalise_number(nums[-1]) if nums else None


def _norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def extract_answer(task: str | None, response: str) -> str | None:
    """The answer a response gives, in the form the task's gold answers use.

    sentiment / sst2: the first label word (positive | negative), lower case.
    arithmetic / gsm8k: the final number (see :func:`_final_number`), normalised.
    Any other task: the normalised first line of the response.
    """
    response = response or ""
    t = (task or "").lower()
    if t in LABEL_TASKS:
        m = _LABEL_RE.search(response)
        return m.group(1).lower() if m else None
    if t in NUMBER_TASKS:
        return _final_number(response)
    first = response.strip().splitlines()[0] if response.strip() else ""
    return _norm_text(first) or None


def gold_answer(row: Any) -> str | None:
    """A row's gold answer in extracted form ('1' -> 'positive' for sentiment, '#### 72' -> '72' for maths)."""
    if row.answer is None:
        return None
    t = (row.task or "").lower()
    ans = str(row.answer).strip()
    if t in LABEL_TASKS:
        ans = _SENTIMENT_GOLD.get(ans.lower(), ans)
        return extract_answer(t, ans)
    if t in NUMBER_TASKS:
        return extract_answer(t, ans)
    num = normalise_number(ans)  # an unknown task with a numeric gold answer is compared as a number
    return num if num is not None else _norm_text(ans)


def is_correct(row: Any, response: str) -> bool | None:
    """Exact match of the response's answer with the row's gold answer; None when the row has no answer."""
    gold = gold_answer(row)
    if gold is None:
        return None
    t = (row.task or "").lower()
    if t in LABEL_TASKS or t in NUMBER_TASKS:
        return extract_answer(t, response) == gold
    if normalise_number(str(row.answer)) is not None:
        return _final_number(response or "") == gold
    return extract_answer(None, response) == gold
