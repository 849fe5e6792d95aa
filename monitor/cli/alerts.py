"""The alert-facing commands: ``alerts``, ``silence add|list|remove`` and ``notify-test``.

They work on the database the daemon writes (alert states, silences, notifications) and on the
configured channels; none of them talks to the Novita API. The current time comes from
``monitor.cli.common.clock`` (tests inject a ``ManualClock`` through click's context object),
channel URLs from ``common.env``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from datetime import datetime, timedelta
from typing import Any

import click

from monitor.cli.common import (
    clock,
    config_option,
    env,
    handle_errors,
    iso,
    load,
    open_database,
    when,
)
from monitor.errors import RuntimeFailure, UserError

_STATE_ORDER = {"firing": 0, "pending": 1, "resolved": 2}
RECENT = timedelta(hours=24)


def _duration(text: str) -> timedelta:
    from monitor.rules.durations import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--for: {exc}") from None
    if value <= timedelta(0):
        raise UserError("--for: a silence must last longer than 0 (e.g. 30m, 2h, 1d)")
    return value


# ---------------------------------------------------------------------------------------------
# alerts


def _since(rec: Any) -> datetime | None:
    if rec.state == "resolved":
        return rec.resolved_at
    if rec.state == "firing":
        return rec.firing_since or rec.active_since
    return rec.active_since


def alert_rows(store: Any, now: datetime, include_all: bool = False) -> list[dict[str, Any]]:
    """Firing and pending alerts, and those resolved in the last 24 h (every stored one with
    ``include_all``), as plain dicts, most urgent first; ``silenced_by`` lists silence ids."""
    from monitor.evaluate import to_silence, to_state
    from monitor.notify import severity_rank

    silences = [to_silence(s) for s in store.list_silences(now)]
    rows = []
    for rec in store.load_alerts():
        recent = rec.resolved_at is not None and now - rec.resolved_at <= RECENT
        if rec.state == "resolved" and not (include_all or recent):
            continue
        state = to_state(rec)
        by = [int(s.id) for s in silences if s.matches(state, now)]
        rows.append(
            {
                "state": rec.state,
                "rule": rec.rule,
                "severity": rec.severity or "",
                "account": rec.account or "",
                "resource_kind": rec.resource_kind,
                "resource_id": rec.resource_id,
                "resource_name": rec.resource_name or "",
                "since": iso(_since(rec)),
                "active_since": iso(rec.active_since),
                "firing_since": iso(rec.firing_since),
                "resolved_at": iso(rec.resolved_at),
                "last_notified_at": iso(rec.last_notified_at),
                "summary": rec.summary,
                "silenced": bool(by),
                "silenced_by": by,
                "fingerprint": rec.fingerprint,
            }
        )
    rows.sort(
        key=lambda r: (
            _STATE_ORDER.get(r["state"], 9),
            -severity_rank(r["severity"]),
            r["rule"],
            r["account"],
            r["resource_id"],
        )
    )
    return rows


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="A machine-readable list.")
@click.option("--all", "include_all", is_flag=True, help="Every stored alert, not only recent.")
@handle_errors
def alerts(config_path: str | None, as_json: bool, include_all: bool) -> None:
    """Firing and pending alerts, and those resolved in the last 24 hours."""
    config = load(config_path)
    now = clock().now()
    with open_database(config) as store:
        rows = alert_rows(store, now, include_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no alerts" + ("" if include_all else " (firing, pending or resolved in 24 h)"))
        return
    for r in rows:
        name = f" ({r['resource_name']})" if r["resource_name"] else ""
        since = when(datetime.fromisoformat(r["since"]) if r["since"] else None, now)
        muted = (
            f"  [silenced by #{', #'.join(map(str, r['silenced_by']))}]" if r["silenced"] else ""
        )
        click.echo(
            f"{r['state']:<8} {r['severity'] or '-':<8} {r['rule']}  {r['account']}  "
            f"{r['resource_id']}{name}  since {since}{muted}"
        )
        if r["summary"]:
            click.echo(f"    {r['summary']}")
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in _STATE_ORDER}
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))


# ---------------------------------------------------------------------------------------------
# silences


def _rule_names(config: Any) -> list[str]:
    from monitor.app import load_ruleset
    from monitor.rules import BUILTIN_MONITOR_RULE

    names = load_ruleset(config).names
    if BUILTIN_MONITOR_RULE.name not in names:
        names.append(BUILTIN_MONITOR_RULE.name)
    return sorted(names)


def _silence_row(s: Any, now: datetime) -> dict[str, Any]:
    state = "expired" if s.ends_at <= now else ("active" if s.starts_at <= now else "scheduled")
    return {
        "id": s.id,
        "state": state,
        "rule": s.rule,
        "account": s.account,
        "resource_id": s.resource_id,
        "starts_at": iso(s.starts_at),
        "ends_at": iso(s.ends_at),
        "created_at": iso(s.created_at),
        "reason": s.reason,
    }


@click.group()
def silence() -> None:
    """Mute notifications of matching alerts for a while (silences always expire)."""


@silence.command("add")
@config_option
@click.option("--rule", required=True, help="Rule name (shell globs allowed: 'subscription-*').")
@click.option(
    "--instance",
    "--resource",
    "resource_id",
    default=None,
    help="Instance (or task, account) id; globs allowed. Default: every resource.",
)
@click.option("--account", default=None, help="Only this account.")
@click.option("--for", "duration", required=True, help="How long: 30m, 2h, 1d.")
@click.option("--reason", required=True, help="Why (shown in silence list).")
@handle_errors
def silence_add(
    config_path: str | None,
    rule: str,
    resource_id: str | None,
    account: str | None,
    duration: str,
    reason: str,
) -> None:
    """Add a silence; prints its id."""
    length = _duration(duration)
    if not reason.strip():
        raise UserError("--reason: say why (it is shown in silence list)")
    config = load(config_path)
    names = _rule_names(config)
    if not any(fnmatch.fnmatchcase(n, rule) for n in names):
        raise UserError(f"--rule: no loaded rule matches {rule!r} (loaded: {', '.join(names)})")
    accounts = [a.name for a in config.accounts]
    if account is not None and account not in accounts:
        raise UserError(
            f"--account: no account named {account!r} (configured: {', '.join(accounts)})"
        )
    now = clock().now()
    with open_database(config) as store:
        unknown = resource_id is not None and not _known_resource(
            store, [account] if account else accounts, resource_id
        )
        sid = store.add_silence(
            starts_at=now,
            ends_at=now + length,
            created_at=now,
            reason=reason.strip(),
            rule=rule,
            resource_id=resource_id,
            account=account,
        )
    target = f"rule {rule}" + (f", resource {resource_id}" if resource_id else "")
    target += f", account {account}" if account else ""
    click.echo(f"silence #{sid} added: {target}, until {when(now + length, now)}")
    if unknown:
        click.echo(
            f"warning: no known instance, task or account matches {resource_id!r} "
            "(a typo? the silence holds nothing until one does; ids are listed by "
            "novita-monitor status)",
            err=True,
        )


def _known_resource(store: Any, accounts: list[str], pattern: str) -> bool:
    """Whether ``pattern`` (an id or a glob) names a stored instance (listed now or before), a
    task or an account: a silence naming none of them is probably a typo."""
    for account in accounts:
        ids = [account]
        ids += [i.instance_id for i in store.instances(account, include_disappeared=True)]
        ids += [t.task_id for t in store.training_tasks(account)]
        ids += [w.task_id for w in store.watched_tasks(account, include_terminal=True)]
        if any(fnmatch.fnmatchcase(i, pattern) for i in ids):
            return True
    return False


@silence.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="A machine-readable list.")
@click.option("--all", "include_all", is_flag=True, help="Include expired silences.")
@handle_errors
def silence_list(config_path: str | None, as_json: bool, include_all: bool) -> None:
    """Active (and scheduled) silences; ``--all`` adds the expired ones."""
    config = load(config_path)
    now = clock().now()
    with open_database(config) as store:
        rows = [_silence_row(s, now) for s in store.list_silences(now, include_all)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no silences" + ("" if include_all else " active"))
        return
    for r in rows:
        ends = when(datetime.fromisoformat(r["ends_at"]), now)
        click.echo(
            f"#{r['id']:<4} {r['state']:<9} rule {r['rule'] or '*'}  "
            f"resource {r['resource_id'] or '*'}  account {r['account'] or '*'}  "
            f"until {ends}  reason: {r['reason']}"
        )


@silence.command("remove")
@config_option
@click.argument("silence_id", metavar="ID")
@handle_errors
def silence_remove(config_path: str | None, silence_id: str) -> None:
    """Remove a silence by id (see silence list)."""
    try:
        number = int(silence_id.lstrip("#"))
    except ValueError:
        raise UserError(
            f"silence id must be a number (see silence list), got {silence_id!r}"
        ) from None
    config = load(config_path)
    with open_database(config) as store:
        removed = store.remove_silence(number)
    if not removed:
        raise UserError(f"no silence #{number} (see silence list --all)")
    click.echo(f"silence #{number} removed")


# ---------------------------------------------------------------------------------------------
# notify-test


@click.command("notify-test")
@config_option
@click.option("--channel", required=True, help="A channel name from the configuration.")
@handle_errors
def notify_test(config_path: str | None, channel: str) -> None:
    """Send a test message through one configured channel (one attempt, no retries)."""
    from monitor.app import notifier_for_test

    config = load(config_path)
    source = clock()
    notifier = notifier_for_test(config, channel, source, env())
    result = asyncio.run(notifier.send_test(channel))
    _record_test(config, channel, result, source.now())
    if not result.ok:
        raise RuntimeFailure(f"test message to channel {channel!r} failed: {result.error}")
    click.echo(f"test message delivered to channel {channel!r}")


def _record_test(config: Any, channel: str, result: Any, now: datetime) -> None:
    """Keep the test in the notification history; a database problem does not hide the result."""
    try:
        with open_database(config) as store:
            store.record_notification(
                channel=channel,
                kind="test",
                fingerprints=[],
                created_at=now,
                status="sent" if result.ok else "failed",
                attempts=result.attempts,
                sent_at=result.at if result.ok else None,
                error=result.error,
                body="notification test",
            )
    except Exception as exc:
        click.echo(f"warning: the test was not recorded in the database: {exc}", err=True)


COMMANDS = [alerts, silence, notify_test]
