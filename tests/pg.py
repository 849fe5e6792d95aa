"""The PostgreSQL server the replica tests need: skipped locally with a visible reason when
``NOVITA_MONITOR_TEST_PG_URL`` is unset, a failure in CI (``CI`` set: ``.ci/run`` starts the
server and sets the URL, so a missing server there is a defect, never a silent skip)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.store.testing import PG_ENV, pg_url, store_url


def require_pg(tmp_path: Path) -> str:
    """A blank PostgreSQL database's URL (every table dropped), or skip (fail in CI)."""
    if pg_url() is None:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set in CI (.ci/run starts PostgreSQL and sets it)")
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server for the replica tests")
    return store_url("postgresql", tmp_path)
