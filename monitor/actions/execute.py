"""The act step: execute the ledger's due actions, safely, and follow them up.

One call of :func:`act` (every ``schedules.act`` and in ``once``), in this order:

1. approvals past ``expires_at`` -> ``expired``;
2. **reconcile** rows ``outcome_unknown`` and rows ``executing`` older than
   ``executing_timeout`` (a crash between intent and outcome) by *reading* the instance (and,
   for a renew, its fixed-term bills): carried out -> ``succeeded``; not carried out after
   ``reconcile_after`` -> ``failed``; never called again, so a renewal is never paid twice;
3. the **due** rows (``announced``, ``planned``, ``approved`` with ``due_at <= now``), oldest due
   first, each on its own (one failure never stops the others):

   * the kill switch and the dry run skip them; the **breakers** (per account: ``max_per_cycle``
     in this step, ``max_per_hour`` rolling; per rule: ``max_per_rule_per_hour`` rolling) skip
     the rest with reason ``breaker`` and one critical notice per account;
   * **re-check** on fresh data (:mod:`monitor.actions.recheck`): a stop needs a fresh
     get-instance still ``running`` with the planned billing mode and ``lastStartedAt``, not
     protected, and the rule's condition true on fresh metrics (else ``aborted``/``refused``);
     a stop announced with a grace waits, due, for a sample taken at or after the grace's end
     (re-checked at the next act step; ``metrics_max_age`` bounds the wait);
     a renew is ``refused`` when ``endTime`` moved, auto-renew is on (or unknown) within 3 days
     of ``endTime``, or a renewal bill for the period exists;
   * **claim** (compare-and-set to ``executing``, committed before the call), **call**, record:
     ``succeeded`` (the answer kept), ``failed`` (an error answer, or a 2xx body with
     ``reason``/``error``/non-zero ``code``), ``outcome_unknown`` (5xx or timeout on the POST);
4. **follow-ups** of succeeded rows: verification (:mod:`monitor.actions.verify`) within
   ``verify_within``, else a critical notice; savings of stops closed when the instance runs
   again (its ``lastStartedAt`` passes ``saving_since``).

Every executed, aborted or refused row and every breaker trip yields a notice
(:class:`monitor.rules.lifecycle.Notification`) in :attr:`ActReport.notices` for the outbox.

The ledger row explains each action afterwards: ``reason`` (planning's sentence with its
figures; an act-time refusal or failure is put in front), ``facts`` (planning's snapshot),
``answer`` (``{"response": ...}`` the API's body, ``{"error": {...}}`` an error, ``"observed"``
what a re-read of the instance showed, ``"verified"`` true/false once verification ends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from monitor import economics
from monitor.actions import recheck, verify
from monitor.actions.plan import idle_why
from monitor.actions.settings import ActSettings
from monitor.novita.client import MAX_BILL_WINDOW, NovitaClient
from monitor.novita.errors import (
    APIError,
    NotFoundError,
    OutcomeUnknownError,
    UnavailableError,
)
from monitor.novita.models import FixedTermBill, Instance
from monitor.rules.facts import Facts, InstanceFact
from monitor.rules.lifecycle import AlertState, Notification, Silence, fingerprint
from monitor.rules.model import Rule, RuleSet
from monitor.store.models import ActionRecord

log = structlog.get_logger("monitor.actions")

DUE_STATES = ("announced", "planned", "approved")
HOUR = timedelta(hours=1)
#: what each action does, for notices
DONE = {
    "stop": "stopped",
    "start": "started",
    "renew": "renewed",
    "convert_to_subscription": "converted to a subscription",
    "set_auto_renew": "set auto-renew of",
}


@dataclass(frozen=True)
class ActOutcome:
    """What the act step did with one row."""

    action_id: int
    account: str
    rule: str
    action: str
    instance_id: str
    state: str
    reason: str = ""


@dataclass
class ActReport:
    """One act step: the rows it moved (in order) and the notices for the outbox."""

    now: datetime
    outcomes: list[ActOutcome] = field(default_factory=list)
    #: due rows left as they were, to be re-checked at the next act step (state ``waiting``)
    waiting: list[ActOutcome] = field(default_factory=list)
    notices: list[Notification] = field(default_factory=list)
    breakers: dict[str, list[str]] = field(default_factory=dict)  # account -> what tripped

    @property
    def failed(self) -> bool:
        """An action failed or ended with an unknown outcome (``once`` exits 1)."""
        return any(o.state in ("failed", "outcome_unknown") for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.state] = out.get(o.state, 0) + 1
        return out

    def lines(self) -> list[str]:
        """One line per row moved (what ``once`` prints)."""
        return [
            f"action {o.action_id} {o.action} {o.instance_id} ({o.rule}): {o.state}"
            + (f": {o.reason}" if o.reason else "")
            for o in self.outcomes
        ]


class _Stop(Exception):
    """A re-check said no: the row ends in ``state`` with ``why``."""

    def __init__(self, state: str, why: str) -> None:
        super().__init__(why)
        self.state = state
        self.why = why


class _NotYet(Exception):
    """A re-check cannot judge yet: the row stays due and is re-checked at the next act step."""


async def act(
    store: Any,
    clients: Mapping[str, NovitaClient],
    facts_for: Callable[[datetime], Facts],
    settings: ActSettings,
    now: datetime,
    *,
    by: str,
    ruleset: RuleSet | None = None,
    hook: Callable[[str, ActionRecord], None] | None = None,
    abandoned: Callable[[str | None], bool] | None = None,
    silences: Sequence[Silence] = (),
) -> ActReport:
    """Run one act step at ``now`` (see the module docstring). ``clients`` by account name;
    ``facts_for(now)`` gives the stored facts (hourly costs, the listing for savings);
    ``ruleset`` the loaded rules (a stop's condition is re-checked with its rule's ``when``);
    ``by`` names this executor in the ledger (``claimed_by``); ``hook(point, row)`` is called
    at ``"claim"`` (the claim committed, before the API call) and ``"call"`` (the API answered,
    before the outcome is recorded): the test-only crash hook. ``abandoned(claimed_by)`` says
    an ``executing`` row's executor is known dead (reconciled at once instead of after
    ``executing_timeout``). ``silences``: the active silences; one matching a due row's rule
    and instance holds it (``skipped``, reason ``silenced``: the announcement's "to keep it,
    add a silence" works during the grace)."""
    step = _Step(store, clients, facts_for, settings, now, by, ruleset, hook, abandoned)
    step.silences = list(silences)
    await step.run()
    return step.report


class _Step:
    def __init__(
        self,
        store: Any,
        clients: Mapping[str, NovitaClient],
        facts_for: Callable[[datetime], Facts],
        settings: ActSettings,
        now: datetime,
        by: str,
        ruleset: RuleSet | None,
        hook: Callable[[str, ActionRecord], None] | None,
        abandoned: Callable[[str | None], bool] | None,
    ) -> None:
        self.store = store
        self.clients = clients
        self._facts_for = facts_for
        self._facts: Facts | None = None
        self._rows: dict[str, dict[str, Any]] = {}
        self.settings = settings
        self.now = now
        self.by = by
        self.ruleset = ruleset
        self.hook = hook
        self.abandoned = abandoned
        self.silences: list[Silence] = []
        self.report = ActReport(now)
        # the breakers' rolling-hour counts, read once per step (see _acted_in_hour)
        self._acted: dict[tuple[str, str | None], int] = {}
        self._claims: dict[tuple[str, str | None], int] = {}

    # -- helpers ------------------------------------------------------------------------------

    @property
    def facts(self) -> Facts:
        if self._facts is None:
            self._facts = self._facts_for(self.now)
        return self._facts

    def _listed(self, account: str) -> dict[str, Any]:
        """The stored listing's rows by instance id, read once per step: what closing a
        stop's saving needs (when it was started again), without pricing the fleet."""
        if account not in self._rows:
            self._rows[account] = {r.instance_id: r for r in self.store.instance_rows(account)}
        return self._rows[account]

    def _stored_fact(self, account: str, instance_id: str) -> InstanceFact | None:
        for fact in self.facts.instances(account):
            if fact.id == instance_id:
                return fact
        return None

    def _rule(self, name: str) -> Rule | None:
        return None if self.ruleset is None else self.ruleset.get(name)

    def _move(self, row: ActionRecord, state: str, **fields: Any) -> ActionRecord | None:
        moved = self.store.transition(row, state, self.now, **fields)
        if moved is None:
            log.info("action.lost", action_id=row.id, to=state, why="the row changed meanwhile")
            return None
        self.report.outcomes.append(
            ActOutcome(
                int(moved.id or 0),
                moved.account,
                moved.rule,
                moved.action,
                moved.instance_id,
                state,
                fields.get("reason", "") if state != "succeeded" else "",
            )
        )
        log.info("action." + state, action_id=moved.id, action=moved.action,
                 instance=moved.instance_id, rule=moved.rule)  # fmt: skip
        return moved

    def _notify(self, row: ActionRecord, severity: str, summary: str, **values: Any) -> None:
        rule = self._rule(row.rule)
        self.report.notices.append(
            Notification(
                fingerprint=f"action|{row.id}|{values.get('event', row.state)}",
                rule=row.rule,
                severity=severity,
                state="firing",
                account=row.account,
                resource_kind="instance",
                resource_id=row.instance_id,
                resource_name=row.instance_name or "",
                summary=summary,
                values={"action": row.action, "action_id": row.id, **values},
                channels=list(rule.notify) if rule is not None and rule.notify else None,
                started_at=self.now,
            )
        )

    @staticmethod
    def _who(row: ActionRecord) -> str:
        if row.instance_name and row.instance_name != row.instance_id:
            return f"{row.instance_name} ({row.instance_id})"
        return row.instance_id

    @staticmethod
    def _explained(why: str, row: ActionRecord) -> str:
        """``why`` in front of the planning reason (kept once, however often the row moves)."""
        planned = row.reason or ""
        if "(planned: " in planned:
            planned = planned[planned.index("(planned: ") + len("(planned: ") : -1]
        return f"{why} (planned: {planned})" if planned else why

    # -- the step -----------------------------------------------------------------------------

    async def run(self) -> None:
        self._expire()
        await self._reconcile()
        await self._due()
        await self._follow_up()

    def _expire(self) -> None:
        for row in self.store.actions(states=["awaiting_approval"]):
            if row.expires_at is not None and row.expires_at <= self.now:
                self._move(row, "expired", reason=self._explained("approval expired", row))

    # -- reconciliation -------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        stale = self.now - self.settings.executing_timeout
        rows = [
            row
            for row in self.store.actions(states=["executing", "outcome_unknown"])
            if row.state == "outcome_unknown"
            or (row.started_at or self.now) <= stale
            or (self.abandoned is not None and self.abandoned(row.claimed_by))
        ]
        for row in sorted(rows, key=lambda r: (r.started_at or self.now, r.id or 0)):
            try:
                await self._reconcile_one(row)
            except Exception as exc:  # one row's trouble never stops the others
                log.warning("action.reconcile_error", action_id=row.id, error=repr(exc))

    async def _reconcile_one(self, row: ActionRecord) -> None:
        client = self.clients.get(row.account)
        if client is None:
            return
        try:
            inst = await client.get_instance(row.instance_id)
        except NotFoundError:
            inst = None
        except APIError as exc:
            log.info("action.reconcile_later", action_id=row.id, error=str(exc))
            return
        bills = await self._bills(client, row) if row.action == "renew" and inst else []
        crashed = row.state == "executing"
        if inst is not None and verify.carried_out(row, inst, bills):
            answer = {
                **(row.answer or {}),
                "observed": verify.observed(inst),
                "reconciled": True,
                "verified": True if verify.completed(row, inst, bills) else None,
            }
            fields: dict[str, Any] = {"answer": answer}
            if row.action == "stop":
                fields.update(self._saving_start(row, inst))
            moved = self._move(row, "succeeded", **fields)
            if moved is not None:
                self._notify(
                    moved,
                    "warning",
                    f"{DONE.get(row.action, row.action)} {self._who(row)}: its outcome was "
                    f"unknown ({'a crash mid-call' if crashed else 'no clear answer'}); reading "
                    f"the instance shows it was carried out. Why: {row.reason}",
                    event="reconciled",
                    state="succeeded",
                )
            return
        started = row.started_at or self.now
        if self.now - started < self.settings.reconcile_after:
            if crashed:
                self._move(
                    row,
                    "outcome_unknown",
                    reason=self._explained("interrupted between intent and outcome", row),
                    finished_at=None,
                )
            return
        seen = "the instance is gone" if inst is None else f"status {inst.status}"
        why = (
            f"reconciled by reading: not carried out ({seen}; nothing shows it took effect "
            f"within {int(self.settings.reconcile_after.total_seconds() // 60)} min); not "
            "called again"
        )
        answer = {**(row.answer or {}), "reconciled": True}
        if inst is not None:
            answer["observed"] = verify.observed(inst)
        moved = self._move(row, "failed", reason=self._explained(why, row), answer=answer)
        if moved is not None:
            self._notify(
                moved,
                "critical",
                f"{row.action} of {self._who(row)} failed: {why}",
                event="reconciled",
                state="failed",
            )

    # -- due rows -----------------------------------------------------------------------------

    async def _due(self) -> None:
        rows = self.store.actions(states=list(DUE_STATES), due_by=self.now)
        per_cycle: dict[str, int] = {}
        tripped: dict[str, str] = {}  # account -> why
        rule_tripped: set[tuple[str, str]] = set()
        skipped: dict[str, int] = {}
        for row in rows:
            if not self.settings.enabled or self.settings.dry_run:
                off = (
                    "kill switch (actions.enabled: false)"
                    if not self.settings.enabled
                    else "dry run (actions.dry_run)"
                )
                self._move(row, "skipped", reason=self._explained(off, row))
                continue
            silence = self._silenced(row)
            if silence is not None:
                held = f"silenced (silence {silence.id}{': ' + silence.reason if silence.reason else ''})"
                self._end(row, "skipped", held)
                continue
            breaker = self._breaker(row, per_cycle, tripped, rule_tripped)
            if breaker is not None:
                if self._move(row, "skipped", reason=self._explained(f"breaker: {breaker}", row)):
                    skipped[row.account] = skipped.get(row.account, 0) + 1
                    trips = self.report.breakers.setdefault(row.account, [])
                    if breaker not in trips:
                        trips.append(breaker)
                continue
            try:
                claimed = await self._execute(row)
            except Exception as exc:  # a bug in one row never stops the others
                log.error("action.error", action_id=row.id, error=repr(exc))
                claimed = False
            if claimed:
                per_cycle[row.account] = per_cycle.get(row.account, 0) + 1
                for key in ((row.account, None), (row.account, row.rule)):
                    self._claims[key] = self._claims.get(key, 0) + 1
        for account, count in skipped.items():
            tripped_by = "; ".join(self.report.breakers.get(account, []))
            self.report.notices.append(
                Notification(
                    fingerprint=f"actions-breaker|{account}",
                    rule="actions-breaker",
                    severity="critical",
                    state="firing",
                    account=account,
                    resource_kind="account",
                    resource_id=account,
                    resource_name=account,
                    summary=(
                        f"action breaker tripped for account {account}: {tripped_by}; {count} "
                        "action(s) skipped (recorded as skipped, reason breaker)"
                    ),
                    values={"skipped": count, "breakers": tripped_by},
                    started_at=self.now,
                )
            )

    def _silenced(self, row: ActionRecord) -> Silence | None:
        rule = self._rule(row.rule)
        state = AlertState(
            fingerprint(row.account, row.rule, "instance", row.instance_id),
            row.account,
            row.rule,
            "instance",
            row.instance_id,
            labels=dict(rule.labels) if rule is not None else {},
        )
        return next((s for s in self.silences if s.matches(state, self.now)), None)

    def _breaker(
        self,
        row: ActionRecord,
        per_cycle: dict[str, int],
        tripped: dict[str, str],
        rule_tripped: set[tuple[str, str]],
    ) -> str | None:
        s = self.settings
        account = row.account
        if account in tripped:
            return tripped[account]
        if per_cycle.get(account, 0) >= s.max_per_cycle:
            tripped[account] = f"max_per_cycle {s.max_per_cycle} reached in this act step"
            return tripped[account]
        if self._acted_in_hour(account, None) >= s.max_per_hour:
            tripped[account] = f"max_per_hour {s.max_per_hour} reached (rolling hour)"
            return tripped[account]
        key = (account, row.rule)
        if key in rule_tripped or self._acted_in_hour(account, row.rule) >= (
            s.max_per_rule_per_hour
        ):
            rule_tripped.add(key)
            return (
                f"max_per_rule_per_hour {s.max_per_rule_per_hour} reached for rule {row.rule} "
                "(rolling hour)"
            )
        return None

    def _acted_in_hour(self, account: str, rule: str | None) -> int:
        """The account's (or its rule's) actions acted in the rolling hour: read once per step,
        plus this step's claims."""
        key = (account, rule)
        if key not in self._acted:
            self._acted[key] = self.store.acted_since(account, self.now - HOUR, rule)
        return self._acted[key] + self._claims.get(key, 0)

    async def _execute(self, row: ActionRecord) -> bool:
        """Re-check, claim, call, record. True when the row was claimed (it counts against the
        per-cycle breaker)."""
        client = self.clients.get(row.account)
        if client is None:
            self._end(row, "aborted", f"no client for account {row.account!r}")
            return False
        try:
            fields = await self._recheck(client, row)
        except _Stop as stop:
            self._end(row, stop.state, stop.why)
            return False
        except _NotYet as wait:
            log.info("action.waiting", action_id=row.id, action=row.action,
                     instance=row.instance_id, why=str(wait))  # fmt: skip
            self.report.waiting.append(
                ActOutcome(
                    int(row.id or 0), row.account, row.rule, row.action, row.instance_id,
                    "waiting", str(wait),
                )
            )  # fmt: skip
            return False
        claimed = self.store.claim(row, self.by, self.now)
        if claimed is None:
            log.info("action.claimed_elsewhere", action_id=row.id)
            return False
        if self.hook is not None:
            self.hook("claim", claimed)
        await self._call(client, claimed, fields)
        return True

    def _end(self, row: ActionRecord, state: str, why: str) -> None:
        moved = self._move(row, state, reason=self._explained(why, row))
        if moved is not None:
            verb = {"aborted": "not done", "refused": "refused", "skipped": "held"}.get(
                state, state
            )
            self._notify(
                moved,
                "warning",
                f"{row.action} of {self._who(row)} {verb}: {why}",
                event=state,
                state=state,
                why=why,
            )

    async def _read(self, client: NovitaClient, row: ActionRecord) -> Instance:
        try:
            return await client.get_instance(row.instance_id)
        except NotFoundError as exc:
            raise _Stop("aborted", f"the instance is gone ({exc.reason or exc.status})") from exc
        except APIError as exc:
            raise _Stop("aborted", f"could not read the instance afresh: {exc}") from exc

    async def _bills(self, client: NovitaClient, row: ActionRecord) -> list[FixedTermBill]:
        return await client.list_fixed_term_bills(
            self.now - MAX_BILL_WINDOW, self.now, owner_id=row.instance_id
        )

    async def _recheck(self, client: NovitaClient, row: ActionRecord) -> dict[str, Any]:
        """Fresh reads; raises :class:`_Stop` when the row must not act. Returns fields to
        record with the outcome."""
        inst = await self._read(client, row)
        snap = recheck.snapshot(row)
        params = row.params or {}
        protected = recheck.protection(inst, self.settings.protect_names, self.settings.protect_env)
        if protected:
            raise _Stop("refused", protected)
        if row.action == "stop":
            return await self._recheck_stop(client, row, inst, snap, params)
        if row.action == "start":
            if inst.status != "exited":
                raise _Stop("aborted", f"status is {inst.status}, not exited")
            return {}
        if row.action == "renew":
            try:
                recheck.months_of(row)
                bills = await self._bills(client, row)
            except ValueError as exc:
                raise _Stop("refused", str(exc)) from exc
            except APIError as exc:
                raise _Stop("aborted", f"could not read the fixed-term bills: {exc}") from exc
            refusal = recheck.renewal_refusal(inst, snap, bills, self.now)
            if refusal:
                raise _Stop("refused", refusal)
            return {}
        if row.action == "convert_to_subscription":
            if inst.billing_mode != "onDemand":
                raise _Stop("aborted", f"billing mode is {inst.billing_mode}, not onDemand")
            return {}
        if row.action == "set_auto_renew":
            if inst.billing_mode != "monthly":
                raise _Stop("aborted", f"billing mode is {inst.billing_mode}, not monthly")
            return {}
        raise _Stop("refused", f"unknown action {row.action!r}")

    async def _recheck_stop(
        self,
        client: NovitaClient,
        row: ActionRecord,
        inst: Instance,
        snap: Mapping[str, Any],
        params: Mapping[str, Any],
    ) -> dict[str, Any]:
        changed = recheck.changed_since_planning(inst, snap)
        if changed:
            raise _Stop("aborted", changed)
        never = recheck.not_stoppable(inst, bool(params.get("include_spot", False)))
        if never:
            raise _Stop("refused", never)
        rule = self._rule(row.rule)
        if rule is None:
            raise _Stop("aborted", f"rule {row.rule!r} is no longer loaded: cannot re-check it")
        since = self.now - recheck.metric_span(rule)
        metrics = None
        if recheck.metric_span(rule) > recheck.METRIC_MARGIN:
            try:
                metrics = await client.get_metrics(row.instance_id, since, self.now)
            except (APIError, ValueError) as exc:
                raise _Stop("aborted", f"could not read fresh metrics: {exc}") from exc
            newest = recheck.newest_gpu_sample(metrics)
            if newest is None or self.now - newest > self.settings.metrics_max_age:
                shown = newest.isoformat() if newest else "none"
                raise _Stop("aborted", f"fresh metrics are stale or missing (newest {shown})")
            waiting = recheck.unseen_since_due(row, newest)
            if waiting:
                raise _NotYet(waiting)
        stored = self._stored_fact(row.account, row.instance_id)
        fact = recheck.instance_fact(inst, stored)
        facts = recheck.fresh_facts(row.account, fact, metrics, since)
        result = recheck.judge(rule, row.account, fact, facts, self.now)
        verdict = recheck.condition_verdict(result)
        if verdict:
            raise _Stop("aborted", verdict)
        per_hour = row.saving_per_hour_usd
        if per_hour is None and stored is not None:
            per_hour = stored.hourly_cost_usd
        return {"saving_per_hour_usd": per_hour}

    async def _call(self, client: NovitaClient, row: ActionRecord, fields: dict[str, Any]) -> None:
        kind = row.action
        try:
            if kind == "stop":
                body = await client.stop_instance(row.instance_id)
            elif kind == "start":
                body = await client.start_instance(row.instance_id)
            elif kind == "renew":
                body = await client.renew_instance(row.instance_id, recheck.months_of(row))
            elif kind == "convert_to_subscription":
                body = await client.convert_to_monthly(row.instance_id, recheck.months_of(row))
            elif kind == "set_auto_renew":
                body = await client.set_auto_renew(
                    [row.instance_id], verify.enabled_of(row), recheck.months_of(row)
                )
            else:  # pragma: no cover - _recheck refuses unknown actions
                raise ValueError(f"unknown action {kind!r}")
        except OutcomeUnknownError as exc:
            why = f"outcome unknown: {exc} (never retried; reconciled by reading the instance)"
            moved = self._move(
                row, "outcome_unknown", reason=self._explained(why, row),
                answer=_answer_of(exc), finished_at=None,
            )  # fmt: skip
            if moved is not None:
                self._notify(
                    moved, "critical", f"{kind} of {self._who(row)}: {why}",
                    event="outcome_unknown", state="outcome_unknown",
                )  # fmt: skip
            return
        except UnavailableError as exc:
            # certainly not sent (a connect error after the client's retries): it ended without
            # acting, so its intent is released and a later plan may try again
            why = f"not sent, the API could not be reached: {exc}"
            self._move(row, "aborted", reason=self._explained(why, row), answer=_answer_of(exc))
            self._notify(
                row, "warning", f"{row.action} of {self._who(row)} not done: {why}",
                event="aborted", state="aborted",
            )  # fmt: skip
            return
        except APIError as exc:
            self._failed(row, f"the API refused it: {exc}", _answer_of(exc), "failed")
            return
        except ValueError as exc:
            self._failed(row, f"not sent: {exc}", {"error": {"message": str(exc)}}, "failed")
            return
        except asyncio.CancelledError:
            # a stop (SIGTERM past its grace) cut the call: it may have gone out
            why = "outcome unknown: the call was cut by a shutdown (reconciled by reading)"
            self._move(row, "outcome_unknown", reason=self._explained(why, row), finished_at=None)
            raise
        except Exception as exc:  # the call may have gone out: unknown, reconciled by reading
            why = f"outcome unknown: {type(exc).__name__} during the call"
            self._move(
                row, "outcome_unknown", reason=self._explained(why, row),
                answer={"error": {"message": repr(exc)[:500]}}, finished_at=None,
            )  # fmt: skip
            return
        if self.hook is not None:
            self.hook("call", row)
        error = verify.answer_error(body)
        if error is not None:
            self._failed(row, error, {"response": body, "error": {"message": error}}, "failed")
            return
        extra: dict[str, Any] = {"answer": {"response": body, "verified": None}}
        if kind == "stop":
            extra.update(
                saving_per_hour_usd=fields.get("saving_per_hour_usd"), saving_since=self.now
            )
        moved = self._move(row, "succeeded", **extra)
        if moved is not None:
            saving, because = "", row.reason or ""
            if kind == "stop":
                # what made it idle, as planned (the ledger's reason also holds the grace's
                # "unless it becomes busy" and the saving, stale or repeated once it is done)
                idle = idle_why((moved.facts or {}).get("values") or {})
                because = f"idle when planned: {idle}" if idle else because
                if moved.saving_per_hour_usd is not None:
                    saving = f"; saves ${moved.saving_per_hour_usd:.2f}/h while stopped"
            self._notify(
                moved,
                "info",
                f"{DONE.get(kind, kind)} {self._who(row)} (rule {row.rule}): {because}{saving}",
                event="succeeded",
                state="succeeded",
                saving_per_hour_usd=_float(moved.saving_per_hour_usd),
            )

    def _failed(self, row: ActionRecord, why: str, answer: dict[str, Any], state: str) -> None:
        moved = self._move(row, state, reason=self._explained(why, row), answer=answer)
        if moved is not None:
            self._notify(
                moved, "critical", f"{row.action} of {self._who(row)} failed: {why}",
                event="failed", state="failed",
            )  # fmt: skip

    # -- follow-ups: verification and savings ---------------------------------------------------

    def _saving_start(self, row: ActionRecord, inst: Instance) -> dict[str, Any]:
        stopped = inst.last_stopped_at
        since = (
            stopped
            if stopped is not None and row.started_at and stopped >= row.started_at - verify.SLACK
            else row.started_at
        )
        per_hour = row.saving_per_hour_usd
        if per_hour is None:
            stored = self._stored_fact(row.account, row.instance_id)
            per_hour = stored.hourly_cost_usd if stored is not None else None
        return {"saving_since": since or self.now, "saving_per_hour_usd": per_hour}

    async def _follow_up(self) -> None:
        window = max(self.settings.verify_within, self.settings.reconcile_after) * 2
        for row in self.store.follow_ups(self.now - window):
            try:
                if (row.answer or {}).get("verified") is None and "verified" in (row.answer or {}):
                    await self._verify(row)
                    row = self.store.action(int(row.id or 0)) or row
                if row.action == "stop" and row.saving_since and row.saving_until is None:
                    self._close_saving(row)
            except Exception as exc:
                log.warning("action.follow_up_error", action_id=row.id, error=repr(exc))

    async def _verify(self, row: ActionRecord) -> None:
        client = self.clients.get(row.account)
        if client is None:
            return
        try:
            inst = await client.get_instance(row.instance_id)
            bills = await self._bills(client, row) if row.action == "renew" else []
        except APIError as exc:
            log.info("action.verify_later", action_id=row.id, error=str(exc))
            inst = None
            bills = []
        answer = dict(row.answer or {})
        if inst is not None and verify.completed(row, inst, bills):
            answer.update(verified=True, observed=verify.observed(inst))
            self.store.transition(
                row, row.state, self.now, answer=answer, finished_at=row.finished_at
            )
            return
        done_at = row.finished_at or self.now
        if self.now - done_at < self.settings.verify_within:
            return
        seen = "could not be read" if inst is None else f"shows {verify.observed(inst)}"
        why = (
            f"not verified: expected {verify.expectation(row)} within "
            f"{int(self.settings.verify_within.total_seconds() // 60)} min; the instance {seen}"
        )
        answer.update(verified=False, verify_note=why)
        if inst is not None:
            answer["observed"] = verify.observed(inst)
        moved = self.store.transition(
            row, row.state, self.now, answer=answer, finished_at=row.finished_at
        )
        if moved is not None:
            self._notify(
                moved, "critical", f"{row.action} of {self._who(row)} {why}",
                event="unverified", state=row.state,
            )  # fmt: skip

    def _close_saving(self, row: ActionRecord) -> None:
        listed = self._listed(row.account)
        inst = listed.get(row.instance_id)
        since = row.saving_since
        assert since is not None
        until: datetime | None = None
        if inst is None:
            if listed:  # the listing no longer has it: deleted; the saving ends here
                until = self.now
        elif inst.last_started_at is not None and inst.last_started_at > since:
            until = inst.last_started_at
        if until is None:
            return
        realized = economics.stop_saving(row.saving_per_hour_usd, since, until, self.now)
        self.store.update_savings(row, saving_until=until, realized_saving_usd=realized)


def realized_so_far(row: ActionRecord, now: datetime) -> Decimal | None:
    """A stop's realized saving: closed (``realized_saving_usd``) or, still stopped, accrued
    up to ``now`` (:func:`monitor.economics.stop_saving`)."""
    if row.realized_saving_usd is not None:
        return row.realized_saving_usd
    return economics.stop_saving(row.saving_per_hour_usd, row.saving_since, row.saving_until, now)


def _answer_of(exc: APIError) -> dict[str, Any]:
    """The ledger's ``answer`` for an error: what went wrong and, when the API answered (a 4xx,
    or a 2xx whose body carries an error), the body it sent (the key scrubbed)."""
    out: dict[str, Any] = {"error": _error(exc)}
    body = getattr(exc, "answer", None)
    if body is not None:
        out["response"] = body
    return out


def _error(exc: APIError) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "status": exc.status,
        "reason": exc.reason,
        "message": exc.message,
    }


def _float(value: Decimal | None) -> float | None:
    return None if value is None else round(float(value), 4)
