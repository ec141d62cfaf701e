"""API keys: their format, how they are stored (a sha256 only) and read from request headers.

The key table and lookups live in `crud` (`create_api_key`, `authenticate`); the FastAPI
dependency that resolves the caller is `deps.current_user`.
"""

from __future__ import annotations

import hashlib
import secrets

from reprlab.server.errors import APIError

KEY_PREFIX = "rl_"

HOW_TO_AUTHENTICATE = (
    "create a key with `reprlab admin create-key NAME` on the server machine and pass it as "
    "'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
)
AUTH_HINT = "the SDK and CLI read the key from REPRLAB_API_KEY (or Client(api_key=...))"


def new_api_key() -> str:
    """A fresh random key: `rl_` + 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The stored form of a key (hex sha256); keys are random, so no salt is needed."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request: `Authorization: Bearer <key>` first, else `X-API-Key`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def unauthorized(problem: str) -> APIError:
    """The 401 answer, saying how to get and pass a key."""
    return APIError(
        401,
        "Unauthorized",
        f"{problem}: {HOW_TO_AUTHENTICATE}",
        AUTH_HINT,
        headers={"WWW-Authenticate": "Bearer"},
    )
