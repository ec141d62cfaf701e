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

from reprlab.schemas.errors import validation_message

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
