"""One daemon per SQLite database file: a lock file next to it (``monitor.db.lock``).

Two daemons on one file would both collect (API work doubled) and both notify (alert changes
told twice). The daemon holds an exclusive ``flock`` on ``<database>.lock`` for its whole life;
a second one (or ``once`` while a daemon runs) finds it taken and refuses, naming the holder's
pid (written into the file). The kernel releases the lock when the holder's process ends, a
SIGKILL included: a stale lock file never blocks a restart.

    lock = DatabaseLock.for_url("sqlite:////var/lib/novita-monitor/monitor.db")
    lock.acquire("run")        # raises DatabaseInUse when another process holds it
    ...
    lock.release()

PostgreSQL has no such lock: replicas share the database, one leads (``monitor.leader``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from monitor.errors import RuntimeFailure


class DatabaseInUse(RuntimeFailure):
    """Another novita-monitor process holds the database file's lock."""


class DatabaseLock:
    """The exclusive lock on ``<database>.lock`` (see the module docstring)."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = Path(f"{database}.lock")
        self._fd: int | None = None

    @classmethod
    def for_url(cls, url: str) -> DatabaseLock | None:
        """The lock of a SQLite file URL; None for PostgreSQL and in-memory databases."""
        parsed = make_url(url)
        database = parsed.database
        if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return None
        if database.startswith("file:"):
            return None
        return cls(Path(database).expanduser())

    def acquire(self, what: str) -> None:
        """Take the lock for ``what`` (``run``, ``once``), or raise :class:`DatabaseInUse`."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "?"
            os.close(fd)
            raise DatabaseInUse(
                f"database {self.database} is in use by another novita-monitor ({holder}; "
                f"lock {self.path}): one daemon per SQLite database; stop it first"
                + (", or pass --force" if what == "once" else "")
                + " (several replicas need PostgreSQL: see README, PostgreSQL and replicas)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{what}, pid {os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # the lock goes with the descriptor; the file stays (no unlink race)

    def __enter__(self) -> DatabaseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
