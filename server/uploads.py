"""Request bodies: at most `max_request_bytes`, JSON nested at most `max_json_depth` deep.

An ASGI middleware reads the body before the app does: a `Content-Length` over the limit is
refused at once without reading anything, and a body without one (chunked) is read only up to
the limit, then refused. A JSON body nested deeper than the limit is refused before it is
parsed (Python's parser recurses once per level). Bodies are only ever parsed as JSON: no
pickle, no form uploads. The dataset upload route (`POST /v1/datasets`, raw file bytes) has
its own limit, `max_upload_bytes`, and its body is not JSON-checked (the server stores it).

- 413 `PayloadTooLarge`: the body is larger than `max_request_bytes` (an upload: than
  `max_upload_bytes`).
- 422 `LimitExceeded`: JSON arrays/objects nested deeper than `max_json_depth`.
"""

from __future__ import annotations

from itertools import accumulate

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reprlab.server.config import Settings
from reprlab.server.errors import error_body

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DELTA = [0] * 256
for _open in b"[{":
    _DELTA[_open] = 1
for _close in b"]}":
    _DELTA[_close] = -1


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays/objects in a JSON text (brackets inside strings do not
    count; linear time, no recursion)."""
    # Drop escaped backslashes, then escaped quotes: every '"' left opens or closes a string,
    # so the even pieces between quotes are what lies outside strings (bytes methods: C speed).
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    return max(accumulate(_DELTA[b] for b in brackets), default=0)


class BodyLimitMiddleware:
    """Buffers each request body within the limits, then hands it to the app."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, max_depth: int,
        upload_limits: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth
        self.upload_limits = dict(upload_limits or {})  # POST path -> its own byte limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope.get("method") == "POST" and scope.get("path") in self.upload_limits
        limit = self.upload_limits[scope["path"]] if upload else self.max_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            too_large = self._too_large(f"Content-Length is {int(declared)} bytes",
                                        limit if upload else None)  # fmt: skip
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                response = self._too_large(f"the body exceeds {limit} bytes",
                                           limit if upload else None)  # fmt: skip
                await response(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not upload and body.lstrip()[:1] in (b"{", b"[") and self._too_deep(body):
            await self._deep()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_deep(self, body: bytes) -> bool:
        # Fewer brackets than the limit cannot nest deeper: most bodies stop at this count.
        if body.count(b"[") + body.count(b"{") <= self.max_depth:
            return False
        return json_depth(body) > self.max_depth

    def _too_large(self, what: str, upload_limit: int | None = None) -> JSONResponse:
        if upload_limit is not None:
            body = error_body(
                "PayloadTooLarge",
                f"upload too large: {what}; this server accepts dataset files of at most "
                f"{upload_limit} bytes (max_upload_bytes)",
                "upload a smaller file (fewer rows, or Parquet, which is smaller), or put the "
                "file under the worker's data roots and send its path ({'source': 'file', "
                "'path': ...})",
            )
            return JSONResponse(body, 413, headers={"Connection": "close"})
        body = error_body(
            "PayloadTooLarge",
            f"request body too large: {what}; this server accepts at most {self.max_bytes} "
            "bytes (max_request_bytes)",
            "send less data per job (fewer or shorter inline items), or put the dataset file "
            "under the worker's data roots and send its path ({'source': 'jsonl', 'path': ...})",
        )
        # The unread rest of the body is not waited for: the server closes the connection.
        return JSONResponse(body, 413, headers={"Connection": "close"})

    def _deep(self) -> JSONResponse:
        body = error_body(
            "LimitExceeded",
            f"body: JSON nested more than {self.max_depth} levels deep (max_json_depth)",
            "a job spec needs only a few levels; check how the body is built",
        )
        return JSONResponse(body, 422)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the buffered body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install_body_limit(app: FastAPI, settings: Settings) -> None:
    """Limit every request body of `app` by the settings' size and JSON depth."""
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_request_bytes,
        max_depth=settings.max_json_depth,
        upload_limits={"/v1/datasets": settings.max_upload_bytes},
    )  # fmt: skip
