"""The accounts a simulator gateway serves (:mod:`monitor.sim.gateway`): keys, fleet sizes,
seeds. No web stack here: the benchmark reads the keys without loading the simulator."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimAccount", "account_keys", "plan_accounts", "split_instances"]


@dataclass(frozen=True)
class SimAccount:
    """One simulated account: its API key, fleet size and seed."""

    key: str
    instances: int
    seed: int


def account_keys(prefix: str, count: int) -> list[str]:
    """The keys of ``count`` accounts served with ``--accounts``: ``PREFIX-1`` .. ``PREFIX-K``."""
    return [f"{prefix}-{i + 1}" for i in range(count)]


def split_instances(total: int, accounts: int) -> list[int]:
    """``total`` instances over ``accounts`` fleets, as evenly as possible (first ones larger)."""
    if accounts < 1:
        raise ValueError("accounts must be at least 1")
    if total < 0:
        raise ValueError("instances must be >= 0")
    base, extra = divmod(total, accounts)
    return [base + (1 if i < extra else 0) for i in range(accounts)]


def plan_accounts(prefix: str, instances: int, accounts: int, seed: int) -> list[SimAccount]:
    """``instances`` spread over ``accounts`` accounts keyed ``PREFIX-i``, seeded ``seed + i``."""
    sizes = split_instances(instances, accounts)
    keys = account_keys(prefix, accounts)
    return [SimAccount(k, n, seed + i) for i, (k, n) in enumerate(zip(keys, sizes, strict=True))]
