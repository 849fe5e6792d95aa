"""The commands of remedial actions: ``plan``, ``actions``, ``approve``, ``reject``, ``undo``.

They work on the database the daemon writes (alert states, the action ledger); none calls the
Novita API: ``approve`` and ``undo`` only record a row the act step executes. The clock is
``monitor.cli.common.clock`` (``obj={"clock": ManualClock(...)}`` in tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import click

from monitor.cli.common import (
    check_clock_url,
    clock,
    config_option,
    handle_errors,
    iso,
    load,
    open_database,
    setup_logs,
    usd,
    when,
)
from monitor.errors import RuntimeFailure, UserError

#: how far back ``actions`` lists finished rows without ``--all``
RECENT = timedelta(days=7)


def _short(stamp: str | None, now: datetime) -> str:
    if stamp is None:
        return "never"
    return when(datetime.fromisoformat(stamp.replace("Z", "+00:00")), now)


def _who(name: str | None, iid: str) -> str:
    return f"{name} ({iid})" if name and name != iid else iid


# ---------------------------------------------------------------------------------------------
# plan

#: the collectors whose last success ``plan`` shows (the data its decisions come from)
_PLAN_DATA = ("instances", "metrics", "balance", "products")


def plan_rows(config: Any, store: Any, now: datetime) -> dict[str, Any]:
    """One evaluation over the stored data as a dry run: what the rules would do now."""
    from monitor.actions.plan import plan_actions
    from monitor.app import intervals, load_ruleset
    from monitor.evaluate import to_silence, to_state
    from monitor.facts import StoreFacts
    from monitor.rules import evaluate

    ruleset = load_ruleset(config)
    accounts = [a.name for a in config.accounts]
    facts = StoreFacts(store, accounts, intervals(config), config.stale_after, now=now)
    states = {r.fingerprint: to_state(r) for r in store.load_alerts()}
    silences = [to_silence(s) for s in store.list_silences(now)]
    result = evaluate(ruleset, facts, now, states, silences)
    rows, _ = plan_actions(
        result,
        facts,
        now,
        ruleset=ruleset,
        settings=config.actions,
        silences=silences,
        dry_run=True,
        every_firing=True,
    )
    held = {a: store.held_intents(a) for a in accounts}
    out = []
    for row in rows:
        refused = row.state == "refused"
        out.append(
            {
                "account": row.account,
                "rule": row.rule,
                "action": row.action,
                "instance_id": row.instance_id,
                "instance_name": row.instance_name,
                "would": "refuse" if refused else row.action,
                "reason": row.reason.removeprefix("dry run, would: "),
                "due_at": iso(row.due_at),
                "expires_at": iso(row.expires_at),
                "saving_per_hour_usd": None
                if row.saving_per_hour_usd is None
                else float(row.saving_per_hour_usd),
                "params": row.params,
                "facts": row.facts,
                "intent_key": row.intent_key,
                "in_ledger": row.intent_key in held.get(row.account, set()),
            }
        )
    with_actions = [r.name for r in ruleset if r.actions]
    as_of = {a: {name: iso(store.last_success(a, name)) for name in _PLAN_DATA} for a in accounts}
    return {
        "generated_at": iso(now),
        "rules_with_actions": with_actions,
        "data_as_of": as_of,
        "stale": result.inhibited_accounts,
        "dry_run": bool(config.actions.dry_run),
        "enabled": bool(config.actions.enabled),
        "plan": out,
    }


def _followed_now(url: str) -> datetime:
    """The time of the simulator whose clock a daemon follows (``run --clock URL``)."""
    from monitor.clock import read_clock

    check_clock_url(url)
    try:
        return read_clock(url)[0]
    except ValueError as exc:
        raise RuntimeFailure(f"--clock: {exc}") from None


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--clock",
    "clock_url",
    metavar="URL",
    default=None,
    help="FOR TESTS AND DEMOS ONLY: 'now' is a local simulator's clock "
    "(http://127.0.0.1:PORT/_sim/clock), as for a daemon run with `run --clock URL`.",
)
@handle_errors
def plan(config_path: str | None, as_json: bool, clock_url: str | None = None) -> None:
    """What the rules would do now: one evaluation over the stored data, as a dry run.

    It does not collect (run it after `once`, or beside the daemon) and records nothing."""
    config = load(config_path)
    setup_logs(config)  # logs to stderr: stdout stays the output (and parseable JSON)
    now = clock().now() if clock_url is None else _followed_now(clock_url)
    with open_database(config) as store:
        data = plan_rows(config, store, now)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["rules_with_actions"]:
        click.echo(
            "no rule asks for actions (the shipped rules ask for none; "
            "see the README, 'Automatic idle shutdown')"
        )
        return
    for account, seen in sorted(data["data_as_of"].items()):
        parts = [f"{name} {_short(when, now)}" for name, when in seen.items()]
        click.echo(f"account {account}: data as of {', '.join(parts)}")
    for account, stale in sorted(data["stale"].items()):
        click.echo(f"account {account}: data stale ({', '.join(stale)}): its rules are on hold")
    if not data["plan"]:
        click.echo("nothing to do: no alert of a rule with actions fires now")
    for r in data["plan"]:
        who = _who(r["instance_name"], r["instance_id"])
        head = "REFUSE" if r["would"] == "refuse" else r["action"].upper()
        due = ""
        if r["due_at"] and r["would"] != "refuse":
            due = f" at {when(datetime.fromisoformat(r['due_at'].replace('Z', '+00:00')), now)}"
        ledger = "  [already in the ledger]" if r["in_ledger"] else ""
        click.echo(f"{head:<8} {r['action']} {who}{due}  rule {r['rule']}{ledger}")
        click.echo(f"    why: {r['reason']}")
        snap = r["facts"].get("instance", {})
        click.echo(
            "    from: status {status}, billing {billing_mode}, last started {last_started_at}, "
            "{cost}/h".format(
                status=snap.get("status"),
                billing_mode=snap.get("billing_mode"),
                last_started_at=snap.get("last_started_at") or "-",
                cost=usd(snap.get("hourly_cost_usd")),
            )
        )
    if data["plan"]:
        mode = "a dry run" if data["dry_run"] else "live"
        mode = "off (kill switch)" if not data["enabled"] else mode
        click.echo(f"{len(data['plan'])} in the plan; actions are {mode} in the configuration")


# ---------------------------------------------------------------------------------------------
# actions (the ledger)


def ledger_rows(
    store: Any, accounts: list[str], now: datetime, include_all: bool = False
) -> dict[str, Any]:
    """The ledger, newest first (open rows and those of the last 7 days, every row with
    ``include_all``), and the savings per rule and in total (from every row)."""
    from monitor.actions.savings import row_saving, savings_by_rule, savings_json
    from monitor.store.ledger import OPEN_STATES

    everything = [row for a in accounts for row in store.actions(a)]
    everything.sort(key=lambda r: (r.planned_at, r.id or 0), reverse=True)
    per_rule, total = savings_by_rule(everything, now)
    shown = [
        r
        for r in everything
        if include_all or r.state in OPEN_STATES or now - r.planned_at <= RECENT
    ]
    rows = []
    for r in shown:
        saved = row_saving(r, now)
        rows.append(
            {
                "id": r.id,
                "account": r.account,
                "rule": r.rule,
                "action": r.action,
                "instance_id": r.instance_id,
                "instance_name": r.instance_name,
                "state": r.state,
                "dry_run": r.dry_run,
                "reason": r.reason,
                "params": r.params,
                "facts": r.facts,
                "answer": r.answer,
                "planned_at": iso(r.planned_at),
                "due_at": iso(r.due_at),
                "expires_at": iso(r.expires_at),
                "decided_at": iso(r.decided_at),
                "started_at": iso(r.started_at),
                "finished_at": iso(r.finished_at),
                "attempts": r.attempts,
                "saving_per_hour_usd": None
                if r.saving_per_hour_usd is None
                else float(r.saving_per_hour_usd),
                "saved_usd": None if saved is None else float(saved.realized_usd),
            }
        )
    return {
        "generated_at": iso(now),
        "actions": rows,
        "savings": {
            "rules": {rule: savings_json(s) for rule, s in per_rule.items()},
            "total": savings_json(total),
        },
    }


@click.command("actions")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "include_all", is_flag=True, help="Every row, not only recent ones.")
@handle_errors
def actions_cmd(config_path: str | None, as_json: bool, include_all: bool) -> None:
    """The action ledger, newest first: what was (or would be) done, why, and what it saved."""
    config = load(config_path)
    setup_logs(config)  # logs to stderr: stdout stays the output (and parseable JSON)
    now = clock().now()
    with open_database(config) as store:
        data = ledger_rows(store, [a.name for a in config.accounts], now, include_all)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["actions"]:
        click.echo("no actions" + ("" if include_all else " (open, or planned in the last 7 days)"))
    for r in data["actions"]:
        planned = datetime.fromisoformat(r["planned_at"].replace("Z", "+00:00"))
        saving = ""
        if r["saving_per_hour_usd"] is not None:
            saving = f"  saves {usd(r['saving_per_hour_usd'])}/h"
            if r["saved_usd"] is not None:
                saving += f", saved {usd(r['saved_usd'])}"
        dry = " (dry run)" if r["dry_run"] and r["state"] != "dry_run" else ""
        click.echo(
            f"#{r['id']:<5} {r['state']:<17} {r['action']:<10} "
            f"{_who(r['instance_name'], r['instance_id'])}  rule {r['rule']}{dry}  "
            f"planned {when(planned, now)}{saving}"
        )
        click.echo(f"    why: {r['reason']}")
        if r["due_at"] and r["state"] in ("announced", "planned", "approved"):
            due = datetime.fromisoformat(r["due_at"].replace("Z", "+00:00"))
            click.echo(f"    due: {when(due, now)}")
        if r["expires_at"] and r["state"] == "awaiting_approval":
            ends = datetime.fromisoformat(r["expires_at"].replace("Z", "+00:00"))
            click.echo(
                f"    approve: novita-monitor approve {r['id']} (or reject {r['id']}); "
                f"expires {when(ends, now)}"
            )
        if r["answer"]:
            click.echo(f"    answer: {json.dumps(r['answer'], sort_keys=True)}")
    savings = data["savings"]
    for rule, s in savings["rules"].items():
        click.echo(
            f"savings {rule}: {usd(s['expected_usd_per_hour'])}/h now, "
            f"{usd(s['realized_usd'])} realized"
        )
    total = savings["total"]
    click.echo(
        f"savings total: {usd(total['expected_usd_per_hour'])}/h now, "
        f"{usd(total['realized_usd'])} realized (gross: compute not paid)"
    )


# ---------------------------------------------------------------------------------------------
# approve / reject / undo


def _number(text: str) -> int:
    try:
        return int(text.lstrip("#"))
    except ValueError:
        raise UserError(
            f"an action id is a number (see novita-monitor actions), got {text!r}"
        ) from None


def _row(store: Any, config: Any, ident: int) -> Any:
    row = store.action(ident)
    if row is None or row.account not in {a.name for a in config.accounts}:
        raise UserError(f"no action #{ident} (see novita-monitor actions --all)")
    return row


@contextmanager
def _ledger_row(
    config_path: str | None, action_id: str
) -> Iterator[tuple[int, Any, Any, datetime]]:
    """What approve, reject and undo start from: ``(id, store, row, now)``, the store open
    for the block (logs to stderr: stdout stays the output)."""
    ident = _number(action_id)
    config = load(config_path)
    setup_logs(config)
    now = clock().now()
    with open_database(config) as store:
        yield ident, store, _row(store, config, ident), now


def _moved(ident: int) -> RuntimeFailure:
    return RuntimeFailure(f"action #{ident} changed meanwhile (the daemon acted on it); try again")


@click.command()
@config_option
@click.argument("action_id", metavar="ID")
@handle_errors
def approve(config_path: str | None, action_id: str) -> None:
    """Approve an action awaiting approval (a renewal, a conversion): the act step runs it."""
    with _ledger_row(config_path, action_id) as (ident, store, row, now):
        if row.state != "awaiting_approval":
            raise UserError(f"action #{ident} is {row.state}, not awaiting approval")
        if row.expires_at is not None and row.expires_at <= now:
            store.transition(row, "expired", now, reason=f"{row.reason} | approval expired")
            raise UserError(
                f"action #{ident} expired at {when(row.expires_at, now)} "
                "(the rule plans it again when its alert next notifies)"
            )
        done = store.transition(row, "approved", now, decided_at=now, due_at=now)
    if done is None:
        raise _moved(ident)
    click.echo(
        f"action #{ident} approved: {row.action} {_who(row.instance_name, row.instance_id)} "
        "runs at the next act step"
    )


@click.command()
@config_option
@click.argument("action_id", metavar="ID")
@handle_errors
def reject(config_path: str | None, action_id: str) -> None:
    """Reject a planned, announced or awaiting action: it never runs."""
    from monitor.store.ledger import OPEN_STATES

    with _ledger_row(config_path, action_id) as (ident, store, row, now):
        if row.state not in OPEN_STATES:
            raise UserError(
                f"action #{ident} is {row.state}: only a planned, announced, awaiting or "
                "approved action can be rejected"
            )
        done = store.transition(
            row, "rejected", now, decided_at=now, reason=f"{row.reason} | rejected by the user"
        )
    if done is None:
        raise _moved(ident)
    click.echo(f"action #{ident} rejected: {row.action} {_who(row.instance_name, row.instance_id)}")


#: why an action that acted cannot be undone
_FINAL = {
    "renew": "a renewal is paid: it cannot be undone",
    "convert_to_subscription": "a conversion to a subscription is paid: it cannot be undone",
    "set_auto_renew": "the monitor does not turn auto-renew off: change it in the Novita console",
    "start": "the monitor does not undo a start (it stops only through a rule)",
}


@click.command()
@config_option
@click.argument("action_id", metavar="ID")
@handle_errors
def undo(config_path: str | None, action_id: str) -> None:
    """Undo a stop by starting the instance again (the GPU may not be free). Renewals and
    conversions are paid and cannot be undone."""
    from monitor.store.ledger import OPEN_STATES
    from monitor.store.models import ActionRecord

    with _ledger_row(config_path, action_id) as (ident, store, row, now):
        if row.state in OPEN_STATES:
            raise UserError(
                f"action #{ident} is {row.state}, not done yet: reject it instead "
                f"(novita-monitor reject {ident})"
            )
        if row.state == "undone":
            raise UserError(f"action #{ident} is undone already: {row.reason}")
        if row.state not in ("succeeded", "outcome_unknown"):
            raise UserError(f"action #{ident} is {row.state}: nothing was done, nothing to undo")
        if row.action != "stop":
            raise UserError(
                f"action #{ident} ({row.action}) cannot be undone: {_FINAL[row.action]}"
            )
        current = store.instance(row.account, row.instance_id)
        if current is not None and current.status == "running":
            raise UserError(f"{_who(row.instance_name, row.instance_id)} is running again already")
        key = f"{row.rule}|start|{row.instance_id}|undo-{ident}"
        start = ActionRecord(
            account=row.account,
            rule=row.rule,
            action="start",
            instance_id=row.instance_id,
            instance_name=row.instance_name,
            params={},
            facts={"undo_of": ident, "instance": dict(row.facts.get("instance") or {})},
            intent_key=key,
            idempotency_key=key,
            dry_run=False,
            state="planned",
            reason=(
                f"undo of #{ident} (stop), asked by the user: start "
                f"{row.instance_name or row.instance_id} again (the GPU may not be free: "
                "INSUFFICIENT_RESOURCE)"
            ),
            planned_at=now,
            due_at=now,
        )
        ids = store.insert_actions([start])
        if not ids:
            raise UserError(f"action #{ident} is being undone already (see novita-monitor actions)")
        done = store.transition(row, "undone", now, reason=f"{row.reason} | undone by #{ids[0]}")
    if done is None:
        raise _moved(ident)
    click.echo(
        f"action #{ident} undone: start of {_who(row.instance_name, row.instance_id)} planned as "
        f"#{ids[0]} (the act step runs it; the GPU may not be free)"
    )


COMMANDS = [plan, actions_cmd, approve, reject, undo]
