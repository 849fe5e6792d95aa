"""Secrets at rest: of each instance's stored environment, keep only ``NOVITA_MONITOR_PROTECT``.

Until this revision the listing's environment variables were stored verbatim
(``instances.envs``), and environments are where users keep tokens (an ``HF_TOKEN`` put there
was found 11 times in the database file). The code now stores only what the monitor reads
(``monitor.collect.envs``): the protection flag (``actions.protect.env``), the configuration's
``instance_env_keys`` and the ``labels.KEY`` the loaded rules compare.

What this revision keeps, in every instance's ``envs``: the key ``NOVITA_MONITOR_PROTECT``
(the protection flag's default name, written here as a literal: a migration does not change
with the code) and its value. Every other key and value is removed. The other keys the monitor
reads depend on the configuration and the rules, which a migration does not see: the daemon's
first instance listing, before its first evaluation, stores them again, and only them (an
action checks protection on the instance as the API shows it then, in any case). An instance
that no longer exists keeps only the flag.

Removing a value from a row leaves its old bytes in the file (freed space, free pages, the
``-wal``); when there was anything to scrub, this revision asks for the database to be
rewritten once the migration is committed (``monitor.store.scrub``: ``VACUUM`` on SQLite,
``VACUUM FULL instances`` on PostgreSQL). The schema is unchanged.

Downgrade: nothing is restored (the values are gone); the schema needs no change.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: the keys of an environment this revision keeps
KEEP = frozenset({"NOVITA_MONITOR_PROTECT"})
#: ``monitor.store.scrub.DUE``, as a literal
SCRUB_DUE = "scrub_due"

instances = sa.table("instances", sa.column("key", sa.Integer()), sa.column("envs", sa.JSON()))
store_meta = sa.table("store_meta", sa.column("key", sa.String()), sa.column("value", sa.Text()))


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(instances.c.key, instances.c.envs)).all()
    for key, envs in rows:
        if envs is None:
            continue
        kept = {k: v for k, v in envs.items() if k in KEEP} if isinstance(envs, dict) else {}
        if kept != envs:
            bind.execute(sa.update(instances).where(instances.c.key == key).values(envs=kept))
    if rows:  # a database in use: old values may linger in the file
        bind.execute(sa.delete(store_meta).where(store_meta.c.key == SCRUB_DUE))
        bind.execute(sa.insert(store_meta).values(key=SCRUB_DUE, value="0005: instance envs"))


def downgrade() -> None:
    pass
