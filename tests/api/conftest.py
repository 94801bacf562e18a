"""The HTTP service over a real store (SQLite and PostgreSQL), called in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from giftflow.adapters.sql.store import SqlStore
from giftflow.api.app import Services, create_app
from giftflow.bootstrap import build_services
from giftflow.settings import Settings


@pytest.fixture
def services(store: SqlStore, tmp_path: Path) -> Services:
    """The service's parts in demo mode over the test's store."""
    return build_services(Settings(data_dir=tmp_path, mode="demo"), store)


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """An HTTP client of the application, in process."""
    with TestClient(app=create_app(services)) as running:
        yield running


@pytest.fixture
def admin(services: Services) -> dict[str, str]:
    """Headers with an admin key."""
    return {"Authorization": f"Bearer {services.access.create_key('admin')}"}
