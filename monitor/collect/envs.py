"""What of an instance's environment reaches the database: only what the monitor reads.

Users keep tokens in their instances' environment variables (an ``HF_TOKEN`` put there was once
found 11 times in the database file), and the listing sends them all. The collector keeps, of
each instance's environment, only the keys it is handed (``CollectSettings.env_keys``); the
composition root (``monitor.app``) builds that set from what the monitor reads:

* the protection flag: ``actions.protect.env``, by default :data:`PROTECT_ENV` (an instance
  that carries it is never acted upon);
* the keys listed in the configuration's ``instance_env_keys``;
* every ``labels.KEY`` a loaded rule compares (rules read an instance's environment variables as
  its labels), collected once per loaded rule set, so a reload (SIGHUP) follows the new rules.

Nothing else is stored, and a database written before this was scrubbed by migration 0005.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from monitor.actions.settings import PROTECT_ENV

__all__ = ["DEFAULT_ENV_KEYS", "PROTECT_ENV", "env_keys", "keep_envs"]

#: what is kept when nothing else is asked for
DEFAULT_ENV_KEYS: frozenset[str] = frozenset({PROTECT_ENV})


def env_keys(
    protect: str = PROTECT_ENV, configured: Iterable[str] = (), rule_keys: Iterable[str] = ()
) -> frozenset[str]:
    """The keys to keep: the protection flag, the configured ones, the ones rules read."""
    return frozenset({protect, *configured, *rule_keys})


def keep_envs(env: Mapping[str, str], keys: frozenset[str]) -> dict[str, str]:
    """``env`` reduced to ``keys`` (the values of every other key are dropped here, before
    anything is written)."""
    return {k: v for k, v in env.items() if k in keys}
