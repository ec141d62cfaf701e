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
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from reprlab.schemas.errors import validation_message

log = logging.getLogger(__name__)

VALIDATION_HINT = (
    "fix the fields listed; every field of the job spec is described in the JobSpec docs "
    "(GET /openapi.json, or /docs in a browser)"
)

_UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's detail for such a 400

_STATUS_TYPES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
    429: "RateLimited", 500: "InternalError", 503: "ServiceUnavailable",
}  # fmt: skip


_STATUS_MEANINGS = {
    401: "Missing, invalid, revoked or expired API key.",
    403: "The key's user may not do this (e.g. an admin key is needed).",
    404: "No such object for this caller (another member's job is indistinguishable from none).",
    409: "The object's state does not allow the request (e.g. results of an unfinished job).",
    413: "The request body exceeds a size or nesting limit.",
    415: "The uploaded file is of a type this server does not read.",
    422: "Invalid parameters or body; the message names each bad field.",
    429: "Rate limit or quota reached; `Retry-After` says when to retry where it applies.",
    503: "The job database or the job queue is unreachable; retry after `Retry-After` seconds.",
}


class ErrorInfo(BaseModel):
    """What went wrong and how to fix it."""

    type: str = Field(description="Error type, e.g. 'NotFound', 'ValidationError'.")
    message: str = Field(description="What went wrong, naming the field or limit at fault.")
    hint: str | None = Field(description="What to change to fix it.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo = Field(description="The error.")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for error statuses a route may answer, all `ErrorBody`.

    Listing 422 here also replaces FastAPI's default validation-error schema, which is not the
    shape this API answers with.
    """
    return {code: {"model": ErrorBody, "description": _STATUS_MEANINGS[code]} for code in codes}


# Statuses any route behind an API key may answer: no valid key, a bad parameter, the rate
# limit, the database down.
AUTHENTICATED_ERRORS = (401, 422, 429, 503)


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
        if exc.status_code == 400 and message == _UNPARSABLE_BODY:
            # FastAPI's answer to a JSON body that is not UTF-8: malformed JSON, like any other.
            message = "body: malformed JSON: not UTF-8 text; send a JSON object encoded as UTF-8"
            return JSONResponse(error_body("ValidationError", message, VALIDATION_HINT), 422)
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
