"""Remedial actions: stop, start, renew, convert_to_subscription, set_auto_renew.

A rule asks for actions (``actions:`` in its YAML); writing one is the opt-in (the shipped
rules ask for none). The flow, each step crash-safe:

1. **Plan** (in the evaluation, :mod:`monitor.actions.plan`): for each alert of a rule with
   actions that fires, one ledger row per action (:class:`monitor.store.models.ActionRecord`),
   written in the same transaction as the alert states and the notifications (the outbox).
   Its ``intent_key`` is ``rule|action|instance|period`` (period: the ``endTime`` being renewed;
   for a stop the run being stopped, ``lastStartedAt`` or ``createdAt``); a live row holds the
   key as its ``idempotency_key`` (unique), so an intent is planned once. The new row's state:

   * ``dry_run``: a dry run (``--dry-run``, ``actions.dry_run``, the rule's ``dry_run``): the
     plan is recorded and printed, nothing is called;
   * ``skipped`` (reason ``kill switch``): ``actions.enabled: false``;
   * ``refused`` (with the reason): a guard says no at planning (protected, excluded, not
     eligible, unknown figures, money checks);
   * ``announced`` with ``due_at`` = now + grace: a stop (announced to the channels: "will stop
     X at T unless it becomes busy");
   * ``awaiting_approval`` with ``expires_at`` = now + ``approval_ttl``: renew, convert and
     set_auto_renew by default (``novita-monitor approve ID`` -> ``approved``, due now;
     ``reject ID`` -> ``rejected``; past ``expires_at`` -> ``expired``);
   * ``planned``, due now: anything else.

2. **Act** (the act step, :mod:`monitor.actions.execute`, every ``schedules.act`` and in
   ``once``): rows due (``due_at <= now``) in ``announced``, ``planned`` or ``approved`` are
   checked against the breakers (else ``skipped``, reason ``breaker``, one critical alert),
   re-checked on fresh data (a fresh get-instance and fresh metrics; the condition must still
   hold and status, billing mode and ``lastStartedAt`` be unchanged, else ``aborted``), claimed
   with a compare-and-set (``executing``, committed before the call), then the API is called
   and the outcome recorded: ``succeeded``, ``failed`` (an error answer, incl. a 2xx body with
   ``reason``/``error``/non-zero ``code``), or ``outcome_unknown`` (a POST answered 5xx or
   timed out: never retried blindly, reconciled by reading the instance). A row found
   ``executing`` at start (a crash mid-call) is reconciled the same way, never called again.
   Each outcome is verified later (a stop reaches ``exited`` within 5 min; a renew moves
   ``endTime``; a convert makes ``billingMode`` monthly), else an alert.
   A silence on the rule and instance (added during the grace, as the announcement says) holds
   a due row (``skipped``, reason ``silenced``); a POST that certainly never left (a connect
   error) ends ``aborted``, releasing the intent.

3. **Savings** (gross, the compute price not paid): a stop records the hourly cost it saves
   (``saving_per_hour_usd``) from ``saving_since``; when the instance runs again (by anyone)
   ``saving_until`` and ``realized_saving_usd`` close it; still-stopped instances accrue.

Storage and its guarantees: :mod:`monitor.store.ledger`. Every figure (hourly cost, runway
after a charge) comes from :mod:`monitor.economics` through the facts; an action acts only on
figures that pass their bounds.
"""

#: the actions a rule may ask for
ACTION_KINDS = ("stop", "start", "renew", "convert_to_subscription", "set_auto_renew")

#: the README's canonical automatic-idle-shutdown rule ("Automatic idle shutdown"), as a rule
#: file: what the demo, ``bench rules --with-stop-rule`` and the end-to-end tests run
STOP_IDLE_GPUS = """\
rules:
  - name: stop-idle-gpus
    resource: instance
    when: {idle_gpu: {window: 45m, threshold: 5}}
    actions:
      - stop: {grace: 15m}
"""
