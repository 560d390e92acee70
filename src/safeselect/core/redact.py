"""Secrets out of every error text and file: API keys from the environment, bearer tokens, key-like fields.

Secrets come from the environment only (never from config files). Anything printed or saved that may
echo one (an endpoint's error body, a traceback in ``error.txt``) goes through :func:`redact` first.
"""

from __future__ import annotations

import os
import re

MASK = "***"
# Environment variables whose values are secrets: these names, plus any registered by a client (its key_env).
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
_extra_names: set[str] = set()
_MIN_LEN = 6  # shorter values (e.g. "1", "true") would mask ordinary words
_PATTERNS = [
    # Authorization: Bearer <token> / Basic <token>
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1\2" + MASK),
    # "api_key": "...", api-key=..., token: ..., password=...
    (re.compile(r"""(?i)(["']?\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|authorization)"""
                r"""\b["']?\s*[:=]\s*["']?)(?!\*\*\*)[^\s"',}]{6,}"""), r"\1" + MASK),
    # provider key shapes: sk-..., hf_..., ghp_..., xoxb-...
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"), r"\1-" + MASK),
    (re.compile(r"\b(hf|ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{8,}"), r"\1_" + MASK),
    (re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{8,}"), "xox-" + MASK),
]


def register_secret_env(name: str | None) -> None:
    """Treat the value of environment variable ``name`` as a secret (e.g. ``judges.llm.api_key_env``)."""
    if name:
        _extra_names.add(name)


def _secret_values() -> list[str]:
    vals = {v for k, v in os.environ.items() if (k in _extra_names or _SECRET_NAME.search(k)) and len(v) >= _MIN_LEN}
    return sorted(vals, key=len, reverse=True)  # longest first: a key containing another is masked whole


def redact(text: str) -> str:
    """``text`` with every secret value from the environment and every token-like string masked."""
    if not text:
        return text
    for v in _secret_values():
        if v in text:
            text = text.replace(v, MASK)
    for pat, repl in _PATTERNS:
        text = pat.sub(repl, text)
    return text
