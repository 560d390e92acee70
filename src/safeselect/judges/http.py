"""A small client for OpenAI-compatible chat-completions endpoints (vLLM, TGI, hosted APIs), built for judging.

What it adds over a bare POST:
- retries with exponential backoff (``backoff_s * 2**attempt``, or the server's
  ``Retry-After`` when longer) on timeouts, connection errors, HTTP 429 and 5xx,
  and on *malformed* replies: a body that is not chat-completions JSON, or a
  reply the caller's parser rejects (no score line). After the last retry the
  item is counted (``stats()``) and returned as None, never dropped silently;
- a concurrency limit (a thread pool of ``concurrency`` workers);
- an on-disk cache of parsed replies, keyed by the sha256 of the endpoint and
  the request body (judge model, sampling settings and the full messages, so
  the prompt and the judged responses): a rerun, or a run resumed after a
  kill, never pays twice for a reply it already has. Each entry is written
  atomically as soon as its reply arrives;
- the API key is read from the environment variable named in the config at
  request time and only ever placed in the ``Authorization`` header: it is not
  part of the cache key, the cache, the stats, log lines or error messages.

Only the standard library is used (urllib), so judging needs no extra package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from safeselect.config.paths import cache_dir as user_cache
from safeselect.core.io import atomic_write_text
from safeselect.core.redact import MASK, redact, register_secret_env
from safeselect.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")
Messages = list[dict[str, str]]

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class Malformed(Exception):
    """The endpoint answered, but not with a usable reply."""


class Transient(Exception):
    """A failure worth retrying: timeout, connection error, 429 or 5xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChatClient:
    """Chat-completions client with retries, a concurrency limit and a verdict cache.

    ``cfg`` is a :class:`safeselect.config.LlmJudgeConfig` (or anything with the same attributes);
    ``sampling`` replaces its request settings (e.g. eva's creator samples at its own temperature,
    ``max_tokens`` and ``top_p``). Those settings are part of the request body, so of the cache key.
    """

    def __init__(self, cfg: Any, cache_dir: str | Path | None = None, sampling: dict[str, Any] | None = None) -> None:
        if cfg is None or not cfg.base_url:
            raise UserError("judges.llm.base_url is not set (an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1)")
        self.cfg = cfg
        self.sampling = {k: v for k, v in (sampling or {}).items() if v is not None}
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        if cache_dir is None:
            cache_dir = cfg.cache_dir
        if cache_dir is None:
            cache_dir = user_cache() / "judge"
        self.cache_dir = Path(cache_dir)
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "cache_hits": 0, "retries": 0, "malformed": 0, "failed": 0}

    # ------------------------------------------------------------------ public

    def stats(self) -> dict[str, int]:
        """Requests sent, cache hits, retries, and items that stayed malformed or failed after every retry."""
        with self._lock:
            return dict(self.counts)

    def payload(self, messages: Messages) -> dict[str, Any]:
        return {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature,
                "max_tokens": self.cfg.max_tokens, **self.sampling}

    def cache_key(self, messages: Messages, tag: str = "") -> str:
        """sha256 of the endpoint and the request body (judge config minus secrets, prompt, responses)."""
        body = {"url": self.url, "payload": self.payload(messages), "tag": tag}
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def run(self, requests: list[Messages], parse: Callable[[str], T | None], tag: str = "",
            desc: str = "llm judge", show_progress: bool = True) -> list[tuple[T | None, str | None]]:
        """Send every request (cached ones are not sent), parse each reply; returns ``(parsed, raw reply)`` each.

        ``parse`` returns None (or raises ValueError) for a malformed reply; that request is retried, and
        after the last retry its item is ``(None, last raw reply)`` and counted as malformed. ``tag`` names
        the parser (a change of prompt template or parser must change it) so cached replies stay valid.
        """
        from tqdm.auto import tqdm

        out: list[tuple[T | None, str | None]] = [(None, None)] * len(requests)
        failed: list[int] = []
        todo = []
        for i, msgs in enumerate(requests):
            hit = self._cache_get(self.cache_key(msgs, tag))
            parsed = _safe_parse(parse, hit) if hit is not None else None
            if parsed is not None:
                out[i] = (parsed, hit)
                with self._lock:
                    self.counts["cache_hits"] += 1
            else:
                todo.append(i)
        if not todo:
            return out
        fatal: list[BaseException] = []

        def work(i: int) -> None:
            if fatal:
                return
            try:
                parsed, raw, failure = self._one(requests[i], parse, tag)
                out[i] = (parsed, raw)
                if failure == "failed":
                    failed.append(i)
            except UserError as e:  # a non-retryable answer (bad key, bad model name): stop everything
                fatal.append(e)

        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            list(tqdm(pool.map(work, todo), total=len(todo), desc=desc, disable=not show_progress, leave=False))
        if fatal:
            raise fatal[0]
        if len(failed) == len(todo):  # not one reply: the endpoint is down or unreachable
            raise UserError(f"llm judge: no reply from {self.url} after {self.cfg.retries} retries "
                            f"for any of {len(todo)} requests")
        return out

    # ------------------------------------------------------------------ internals

    def _one(self, messages: Messages, parse: Callable[[str], T | None],
             tag: str) -> tuple[T | None, str | None, str | None]:
        """One request with retries: (parsed, raw reply, None) or (None, last raw reply, "malformed" | "failed")."""
        last_raw: str | None = None
        failure = "malformed"
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                with self._lock:
                    self.counts["retries"] += 1
            try:
                raw = self._post(messages)
            except Transient as e:
                failure = "failed"
                self._sleep(attempt, e.retry_after)
                log.info("llm judge: retrying after %s", e)
                continue
            except Malformed as e:
                failure = "malformed"
                self._sleep(attempt, None)
                log.info("llm judge: malformed reply (%s)", e)
                continue
            last_raw = raw
            parsed = _safe_parse(parse, raw)
            if parsed is not None:
                self._cache_put(self.cache_key(messages, tag), raw)
                return parsed, raw, None
            failure = "malformed"
            self._sleep(attempt, None)
        with self._lock:
            self.counts[failure] += 1
        return None, last_raw, failure

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        if attempt >= self.cfg.retries:
            return
        delay = self.cfg.backoff_s * (2 ** attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 60.0))
        time.sleep(delay)

    def _post(self, messages: Messages) -> str:
        body = json.dumps(self.payload(messages)).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env or "")
        register_secret_env(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._lock:
            self.counts["requests"] += 1
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                text = resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:
            if e.code in RETRY_STATUS:
                raise Transient(f"HTTP {e.code}", _retry_after(e.headers.get("Retry-After"))) from None
            # redacted: an endpoint may echo the key it was sent in its error body
            detail = redact(e.read().decode("utf-8", errors="replace")[:400]).replace("\n", " ")[:200]
            hint = f" (check the key in ${self.cfg.api_key_env})" if e.code in (401, 403) else ""
            raise UserError(f"llm judge: HTTP {e.code} from {self.url}{hint}: {detail}") from None
        except TimeoutError:
            raise Transient(f"timeout after {self.cfg.timeout_s}s") from None
        except urllib.error.URLError as e:
            raise Transient(f"connection error: {e.reason}") from None
        except (ConnectionError, OSError) as e:  # reset or dropped mid-reply
            raise Transient(f"connection error: {type(e).__name__}") from None
        try:
            obj = json.loads(text)
            content = obj["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            raise Malformed(f"not a chat-completions reply: {type(e).__name__}") from None
        if not isinstance(content, str):
            raise Malformed("reply content is not text")
        # a reply echoing the key is never cached or saved with it
        return content.replace(key, MASK) if key and len(key) >= 6 else content

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> str | None:
        p = self._cache_path(key)
        try:
            return json.loads(p.read_text(encoding="utf-8"))["reply"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def _cache_put(self, key: str, raw: str) -> None:
        atomic_write_text(self._cache_path(key), json.dumps({"reply": raw}, ensure_ascii=False))


def _safe_parse(parse: Callable[[str], T | None], raw: str) -> T | None:
    try:
        return parse(raw)
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
