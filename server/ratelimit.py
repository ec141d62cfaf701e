"""Rate limiting: a token bucket per API key (per client IP without a valid key).

Each bucket holds up to `rate_limit_burst` tokens and refills at `rate_limit_per_s` tokens per
second; a request takes one token, and a request that finds its bucket empty is answered 429
with `Retry-After` (whole seconds until a token is back, at least 1) and the usual error body.
`rate_limit_per_s = 0` turns the limiter off; `GET /v1/health` is never limited.

A key becomes "known" once it has authenticated a request (`deps.current_user` records the
caller in the request state), and unknown again on a 401. Until then a request with the key
also takes a token from its client IP's bucket (as a request without a key does): a client
trying random keys runs out of its IP's burst instead of getting a fresh bucket per key, while
known keys behind the same IP are unaffected.

The buckets live in the API server process: with several uvicorn workers (or servers) each
keeps its own, so the effective limit is the setting times the number of processes. The client
IP is the TCP peer, or what uvicorn's `--proxy-headers` takes from a trusted proxy.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reprlab.server.auth import hash_api_key, key_from_headers
from reprlab.server.config import Settings
from reprlab.server.errors import error_body

EXEMPT_PATHS = frozenset({"/v1/health"})
MAX_BUCKETS = 100_000  # least recently used buckets beyond this are forgotten (refilled)


@dataclass
class Bucket:
    """Tokens left at `stamp` (monotonic seconds); `known` for a key the server accepted."""

    tokens: float
    stamp: float
    known: bool = False


class TokenBuckets:
    """Token buckets by name, refilled lazily on each look-up.

    Args:
        rate: Tokens added per second (> 0).
        burst: Bucket size: requests allowed at once after an idle period.
        clock: Monotonic time in seconds (tests pass a fake one).
    """

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:  # fmt: skip
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not {rate}, {burst}")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._max = max_buckets
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def get(self, name: str) -> Bucket:
        """The bucket `name`, refilled up to now (a new one is full)."""
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = Bucket(tokens=float(self.burst), stamp=now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(name)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def wait(self, bucket: Bucket) -> int:
        """Whole seconds until `bucket` holds a token again: 0 if it has one now, else >= 1."""
        if bucket.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))

    def take(self, *names: str) -> int:
        """Take a token from each named bucket if every one has a token; else take none.

        Returns:
            0 when taken, else the Retry-After in seconds (the longest wait of the buckets).
        """
        buckets = [self.get(n) for n in names]
        wait = max(self.wait(b) for b in buckets)
        if wait == 0:
            for b in buckets:
                b.tokens -= 1
        return wait


class RateLimitMiddleware:
    """ASGI middleware applying `TokenBuckets` to every HTTP request but the exempt paths."""

    def __init__(
        self, app: ASGIApp, *, rate: float, burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.app = app
        self.buckets = TokenBuckets(rate, burst, clock=clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = key_from_headers(headers.get("authorization"), headers.get("x-api-key"))
        client = scope.get("client")
        ip_name = f"ip:{client[0] if client else 'unknown'}"
        key_name = f"key:{hash_api_key(key)}" if key else None
        known = key_name is not None and self.buckets.get(key_name).known
        names = [key_name] if known and key_name else [n for n in (key_name, ip_name) if n]
        wait = self.buckets.take(*names)
        if wait:
            await self._refuse(wait)(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        state = scope.setdefault("state", {})  # `request.state`: deps.current_user sets caller
        await self.app(scope, receive, send_status)
        if key_name is not None:
            if state.get("caller") is not None:
                self.buckets.get(key_name).known = True
            elif status == 401:  # revoked or expired since: back to sharing the IP's bucket
                self.buckets.get(key_name).known = False

    def _refuse(self, wait: int) -> JSONResponse:
        rate, burst = self.buckets.rate, self.buckets.burst
        body = error_body(
            "RateLimited",
            f"rate limit reached: at most {rate:g} requests per second per API key (per client "
            f"address for requests without an accepted key), in bursts of up to {burst} "
            f"(rate_limit_per_s, rate_limit_burst); retry in {wait} s",
            "wait for Retry-After seconds (the SDK does this itself), or poll less often",
        )
        return JSONResponse(body, 429, headers={"Retry-After": str(wait)})


def install_rate_limit(app: FastAPI, settings: Settings) -> None:
    """Rate-limit `app` by the settings (nothing when `rate_limit_per_s` is 0). Install it
    last, so it is the outermost middleware and refuses before a body is read."""
    if settings.rate_limit_per_s > 0:
        app.add_middleware(
            RateLimitMiddleware, rate=settings.rate_limit_per_s, burst=settings.rate_limit_burst
        )
