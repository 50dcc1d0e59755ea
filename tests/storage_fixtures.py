"""Fixtures for the storage tests; each test module imports the ones it uses.

Every storage test runs against SQLite, and also against PostgreSQL when
``MANYHEADS_TEST_POSTGRES_URL`` names a server (``.ci/run`` starts one). Each test gets a
database of its own: a file in ``tmp_path``, or a PostgreSQL database created for it and
dropped afterwards, so tests never see each other's rows or schema revisions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from manyheads.storage import Store

POSTGRES_URL = os.environ.get("MANYHEADS_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]
WORKERS = Path(__file__).with_name("storage_workers.py")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database on each backend under test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'manyheads.db'}"
        return
    assert POSTGRES_URL is not None
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"manyheads_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as opened:
        yield opened


def run_worker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``storage_workers.py`` in a fresh interpreter; fail with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, str(WORKERS), *args], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"worker {args[0]} failed:\n{done.stderr}"
    return done


def start_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKERS), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
