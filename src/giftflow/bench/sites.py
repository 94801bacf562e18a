"""Fresh, throwaway databases for the benchmarks: SQLite files or PostgreSQL schemas."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from giftflow.bench.replay import (
    Replay,
    Timing,
    replay_postgres,
    replay_sqlite,
)
from giftflow.bench.resources import ServerProbe, postgres_probe

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 5


class SiteError(Exception):
    """A database for the benchmark could not be reached or created."""


@dataclass(frozen=True, slots=True)
class Database:
    """One fresh database; :meth:`drop` removes it."""

    url: str
    drop: Callable[[], None]


class SqliteSite:
    """SQLite files in a temporary directory under the data directory."""

    dialect = "sqlite"
    label = "SQLite"
    server: ServerProbe = None

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=data_dir)).resolve()
        self._count = 0

    def describe(self) -> str:
        """Where the databases are."""
        return f"files in {self.directory}"

    def fresh(self) -> Database:
        """A new, empty database file."""
        self._count += 1
        path = self.directory / f"db-{self._count:03d}.sqlite3"

        def drop() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        return Database(f"sqlite:///{path}", drop)

    def replay(self, database: Database, settings: dict[str, str], replay: Replay) -> Timing:
        """Replay a recording on ``database`` with the bare driver."""
        return replay_sqlite(Path(database.url.removeprefix("sqlite:///")), settings, replay)

    def close(self) -> None:
        """Remove the temporary directory."""
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresSite:
    """Fresh schemas ``bench_<random>`` on one PostgreSQL database, reached through search_path."""

    dialect = "postgresql"
    label = "PostgreSQL"

    def __init__(self, url: str) -> None:
        self.base_url = url
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
                row = conn.execute("SHOW server_version").fetchone()
        except psycopg.Error as error:
            raise SiteError(f"PostgreSQL is not reachable at {display_url(url)}: "
                            f"{str(error).strip()}") from error
        self.version = "" if row is None else str(row[0])
        self.server = postgres_probe(url)
        self._schemas: set[str] = set()

    def describe(self) -> str:
        """Which server, and whether its CPU time is measured."""
        cpu = ("its CPU and run-queue time read from /proc" if self.server
               else "not local: server CPU not measured")
        return f"PostgreSQL {self.version} at {display_url(self.base_url)} ({cpu})"

    def fresh(self) -> Database:
        """A new, empty schema."""
        schema = f"bench_{secrets.token_hex(6)}"
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self._schemas.add(schema)
        separator = "&" if "?" in self.base_url else "?"

        def drop() -> None:
            with psycopg.connect(self.base_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            self._schemas.discard(schema)

        return Database(f"{self.base_url}{separator}options=-csearch_path%3D{schema}", drop)

    def replay(self, database: Database, settings: dict[str, str], replay: Replay) -> Timing:
        """Replay a recording on ``database`` with the bare driver."""
        return replay_postgres(database.url, settings, replay, self.server)

    def close(self) -> None:
        """Drop the schemas that are left (after a failure)."""
        for schema in list(self._schemas):
            try:
                with psycopg.connect(self.base_url, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            except psycopg.Error:
                continue  # the server went away; nothing more to clean here
            self._schemas.discard(schema)


Site = SqliteSite | PostgresSite


def display_url(url: str) -> str:
    """``user@host:port/dbname`` of a PostgreSQL URL, without a password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"
