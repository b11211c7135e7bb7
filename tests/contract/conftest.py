"""The back-ends each contract suite runs on: every test here runs once per back-end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vfe.store import Store
from vfe.store.postgres import PostgresStore
from vfe.store.sqlite import SqliteStore

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """An open, empty store of the back-end under test; closed after the test."""
    opened: Store
    if backend == "sqlite":
        opened = SqliteStore(tmp_path / "meta.db")
    else:
        opened = PostgresStore(request.getfixturevalue("postgres_url"), pool_size=4)
    await opened.open()
    yield opened
    await opened.close()
