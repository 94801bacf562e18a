"""Shared fixtures: every store-touching test runs on SQLite and on the real PostgreSQL server.

PostgreSQL tests use a fresh schema each. When ``CI=true`` a missing server fails the test
instead of skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from giftflow.adapters.sql.store import SqlStore
from giftflow.ledger import Ledger

POSTGRES_URL = os.environ.get("GIFTFLOW_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI") == "true"

settings.register_profile(
    "ci", max_examples=25, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile(
    "dev", max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when the PostgreSQL server cannot be reached."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        message = f"PostgreSQL is not reachable at {POSTGRES_URL}: {error}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


class PostgresSchema:
    """A throwaway schema on the real server, reached through ``search_path`` in the URL."""

    def __init__(self) -> None:
        require_postgres()
        self.name = f"gft_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        separator = "&" if "?" in POSTGRES_URL else "?"
        self.url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        """Remove the schema and everything in it."""
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def make_store_url(kind: str, directory: Path) -> tuple[str, PostgresSchema | None]:
    """A fresh database URL of ``kind`` (``sqlite`` or ``postgresql``)."""
    if kind == "sqlite":
        return f"sqlite:///{directory / f'{uuid.uuid4().hex[:8]}.sqlite3'}", None
    schema = PostgresSchema()
    return schema.url, schema


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each store."""
    url, schema = make_store_url(request.param, tmp_path)
    try:
        yield url
    finally:
        if schema is not None:
            schema.drop()


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """A migrated store on each dialect."""
    opened = SqlStore(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def ledger(store: SqlStore) -> Ledger:
    """A ledger service over the store."""
    return Ledger(store)
