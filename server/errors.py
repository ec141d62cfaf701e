"""One error body for every failure: `{"error": {"type", "message", "hint"}}`.

Handlers cover our own `APIError`, FastAPI's request validation (422), Starlette's HTTP
errors (unknown route 404, 405, ...), an unreachable database (503) and any unexpected exception
(500, without a traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

VALIDATION_HINT = (
    "fix the fields listed; every field of the job spec is described in the JobSpec docs "
    "(GET /openapi.json, or /docs in a browser)"
)

_STATUS_TYPES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
    429: "RateLimited", 500: "InternalError", 503: "ServiceUnavailable",
}  # fmt: skip


class APIError(Exception):
    """An error the API answers with: a status code, a type, a message and a hint."""

    def __init__(
        self, status: int, type: str, message: str, hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.type, self.message, self.hint = status, type, message, hint
        self.headers = headers


def error_body(type: str, message: str, hint: str | None = None) -> dict[str, Any]:
    """The one error shape of the API."""
    return {"error": {"type": type, "message": message, "hint": hint}}


def _location(loc: tuple[Any, ...], body: Any, *, missing: bool) -> str:
    """`('body', 'conditions', 0, 'k')` -> `conditions.0.k`; query/path/header keep their kind.

    Pydantic puts the tag of a discriminated union into the location (`dataset.builtin.bogus`);
    walking the request body alongside drops those segments, since a tag is never a key of the
    object it is read from (the last segment of a "missing" error is the absent field itself).
    """
    parts = list(loc)
    if not parts or parts[0] != "body":
        return ".".join(str(p) for p in parts)
    shown: list[str] = []
    node = body
    for i, part in enumerate(parts[1:], start=1):
        is_last = i == len(parts) - 1
        if isinstance(node, dict) and isinstance(part, str) and part not in node:
            if not (is_last and missing):
                continue  # a union tag, not a field
        shown.append(str(part))
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(shown) or "body"


def _problem(err: dict[str, Any], body: Any) -> str:
    kind = err.get("type")
    loc = tuple(err.get("loc", ()))
    if kind == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "invalid JSON")
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return f"body: malformed JSON{where}: {detail}; send a JSON object"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        msg = "unknown field (not part of the spec; check its spelling)"
    elif kind == "missing":
        msg = "required field is missing"
    return f"{_location(loc, body, missing=kind == 'missing')}: {msg}"


def validation_message(errors: list[dict[str, Any]], body: Any = None) -> str:
    """Each problem as `<dotted.location>: <what is wrong>`, joined by '; '."""
    return "; ".join(_problem(err, body) for err in errors) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response use `error_body`."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.type, exc.message, exc.hint), exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(list(exc.errors()), exc.body)
        return JSONResponse(error_body("ValidationError", message, VALIDATION_HINT), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "HTTPError")
        message = str(exc.detail) if exc.detail else type_
        hint: str | None = None
        if exc.status_code == 404 and message == "Not Found":
            message = f"no endpoint {request.url.path}"
            hint = "the API lives under /v1 (e.g. GET /v1/jobs); see GET /openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            hint = "see GET /openapi.json for the methods of each endpoint"
        return JSONResponse(error_body(type_, message, hint), exc.status_code, headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
        # A database that does not answer is an outage to wait out, not a bug: 503 + Retry-After.
        log.error("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        body = error_body(
            "ServiceUnavailable",
            "the job database is unreachable",
            "retry shortly; if it persists, check that the database in REPRLAB_DATABASE_URL is up",
        )
        return JSONResponse(body, 503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = error_body(
            "InternalError",
            f"the server hit an unexpected error ({type(exc).__name__})",
            "retry; if it persists, the server log has the traceback",
        )
        return JSONResponse(body, 500)
