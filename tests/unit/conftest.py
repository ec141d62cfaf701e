"""Fixtures shared by the unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from reprlab.server.db import init_db, make_engine, session_factory

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_unreachable() -> str | None:
    try:
        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3)
    except psycopg.Error as exc:
        return f"PostgreSQL at 127.0.0.1:5432 (database test) is unreachable: {exc}"
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp, or a fresh PostgreSQL schema dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'reprlab.db'}"
        return
    reason = _pg_unreachable()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture()
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A fresh, empty job database on SQLite or PostgreSQL (see `database_url`)."""
    engine = make_engine(database_url)
    try:
        init_db(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[torch.nn.Module, Any]:
    """The tiny random Llama and its tokenizer (left padding), loaded once per test module."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tokenizer
