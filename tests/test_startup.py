"""Start-up: private database files, and every failure one line with the right exit status.

Exit 2 for what the user must fix (a folder that cannot be created, a file that is not a
database, a schema newer than the code, a refused login), exit 1 for what may pass on a retry
(the server down). Every command opens the database the same way, so each says the same line.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from monitor.cli import cli
from monitor.store.db import DatabaseUnavailable, DatabaseUnusable, open_store
from monitor.store.testing import pg_url
from tests.helpers import ENV, write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most servers run with (0022): what the daemon creates must not rely on a
    stricter one."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# file modes


def test_a_new_database_its_journal_files_and_its_folders_are_private(
    tmp_path: Path, usual_umask: None
) -> None:
    (tmp_path / "srv").mkdir(mode=0o755)  # a folder that exists is the user's: left as it is
    db = tmp_path / "srv" / "state" / "novita" / "monitor.db"

    store = open_store(f"sqlite:///{db}")
    try:
        store.ensure_account("main")  # a write: the -wal and -shm files exist while open
        files = {p.name: mode(p) for p in db.parent.iterdir()}
    finally:
        store.close()

    assert files == {"monitor.db": 0o600, "monitor.db-wal": 0o600, "monitor.db-shm": 0o600}
    assert mode(tmp_path / "srv" / "state") == 0o700
    assert mode(tmp_path / "srv" / "state" / "novita") == 0o700
    assert mode(tmp_path / "srv") == 0o755


def test_an_existing_database_readable_by_others_gets_a_warning(
    tmp_path: Path, usual_umask: None
) -> None:
    db = tmp_path / "monitor.db"
    open_store(f"sqlite:///{db}").close()
    with capture_logs() as private:
        open_store(f"sqlite:///{db}").close()
    db.chmod(0o644)

    with capture_logs() as loose:
        open_store(f"sqlite:///{db}").close()

    assert not [e for e in private if e["log_level"] == "warning"]
    (warning,) = [e for e in loose if e["log_level"] == "warning"]
    assert "readable by other users" in warning["event"] and "chmod 600" in warning["event"]
    assert warning["path"] == str(db) and warning["modes"] == "monitor.db 0644"
    assert mode(db) == 0o644  # a warning, not a change behind the user's back


# ---------------------------------------------------------------------------------------------
# one-line errors


def _not_a_database(tmp_path: Path) -> str:
    path = tmp_path / "random.db"
    path.write_bytes(bytes(range(256)) * 20)
    return f"sqlite:///{path}"


def _newer_schema(tmp_path: Path) -> str:
    path = tmp_path / "newer.db"
    open_store(f"sqlite:///{path}").close()
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE alembic_version SET version_num = 'f00dcafe9999'")
    con.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    "make_url_, error, words",
    [
        (
            lambda _tmp: "sqlite:////proc/nope/monitor.db",
            DatabaseUnusable,
            "cannot create /proc/nope: No such file or directory",
        ),
        (_not_a_database, DatabaseUnusable, "file is not a database"),
        (
            _newer_schema,
            DatabaseUnusable,
            "its schema (revision f00dcafe9999) is newer than this novita-monitor knows",
        ),
        (
            lambda _tmp: f"postgresql+psycopg://nmtest@127.0.0.1:{free_port()}/monitor",
            DatabaseUnavailable,
            "Connection refused",
        ),
    ],
    ids=["folder-cannot-be-created", "not-a-database", "newer-schema", "server-down"],
)
def test_open_failures_are_one_line_with_their_exit_status(
    tmp_path: Path, make_url_: object, error: type[Exception], words: str
) -> None:
    url = make_url_(tmp_path)  # type: ignore[operator]

    with pytest.raises(error) as info:
        open_store(url)

    message = str(info.value)
    assert "\n" not in message and words in message
    assert message.startswith(f"database {url}: ")
    assert info.value.exit_code == (2 if error is DatabaseUnusable else 1)  # type: ignore[attr-defined]


@pytest.mark.postgres
@pytest.mark.skipif(pg_url() is None, reason="NOVITA_MONITOR_TEST_PG_URL not set")
def test_a_database_the_server_does_not_have_is_for_the_user_to_fix() -> None:
    url = make_url(pg_url() or "").set(database="nm_no_such_database", password=None)

    with pytest.raises(DatabaseUnusable) as info:
        open_store(url.render_as_string(hide_password=False))

    assert 'database "nm_no_such_database" does not exist' in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "args",
    [["status"], ["alerts"], ["silence", "list"], ["watch-task", "task-1"]],
    ids=lambda a: " ".join(a),
)
def test_every_command_says_the_same_line(tmp_path: Path, args: list[str]) -> None:
    """``status`` showed a traceback where ``alerts`` printed a line."""
    junk = tmp_path / "monitor.db"
    junk.write_bytes(b"\x00not sqlite\xff" * 500)
    junk.chmod(0o600)  # no warning about its mode: the error line alone
    config = write_config(tmp_path)

    result = CliRunner().invoke(cli, [*args, "--config", str(config)], env=ENV)

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert (
        result.stderr
        == f"error: database sqlite:///{tmp_path}/monitor.db: file is not a database\n"
    )


def test_run_with_a_folder_it_cannot_create_exits_2_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts: [{name: main, api_key_env: NOVITA_API_KEY}]\n"
        "database: sqlite:////proc/nope/monitor.db\n"
    )

    done = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=60,
    )

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: database sqlite:////proc/nope/monitor.db: cannot create /proc/nope: "
        "No such file or directory (expected a path the daemon's user can create and write)"
    ]


def test_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(cli, ["simulator", "--port", str(port)])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use "
        "(stop what uses it, or pick another port)\n"
    )


def test_a_missing_key_variable_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = CliRunner().invoke(cli, ["once", "--config", str(config)], env={"NOVITA_API_KEY": ""})

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {config}:2: account 'main': environment variable NOVITA_API_KEY is not set "
        "or empty (api_key_env)\n"
    )
