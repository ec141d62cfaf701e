"""The HTTP transport: auth, JSON, error mapping, retries with backoff and Retry-After."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from reprlab.client._exceptions import (
    APIConnectionError,
    APITimeoutError,
    status_error,
)

RETRY_STATUSES = {429, 502, 503, 504}


def retry_after(response: httpx.Response) -> float | None:
    """The response's Retry-After in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Transport:
    """One httpx client with the API key, retrying what is safe to retry."""

    def __init__(
        self, base_url: str, api_key: str | None, *, timeout: float, max_retries: int,
        backoff: float = 0.5, max_backoff: float = 8.0, max_retry_wait: float = 60.0,
    ) -> None:  # fmt: skip
        headers = {"User-Agent": "reprlab-python"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.has_key = bool(api_key)
        self.max_retries = max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_retry_wait = max_retry_wait
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return base * (0.5 + random.random() / 2)

    def _wait_to_retry(self, allowed: bool, attempt: int, retry_after: float | None) -> bool:
        """Sleep before the next attempt and return True, if another attempt is allowed."""
        if not allowed or attempt >= self.max_retries:
            return False
        time.sleep(self._delay(attempt, retry_after))
        return True

    def _may_retry(self, response: httpx.Response, safe: bool) -> tuple[bool, float | None]:
        """Whether an error response may be retried, and the server's Retry-After (seconds)."""
        if response.status_code not in RETRY_STATUSES:
            return False, None
        after = retry_after(response)
        if after is not None and after > self.max_retry_wait:
            return False, None  # waiting that long is the caller's decision
        # A 429 with Retry-After is the rate limiter, which refused before doing anything: any
        # request may be sent again. (A quota 429 has no Retry-After: it frees up only when jobs
        # end.)
        return safe or (response.status_code == 429 and after is not None), after

    def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None, stream: bool = False, content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        """Send a request; raise the mapped exception for an error status.

        Idempotent requests (GET by default) are retried on connection errors and on 429/502/
        503/504; others only on failures to connect (the server never saw them) and on a 429
        with Retry-After (the rate limiter refused them unseen). The wait is the response's
        Retry-After, else an exponential backoff; a Retry-After above `max_retry_wait` seconds
        is not waited for (the error is raised). `content` sends raw bytes (an upload) instead
        of `json`, with `headers` added.
        """
        safe = method == "GET" if idempotent is None else idempotent
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                request = self._http.build_request(method, path, json=json, params=params,
                                                   content=content, headers=headers)  # fmt: skip
                response = self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # The request never reached the server: safe to retry even a job creation.
                if self._wait_to_retry(True, attempt, None):
                    attempt += 1
                    continue
                raise APIConnectionError(
                    f"cannot reach the reprlab server at {self.base_url}: {exc}. "
                    "Start it with `reprlab up` or set REPRLAB_URL"
                ) from exc
            except httpx.TimeoutException as exc:
                if self._wait_to_retry(safe, attempt, None):
                    attempt += 1
                    continue
                raise APITimeoutError(f"{method} {path} timed out: {exc}") from exc
            except httpx.TransportError as exc:
                if self._wait_to_retry(safe, attempt, None):
                    attempt += 1
                    continue
                raise APIConnectionError(f"{method} {path} failed: {exc}") from exc
            if response.status_code < 400:
                return response
            if stream:
                response.read()
            allowed, after = self._may_retry(response, safe)
            if self._wait_to_retry(allowed, attempt, after):
                attempt += 1
                continue
            raise status_error(response)
