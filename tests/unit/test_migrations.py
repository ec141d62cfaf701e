"""Alembic migrations on real SQLite and real PostgreSQL: the migrated schema is the models'
schema, a database from before migrations is adopted with its data, downgrades work, and
processes starting together do not race."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from reprlab.server.db import Base, _alembic_config, init_db, make_engine, schema_revision


def _head() -> str:
    with make_engine("sqlite://").connect() as conn:
        head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
    assert head is not None
    return head


def test_migrated_schema_equals_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        init_db(engine)
        assert schema_revision(engine) == _head()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree; write a migration: {diff}"
        init_db(engine)  # idempotent
        assert schema_revision(engine) == _head()
    finally:
        engine.dispose()


def test_a_database_from_before_migrations_is_adopted_with_its_data(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        # The baseline schema exactly as `create_all` made it, without `alembic_version`.
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "0001")
            conn.execute(text("DROP TABLE alembic_version"))
            now = datetime.now(UTC)
            conn.execute(
                text("INSERT INTO api_keys (owner, key_hash, prefix, created_at) "
                     "VALUES ('ada', :h, 'rl_abcde', :t)"),
                {"h": "0" * 64, "t": now},
            )  # fmt: skip
            conn.execute(
                text("INSERT INTO jobs (id, owner, status, spec, progress, stages, artifacts, "
                     "cancel_requested, created_at) VALUES ('j1', 'bob', 'succeeded', '{}', "
                     "'{}', '[]', '{}', false, :t)"),
                {"t": now},
            )  # fmt: skip
        init_db(engine)
        assert schema_revision(engine) == _head()
        with engine.connect() as conn:
            users = conn.execute(text("SELECT name, role FROM users ORDER BY name")).all()
            job = conn.execute(text("SELECT owner, status, attempts FROM jobs")).one()
        assert [tuple(u) for u in users] == [("ada", "member"), ("bob", "member")]
        assert tuple(job) == ("bob", "succeeded", 0)
    finally:
        engine.dispose()


def test_downgrade_to_nothing_and_upgrade_again(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        init_db(engine)
        with engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        init_db(engine)
        assert {"users", "api_keys", "jobs", "audit_log", "trusted_models"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            init_db(engines[i])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert schema_revision(engines[0]) == _head()
    finally:
        for e in engines:
            e.dispose()
