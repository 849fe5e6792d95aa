"""Reading an action's outcome: from the API's answer (is a 2xx a success?) and from the instance
afterwards (did it take effect?). Pure functions, used three ways:

* after a success, to **verify** it (a stop reaches ``exited`` within 5 minutes, a renew moves
  ``endTime`` by the months bought or a renewal bill appears, a convert makes ``billingMode``
  ``monthly``), else an alert;
* for a row ``outcome_unknown`` (a POST answered 5xx or timed out) or found ``executing`` (a
  crash between intent and outcome), to **reconcile** it by reading, never by calling again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from monitor import economics
from monitor.actions.recheck import STOPPING, parse_time, renewal_bill, snapshot
from monitor.novita.models import FixedTermBill, Instance
from monitor.store.models import ActionRecord

#: an instance's own timestamps (whole seconds) against the row's (sub-second) claim time
SLACK = timedelta(seconds=5)
#: a renewed endTime may land this far short of the calendar months (platforms round)
RENEW_SLACK = timedelta(days=1)


def answer_error(body: Mapping[str, Any]) -> str | None:
    """Why a 2xx answer is not a success: it carries ``reason``, ``error`` or a non-zero
    ``code`` (wire-format §7.7). None: a success."""
    reason = body.get("reason")
    if reason:
        return f"the answer carries reason {reason!r}: {body.get('message') or ''}".rstrip(": ")
    error = body.get("error")
    if error:
        return f"the answer carries error {error!r}"
    code = body.get("code")
    if code is None or code == "":
        return None
    try:
        numeric = int(code)
    except (TypeError, ValueError):
        return f"the answer carries code {code!r}"
    return None if numeric == 0 else f"the answer carries code {numeric}"


def _since(row: ActionRecord) -> datetime | None:
    return None if row.started_at is None else row.started_at - SLACK


def enabled_of(row: ActionRecord) -> bool:
    return bool((row.params or {}).get("enabled", True))


def carried_out(row: ActionRecord, inst: Instance, bills: Iterable[FixedTermBill] = ()) -> bool:
    """The instance shows that the action took effect (or is under way): what reconciliation
    asks of a row whose call may or may not have been carried out."""
    since = _since(row)
    if row.action == "stop":
        stopped = inst.last_stopped_at
        return inst.status in STOPPING or (
            stopped is not None and since is not None and stopped >= since
        )
    if row.action == "start":
        started = inst.last_started_at
        return inst.status in ("toStart", "starting") or (
            started is not None and since is not None and started >= since
        )
    return completed(row, inst, bills)


def completed(row: ActionRecord, inst: Instance, bills: Iterable[FixedTermBill] = ()) -> bool:
    """The action's end state is reached: what verification waits for."""
    since = _since(row)
    if row.action == "stop":
        stopped = inst.last_stopped_at
        return inst.status == "exited" or (
            stopped is not None and since is not None and stopped >= since
        )
    if row.action == "start":
        started = inst.last_started_at
        return inst.status == "running" and (
            started is not None and since is not None and started >= since
        )
    if row.action == "renew":
        return renewed(row, inst, bills)
    if row.action == "convert_to_subscription":
        return inst.billing_mode == "monthly"
    if row.action == "set_auto_renew":
        return inst.auto_renew is enabled_of(row)
    return False


def renewed(row: ActionRecord, inst: Instance, bills: Iterable[FixedTermBill]) -> bool:
    """``endTime`` advanced by the months bought from the planned one, or a renewal bill for
    the period after it exists."""
    planned = parse_time(snapshot(row).get("end_time"))
    if planned is None:
        return False
    months = (row.params or {}).get("months", 1)
    months = months if isinstance(months, int) and months > 0 else 1
    target = economics.months_after(planned, months)
    if inst.end_time is not None and inst.end_time >= target - RENEW_SLACK:
        return True
    return renewal_bill(bills, planned) is not None


def expectation(row: ActionRecord) -> str:
    """What verification waited for, in words (for the alert when it does not happen)."""
    return {
        "stop": "the instance to reach exited",
        "start": "the instance to be running again",
        "renew": "endTime to advance by the months bought (or a renewal bill)",
        "convert_to_subscription": "billingMode to become monthly",
        "set_auto_renew": "autoRenew to change",
    }.get(row.action, "the action to take effect")


def observed(inst: Instance) -> dict[str, Any]:
    """What was read of the instance (kept in the ledger's answer)."""
    return {
        "status": inst.status,
        "billing_mode": inst.billing_mode,
        "end_time": inst.end_time.isoformat() if inst.end_time else None,
        "last_started_at": inst.last_started_at.isoformat() if inst.last_started_at else None,
        "last_stopped_at": inst.last_stopped_at.isoformat() if inst.last_stopped_at else None,
        "auto_renew": inst.auto_renew,
    }
