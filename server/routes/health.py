"""Liveness and database reachability (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import text

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Service liveness and whether the job database answers."""

    status: str = Field(description="'ok' when the database answers, else 'degraded'.")
    version: str = Field(description="Server version.")
    database: str = Field(description="'ok' or the database error.")


@router.get("/health", response_model=Health, summary="Service health")
def health(request: Request) -> Health:
    """Liveness probe (no API key needed): the version and a `SELECT 1` on the database."""
    from reprlab.server.app import VERSION

    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        db = f"error: {type(exc).__name__}"
    return Health(status="ok" if db == "ok" else "degraded", version=VERSION, database=db)
