"""Chat completions over an OpenAI-compatible endpoint, for the ``llm`` reward and the HTTP creator.

Settings come from ``judges.llm`` (base_url, model, api_key_env, concurrency,
timeout_s, retries, backoff_s). The API key is read from the named environment
variable at call time and never written anywhere. Timeouts, HTTP 429 and 5xx
are retried with exponential backoff; a request that still fails gives None
(callers count those) rather than stopping a long run.

Uses only the standard library, so that eva needs no HTTP dependency; the
project's LLM judge has its own client in :mod:`safeselect.judges`.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from safeselect.errors import UserError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def chat_once(base_url: str, model: str, message: str, *, api_key: str | None, temperature: float,
              max_tokens: int | None, timeout_s: float, retries: int, backoff_s: float,
              top_p: float | None = None) -> str | None:
    """One user message -> the assistant's text, or None after ``retries`` failed attempts."""
    url = base_url.rstrip("/") + "/chat/completions"
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": message}],
                            "temperature": temperature}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if top_p is not None:
        body["top_p"] = top_p
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode()
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
            content = payload["choices"][0]["message"]["content"]
            if isinstance(content, str):
                return content
        except urllib.error.HTTPError as e:
            if e.code not in RETRY_STATUS:
                if e.code in (401, 403):
                    raise UserError(f"the endpoint {base_url} refused the request (HTTP {e.code}): check the API "
                                    "key variable judges.llm.api_key_env") from None
                return None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, KeyError, IndexError, ValueError):
            pass
        if attempt < retries:
            time.sleep(delay)
            delay *= 2
    return None


def chat_client(cfg: Any, temperature: float | None = None, max_tokens: int | None = None,
                top_p: float | None = None) -> Callable[[list[str]], list[str | None]]:
    """A function that sends each message (concurrently) and returns the replies in order."""
    llm = getattr(getattr(cfg, "judges", None), "llm", None)
    base_url = getattr(llm, "base_url", None)
    if not base_url:
        raise UserError("judges.llm.base_url is not set: give an OpenAI-compatible endpoint, e.g. "
                        "judges.llm.base_url=http://127.0.0.1:8000/v1")
    key = os.environ.get(llm.api_key_env) if llm.api_key_env else None
    temp = llm.temperature if temperature is None else temperature

    def send(messages: list[str]) -> list[str | None]:
        def one(m: str) -> str | None:
            return chat_once(base_url, llm.model, m, api_key=key, temperature=temp, max_tokens=max_tokens,
                             timeout_s=llm.timeout_s, retries=llm.retries, backoff_s=llm.backoff_s, top_p=top_p)

        with ThreadPoolExecutor(max_workers=max(1, llm.concurrency)) as ex:
            return list(ex.map(one, messages))

    return send
