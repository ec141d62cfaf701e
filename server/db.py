"""Database engine and sessions (SQLAlchemy 2; SQLite by default, PostgreSQL in deployments)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
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


HEAD = "head"
BASELINE = "0001"  # the schema `create_all` made before migrations existed


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "reprlab.server:migrations")
    config.attributes["connection"] = connection
    return config


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process at a time (the API server and workers all migrate at start-up).

    PostgreSQL: a session advisory lock. SQLite file: an exclusive `flock` on a file beside the
    database. In-memory SQLite belongs to one process and needs no lock.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).expanduser().with_suffix(".migrate-lock")
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_PG_LOCK_KEY = 0x7265_7072_6C61  # "reprla": reprlab's migration lock


def init_db(engine: Engine) -> None:
    """Bring the database schema to the newest migration (creating it if empty).

    A database made by the service before migrations existed (tables but no `alembic_version`)
    is first stamped as the baseline revision, then upgraded like any other.
    """
    with _migration_lock(engine), engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        config = _alembic_config(conn)
        if "jobs" in tables and "alembic_version" not in tables:
            command.stamp(config, BASELINE)
        command.upgrade(config, HEAD)


def schema_revision(engine: Engine) -> str | None:
    """The database's current migration revision (None before the first migration)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (rows outlive their transaction)."""
    return sessionmaker(engine, expire_on_commit=False)
