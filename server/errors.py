"""One error body for every failure: {"error": {"type", "message", "hint"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error with a status code, a type, a message and a hint."""

    def __init__(
        self, status: int, type: str, message: str, hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.type, self.message, self.hint = status, type, message, hint
        self.headers = headers


def error_body(type: str, message: str, hint: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type, "message": message, "hint": hint}}


_STATUS_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge",
                 429: "RateLimited", 503: "ServiceUnavailable"}  # fmt: skip


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] if parts[0] == "body" else parts
    # Discriminated unions add the tag as a location segment (e.g. dataset.builtin.n_eval).
    return ".".join(parts) or "body"


def validation_message(errors: list[dict[str, Any]]) -> str:
    lines = []
    for err in errors:
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (not part of the spec; check its spelling)"
        elif err.get("type") == "json_invalid":
            msg = f"malformed JSON: {err.get('ctx', {}).get('error', msg)}"
        lines.append(f"{_location(tuple(err.get('loc', ())))}: {msg}")
    return "; ".join(lines) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.type, exc.message, exc.hint), exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(list(exc.errors()))
        hint = "fix the fields listed; every field of the job spec is documented at /docs"
        return JSONResponse(error_body("ValidationError", message, hint), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "HTTPError")
        message = str(exc.detail) if exc.detail else type_
        if exc.status_code == 404 and message == "Not Found":
            message, hint = "no such endpoint", "the API lives under /v1; see /docs"
        else:
            hint = None
        return JSONResponse(error_body(type_, message, hint), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body("InternalError", "the server hit an unexpected error",
                       "retry; if it persists, the server log has the traceback"),
            500,
        )  # fmt: skip
