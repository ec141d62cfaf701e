"""Database engine and sessions (SQLAlchemy 2; SQLite by default, PostgreSQL in deployments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Base(DeclarativeBase):
    """Declarative base of every table."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; the busy timeout makes a writer wait for
    # the lock instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL.

    SQLite gets WAL, foreign keys, a busy timeout, `check_same_thread` off (FastAPI runs sync
    routes in a thread pool) and its file's directory created; an in-memory SQLite database is
    shared by every thread through one connection. Other databases get a pre-pinged pool.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    database = parsed.database
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    if not database or database == ":memory:":
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def init_db(engine: Engine) -> None:
    """Create the tables that do not exist yet (migrations come with Alembic later)."""
    from reprlab.server import models  # noqa: F401 - registers the tables on Base

    Base.metadata.create_all(engine)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (rows outlive their transaction)."""
    return sessionmaker(engine, expire_on_commit=False)
