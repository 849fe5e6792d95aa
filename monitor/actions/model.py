"""The parameter models of the actions a rule may ask for, registered by name.

A rule's ``actions`` list holds one-key mappings, exactly these (shown with their defaults)::

    - stop: {grace: 15m, include_spot: false}
    - start: {}
    - renew: {months: 1, min_util: null, lookback: 7d, approval: required}
    - convert_to_subscription: {months: 1, approval: required}
    - set_auto_renew: {months: 1, approval: required}

Every model forbids unknown keys (a typo is an error naming the key, file and line). There is
no ``delete``. The rule loader imports this module, so the registry is filled before any rule
is read; what an action does lives in the planner (:mod:`monitor.actions.plan`) and the act
step.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from monitor.rules.durations import Duration
from monitor.rules.model import StrictModel
from monitor.rules.registry import actions

Approval = Literal["required", "none"]


class StopParams(StrictModel):
    """Stop a running pay-as-you-go instance after a grace period (announced when planned).

    Only running ``onDemand`` instances with a known hourly price; ``spot`` ones only with
    ``include_spot: true``; never ``monthly`` ones (a stop saves nothing on prepaid time).
    """

    grace: Duration = Field(
        timedelta(minutes=15),
        description="announce, then wait this long; the condition is re-checked before stopping",
    )
    include_spot: bool = Field(False, description="also stop spot instances")


class StartParams(StrictModel):
    """Start a stopped (``exited``) instance. The GPU may not be free (INSUFFICIENT_RESOURCE)."""


class RenewParams(StrictModel):
    """Renew a subscription (monthly) instance for ``months`` months (paid now).

    Refused when the balance after the charge would last less than
    ``actions.min_runway_after_charge``, when the product does not list that month count, and
    when auto-renew is on (or unknown) within 3 days of ``endTime`` (the platform charges then).
    """

    months: int = Field(1, ge=1, le=36, description="months to buy (one the product lists)")
    min_util: float | None = Field(
        None, ge=0, le=100, description="renew only if the average GPU use was at least this %"
    )
    lookback: Duration = Field(timedelta(days=7), description="the window of min_util")
    approval: Approval = Field("required", description="required: wait for novita-monitor approve")


class ConvertParams(StrictModel):
    """Convert a pay-as-you-go instance to a subscription of ``months`` months (paid now).

    Only on a ``subscription_candidate`` alert whose running hours are known.
    """

    months: int = Field(1, ge=1, le=36, description="months to buy (one the product lists)")
    approval: Approval = Field("required", description="required: wait for novita-monitor approve")


class SetAutoRenewParams(StrictModel):
    """Turn a subscription's auto-renew on for ``months`` months (charged ~3 days before
    ``endTime``)."""

    months: int = Field(1, ge=1, le=36, description="months each renewal buys")
    approval: Approval = Field("required", description="required: wait for novita-monitor approve")


actions.register("stop", StopParams)
actions.register("start", StartParams)
actions.register("renew", RenewParams, spends=True)
actions.register("convert_to_subscription", ConvertParams, spends=True)
actions.register("set_auto_renew", SetAutoRenewParams, spends=True)


def action_params(name: str, data: dict[str, Any]) -> BaseModel:
    """An action's parameters as a ledger row stores them (``ActionRecord.params``), validated
    back into its model (raises ``KeyError`` for an unknown action)."""
    spec = actions.get(name)
    if spec is None:
        raise KeyError(name)
    return spec.params.model_validate(data)
