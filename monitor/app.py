"""The composition root: configuration -> clients, store, collectors, rules, notifier.

The only place that reads the environment and wires concrete implementations together. Below it,
everything takes what it needs (including the clock) as arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from monitor.clock import Clock, SystemClock
from monitor.collect.collectors import DEFAULT_INTERVALS, AccountContext, CollectSettings
from monitor.collect.runner import RunReport, run_all_accounts
from monitor.config import Config, find_config_path, resolve_api_key
from monitor.errors import ConfigError
from monitor.logs import register_secret
from monitor.novita.client import NovitaClient
from monitor.store.db import Store, open_store

log = structlog.get_logger("monitor.app")


def load_config(explicit: str | None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    path = find_config_path(explicit, env, Path.cwd())
    if path is None:
        raise ConfigError(
            "no configuration file found: pass --config FILE, set NOVITA_MONITOR_CONFIG, or "
            "create ./novita-monitor.yaml (see README, Configuration)"
        )
    return Config.load(path, env=env)


def collect_settings(config: Config, rules_window_s: int = 0) -> CollectSettings:
    m = config.metrics
    return CollectSettings(
        metrics_interval_s=int(m.interval_s),
        metrics_lag_s=int(m.lag_s),
        backfill_min_s=int(m.backfill_min_s),
        backfill_max_s=int(m.backfill_max_s),
        rules_window_s=rules_window_s,
        retention_raw_days=config.retention.raw_days,
        retention_rollup_days=config.retention.rollup_days,
    )


def intervals(config: Config) -> dict[str, int]:
    """Collector name -> interval in seconds, from the config's schedules over the defaults."""
    configured = config.schedules.model_dump()
    return {name: int(configured.get(name) or dflt) for name, dflt in DEFAULT_INTERVALS.items()}


@dataclass
class App:
    """A running configuration: the store, one client per account, the clock."""

    config: Config
    clock: Clock
    store: Store
    contexts: list[AccountContext] = field(default_factory=list)
    transport_factory: Any = None  # tests: account name -> httpx transport

    @classmethod
    def open(
        cls,
        config: Config,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        transport_factory: Any = None,
        rules_window_s: int = 0,
    ) -> App:
        env = os.environ if env is None else env
        store = open_store(config.database)
        app = cls(config=config, clock=clock or SystemClock(), store=store)
        app.transport_factory = transport_factory
        settings = collect_settings(config, rules_window_s)
        for account in config.accounts:
            key = resolve_api_key(account, env)
            secret = key.get_secret_value()
            register_secret(secret)
            transport = transport_factory(account.name) if transport_factory else None
            client = NovitaClient(
                secret,
                account.base_url,
                transport=transport,
                max_concurrency=account.max_concurrency,
            )
            store.ensure_account(account.name)
            app.contexts.append(AccountContext(account.name, client, store, settings))
        return app

    def context(self, account: str | None) -> AccountContext:
        if account is None:
            if len(self.contexts) != 1:
                names = ", ".join(c.account for c in self.contexts)
                raise ConfigError(f"several accounts are configured ({names}): pass --account")
            return self.contexts[0]
        for ctx in self.contexts:
            if ctx.account == account:
                return ctx
        raise ConfigError(f"no account named {account!r} in {self.config.path}")

    async def collect(self, names: list[str] | None = None) -> list[RunReport]:
        return await run_all_accounts(self.contexts, self.clock, names)

    async def aclose(self) -> None:
        for ctx in self.contexts:
            await ctx.client.aclose()
        self.store.close()
