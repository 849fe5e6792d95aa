"""The simulated Novita API as a Starlette (ASGI) app over a :class:`FleetSim`.

Paths, parameters and JSON shapes follow ``shared/novita-api/wire-format.md``. Quirks emitted on
purpose (each one is covered by ``tests/test_sim_quirks.py`` or ``tests/test_sim_wire.py``):

1. Numbers as strings: instance ``gpuNum``, ``cpuNum``, ``memory``, ``endTime``, ``createdAt``;
   all balance and bill money; bill ``startTime``/``endTime``; metric ``timestamp``. But
   ``/v3/user`` ``credit_balance``, product ``price``, ``rootfsSize``, training ``created_at``
   are numbers, and ``spotPrice`` is a string while ``price`` is a number.
2. ``""`` for null: ``billingMode`` (the ``pending`` instance), ``spotStatus`` (non-spot),
   ``lastStartedAt``/``lastStoppedAt`` when never started/stopped.
3. ``endTime`` ``"-1"`` (pay-as-you-go) and ``"0"`` (stopped and pending instances): both mean no
   expiry.
4. The undocumented ``pending`` status (``demo-pending``).
5. ``cpuUtilization`` summed over cores (up to 100 x ``cpuNum``; quirk ``cpu``).
6. Metric lag: no point newer than now - 60 s (quirk ``metric-lag``).
7. Invalid or short metric windows silently replaced by the defaults (last 60 s, interval 15).
8. Unknown extra keys, in no documentation, that clients must ignore: on instances
   (``instanceGroupId``, ``maintainStatus``), usage bills (``amountDecimal``, which only the
   console's internal Bill type has), products (``gpuMemory``), balance (``currency``),
   ``/v3/user`` ``free_trial`` (its key ``gpu_instance``: the keys are undocumented).
   Instances also carry ``autoRenew``, ``autoRenewMonth`` and ``keepDataDay`` (list and get),
   which only the console reads (wire-format §7.4, §7.5).
9. Three money scales: 1/10000 USD (balance, ``credit_balance``, bill amounts), 1/100000 USD
   (product ``price``, ``monthlyPrice[].price``, ``spotPrice``), USD (bill ``payAmountDisplay``).
   Bills' unit prices (``discountPrice0``, ``basePrice0``, fixed-term ``basePrice``) are
   1/10000 USD times ``pricePrecision`` (quirk ``price-precision``); ``discountPrice0`` is per
   card-hour whatever ``billNum0``'s unit (card-seconds by default: quirk ``bill-time``).
   Spot usage bills have ``billingMethod`` 4 (wire-format §7.6), other usage bills 1.
10. 429 ``RATE_LIMIT_EXCEEDED`` without ``Retry-After``.
11. ``volumeMounts[].size`` a string in the list, an int in the get response.
12. Business errors are HTTP 400 whatever they mean (``RESOURCE_NOT_FOUND``,
    ``BALANCE_NOT_ENOUGH``, ...): branch on ``reason``.
13. ``pageNum`` is 1-based and ``pageNum=0`` reads as page 1, so pages 0 and 1 are the same
    (the open 0/1 question, answered adversarially; quirk ``page-base=0`` makes them 0-based);
    ``total`` is always present. Same for the storage list's ``pageNo``.

Every reading no source settles is a switch (:mod:`monitor.sim.quirks`): ``bill-time``,
``monthly-price``, ``price-basis``, ``price-precision``, ``page-base``, ``metric-ts``, ``cpu``,
``metric-lag``; the positions live on the model (``FleetSim(quirks=...)``).

Auth: ``Authorization: Bearer <key>``. Missing -> 401 ``UNAUTHORIZED``; with ``api_key`` set, a
different key -> 403 ``INVALID_API_KEY``; with ``api_key=None`` any non-empty key is accepted.

Errors use the envelope ``{"code", "reason", "message", "metadata"}``.

Actions (``POST /gpu-instance/openapi/v1/gpu/instance/<name>``) answer ``{}`` when carried out
and change the model over simulated time as the platform does (:mod:`monitor.sim.fleet`'s
docstring: transitions, renewals and their bills, auto-renew and its fall-back to
pay-as-you-go, ``BALANCE_NOT_ENOUGH``, the month counts offered, a stop of a subscription).

Fault switches (:mod:`monitor.sim.faults`), set in-process on ``app.state.faults`` or through
``POST /_sim/faults``; each entry is used up by its ``count``:

* ``fail_next`` / ``faults.fail_next(path_prefix, status, reason, count)``: answered with an
  error *before* reaching the model (nothing is done);
* ``action_5xx_after`` / ``faults.fail_after(path_prefix, count=1, status=500,
  reason="UNKNOWN")``: the action is carried out, then answered 5xx;
* ``action_error_body`` / ``faults.error_body_next(path_prefix, body=None, count=1,
  performed=False, status=200)``: a 2xx whose body is an error, ``{"code": 1, "reason": ...,
  "message": ...}`` by default or any object such as ``{"error": "..."}``; carried out first
  only with ``performed: true``;
* ``stuck_stop`` / ``faults.stick_stop(instance_id=None, count=1)``: a stop accepted that never
  completes (the instance stays ``stopping``);
* ``action_delay`` / ``faults.delay_next(path_prefix, seconds, count=1)``: carried out, then
  the answer held ``seconds`` of real time (a daemon stopped or killed mid-call);
* and the random ones: ``error_rate`` (5xx before the model), ``timeout_rate`` (the answer
  withheld ``hang_seconds`` *after* the model acted), ``malformed_rate``, ``latency_ms``,
  ``rate_limit_rps``, ``max_concurrency``.

Example: ``POST /_sim/faults {"action_5xx_after": {"path_prefix":
"/gpu-instance/openapi/v1/gpu/instance/renewInstance", "count": 1}}``.

The action log, ``GET /_sim/actions`` -> ``{"actions": [...]}``, oldest first: every action
request received, those refused by auth, the rate limit or a fault included, logged on
arrival (so a client that timed out still finds it): ``time`` (simulated clock, ISO 8601),
``path`` (the action's name, e.g. ``renewInstance``), ``body`` (its JSON), ``status`` and
``answer`` (the HTTP status and JSON body given; for a withheld answer, the one held back),
``result`` (``"ok"`` or the answer's ``reason``), ``message``, ``performed`` (whether the model
carried it out: count these for "exactly one renew"), ``fault`` (the switch that shaped the
answer, or null), ``answered`` (false while the answer is held back, e.g. by ``action_delay``).

Control endpoints under ``/_sim/`` (no auth, no faults; not part of the Novita API):
``GET /_sim/clock`` (``now``, ``unix``, ``speed``: null for a clock moved only by hand),
``POST /_sim/clock/advance {"seconds"}``, ``POST /_sim/clock/set {"time"}``,
``POST /_sim/profile {"instance_id", "profile"}``, ``POST /_sim/instances {"id", "name",
"gpus", "product", "billing_mode", "profile", "running_for", "envs", "cluster"}`` (a new running
instance with that past, ``envs`` its environment: :meth:`FleetSim.add_instance`; answers the
instance as get-instance shows it), ``GET /_sim/actions``,
``POST /_sim/topup {"usd"}`` (add credit; the balance may go negative, nothing is stopped),
``GET|POST /_sim/faults``, ``GET /_sim/stats``, ``POST /_sim/stats/reset``, ``GET /_sim/summary``,
``GET|POST /_sim/quirks`` (POST ``{"bill-time": "hours", ...}`` changes switches; an unknown key or
value is a 400 naming it), ``GET /_sim/truth[?since=T]`` and ``GET /_sim/truth/metrics``
(the ground truth, :mod:`monitor.sim.truth`), and an apprise ``json://`` sink: ``POST /_sim/notify`` records the body,
``GET /_sim/notifications`` lists them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response
from starlette.routing import Route

from monitor.sim import wire
from monitor.sim.faults import Faults, TokenBucket
from monitor.sim.fleet import DAY, FleetSim, SimError, error_body
from monitor.sim.quirks import QuirkError
from monitor.sim.truth import metrics_truth, truth_json

__all__ = ["Faults", "create_app"]

GPU = "/gpu-instance/openapi/v1"
ACTIONS = (
    "stop",
    "start",
    "restart",
    "delete",
    "renewInstance",
    "transToMonthlyInstance",
    "setAutoRenew",
)

Handler = Callable[[Request], Awaitable[Any]]


class JSONResponse(_StarletteJSON):
    """Starlette's JSON answer encoded by orjson: a metrics answer in a tenth of json's time
    (the backtest serves a hundred thousand of them). Non-string keys become strings, as
    json.dumps made them."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error_response(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, reason, message), status_code=status)


def _note_fault(request: Request, fault: str) -> None:
    """Name the fault that shaped an action's answer in its log entry."""
    entry = getattr(request.state, "action_entry", None)
    if entry is not None:
        entry["fault"] = fault


def _answered(entry: dict[str, Any], response: Response) -> None:
    """Complete an action's log entry with the answer given."""
    raw = bytes(response.body)
    try:
        answer: Any = json.loads(raw) if raw else {}
    except ValueError:
        answer = raw.decode("utf-8", "replace")
    entry["status"] = response.status_code
    entry["answer"] = answer
    entry["answered"] = True
    reason = answer.get("reason") if isinstance(answer, dict) else None
    if reason:
        entry["result"] = reason
        entry["message"] = str(answer.get("message", ""))
    elif 200 <= response.status_code < 300:
        entry["result"] = "ok"
    else:
        entry["result"] = f"HTTP {response.status_code}"


class Stats:
    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.in_flight = 0
        self.max_in_flight = 0

    def record(self, path: str, status: int) -> None:
        self.counts[path][str(status)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": {p: dict(s) for p, s in self.counts.items()},
            "total": sum(sum(s.values()) for s in self.counts.values()),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


class Gate:
    """Auth, rate limit, forced failures, the concurrency queue, latency and random faults."""

    def __init__(self, faults: Faults, api_key: str | None, stats: Stats) -> None:
        self.faults = faults
        self.api_key = api_key
        self.stats = stats
        self.bucket = TokenBucket()
        self._sem: asyncio.Semaphore | None = None
        self._sem_key: tuple[int, int] | None = None

    def _semaphore(self) -> asyncio.Semaphore | None:
        limit = self.faults.max_concurrency
        if limit <= 0:
            return None
        key = (limit, id(asyncio.get_running_loop()))
        if self._sem is None or self._sem_key != key:
            self._sem, self._sem_key = asyncio.Semaphore(limit), key
        return self._sem

    def _auth(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return error_response(401, "UNAUTHORIZED", "missing or malformed API key")
        if self.api_key is not None and not hmac.compare_digest(key, self.api_key):
            return error_response(403, "INVALID_API_KEY", "API key validation failed")
        return None

    async def run(self, request: Request, handler: Handler) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        f = self.faults
        if not self.bucket.allow(f.rate_limit_rps):
            return error_response(429, "RATE_LIMIT_EXCEEDED", "request rate limit exceeded")
        forced = f.take_forced(request.url.path)
        if forced is not None:
            _note_fault(request, "fail_next")
            return error_response(forced.status, forced.reason, "injected failure")
        sem = self._semaphore()
        if sem is None:
            return await self._serve(request, handler)
        async with sem:
            return await self._serve(request, handler)

    async def _serve(self, request: Request, handler: Handler) -> Response:
        f = self.faults
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            if f.latency_ms > 0:
                await asyncio.sleep(f.latency_ms / 1000)
            if f.draw(f.error_rate):
                status, reason = f.pick(((500, "UNKNOWN"), (503, "SERVICE_NOT_AVAILABLE")))
                _note_fault(request, "error_rate")
                return error_response(status, reason, "injected server error")
            response = await _call(request, handler)
            if f.draw(f.timeout_rate):
                # the work is done, the answer never arrives in time (an "outcome unknown")
                _note_fault(request, "timeout_rate")
                await asyncio.sleep(f.hang_seconds)
            if response.status_code == 200 and f.draw(f.malformed_rate):
                _note_fault(request, "malformed_rate")
                body = bytes(response.body)
                return Response(
                    body[: max(1, len(body) // 2)], status_code=200, media_type="application/json"
                )
            return response
        finally:
            self.stats.in_flight -= 1


async def _off_loop(build: Callable[[], Any]) -> Response:
    """A whole-fleet answer (bills, balance) computed and encoded in a worker thread: tens of
    milliseconds for a fleet of a thousand, during which the event loop keeps serving the
    requests already in flight, as a real API's other servers would."""
    return await asyncio.to_thread(lambda: JSONResponse(build()))


async def _call(request: Request, handler: Handler) -> Response:
    try:
        result = await handler(request)
    except SimError as exc:
        return error_response(exc.status, exc.reason, exc.message)
    except Exception as exc:  # a simulator bug still answers in the envelope
        return error_response(500, "UNKNOWN", f"simulator error: {type(exc).__name__}")
    if isinstance(result, Response):
        return result
    return JSONResponse(result)


# ------------------------------------------------------------------------------ query helpers


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SimError(400, "VALIDATOR_PARAM", f"{name} must be an integer") from None


def _lenient_int(request: Request, name: str) -> int | None:
    """For the metrics endpoint: an invalid value is as good as a missing one."""
    try:
        return _int(request, name)
    except SimError:
        return None


def _str(request: Request, name: str) -> str:
    return request.query_params.get(name, "")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise SimError(400, "INVALID_REQUEST_BODY", "request body is not valid JSON") from None


def _bill_window(request: Request, now: int) -> tuple[int, int]:
    start = _int(request, "startTime", 0) or 0
    end = _int(request, "endTime", 0) or 0
    if end <= 0:
        end = now
    if start <= 0:
        start = end - wire.MAX_BILL_WINDOW
    if start > end:
        raise SimError(400, "VALIDATOR_PARAM", "startTime must not be after endTime")
    if end - start > wire.MAX_BILL_WINDOW:
        raise SimError(400, "VALIDATOR_PARAM", "the time range must not exceed 31 days")
    return start, end


# ------------------------------------------------------------------------------ the app


def create_app(
    sim: FleetSim, faults: Faults | None = None, api_key: str | None = None
) -> Starlette:
    """Build the ASGI app. ``app.state`` holds ``sim``, ``faults``, ``stats``, ``notifications``."""
    faults = faults or Faults()
    stats = Stats()
    gate = Gate(faults, api_key, stats)
    notifications: list[dict[str, Any]] = []

    def api(path: str, handler: Handler, method: str = "GET", action: str = "") -> Route:
        async def endpoint(request: Request) -> Response:
            entry: dict[str, Any] | None = None
            if action:  # logged on arrival, whatever becomes of it
                raw = await request.body()
                try:
                    sent: Any = json.loads(raw) if raw else {}
                except ValueError:
                    sent = raw.decode("utf-8", "replace")
                entry = sim.action_entry(action, sent)
                request.state.action_entry = entry
                sim.log_action(entry)
            response = await gate.run(request, handler)
            stats.record(path, response.status_code)
            if entry is not None:
                _answered(entry, response)
            return response

        return Route(path, endpoint, methods=[method])

    # --- instances
    async def list_instances(request: Request) -> Any:
        page_size = _int(request, "pageSize", 10) or 0
        page_num = _int(request, "pageNum", 0) or 0
        if page_size < 0 or page_num < 0:
            raise SimError(400, "VALIDATOR_PARAM", "pageSize and pageNum must be >= 0")
        return wire.instances_page(
            sim,
            page_size,
            page_num,
            _str(request, "name"),
            _str(request, "productName"),
            _str(request, "status"),
        )

    async def get_instance(request: Request) -> Any:
        iid = _str(request, "instanceId")
        if not iid:
            raise SimError(400, "VALIDATOR_PARAM", "instanceId is required")
        return wire.instance_json(sim.instance(iid), detail=True)

    async def metrics(request: Request) -> Any:
        iid = _str(request, "instanceId")
        if not iid:
            raise SimError(400, "VALIDATOR_PARAM", "instanceId is required")
        inst = sim.instance(iid)
        start, end, interval = wire.metric_window(
            sim.now_ts(),
            _lenient_int(request, "startTime"),
            _lenient_int(request, "endTime"),
            _lenient_int(request, "interval"),
        )
        return wire.metrics_json(sim, inst, start, end, interval)

    # --- money
    async def balance(request: Request) -> Any:
        return await _off_loop(lambda: wire.balance_detail_json(sim))

    async def user(request: Request) -> Any:
        return wire.user_json(sim)

    async def bill_list(request: Request) -> Any:
        cycle = _str(request, "cycleType")
        if cycle not in wire.BILL_CYCLES:
            raise SimError(400, "INVALID_BILL_CYCLE", f"invalid cycleType {cycle!r}")
        category = _str(request, "productCategory")
        if category not in wire.USAGE_CATEGORIES:
            raise SimError(400, "INVALID_PRODUCT_CATEGORY", f"invalid productCategory {category!r}")
        start, end = _bill_window(request, sim.now_ts())
        owner, product = _str(request, "ownerId"), _str(request, "productName")
        return await _off_loop(
            lambda: {"bills": wire.usage_bills(sim, cycle, category, start, end, owner, product)}
        )

    async def monthly_bill_list(request: Request) -> Any:
        category = _str(request, "category") or "summary"
        if category not in wire.FIXED_CATEGORIES:
            raise SimError(400, "INVALID_PRODUCT_CATEGORY", f"invalid category {category!r}")
        start, end = _bill_window(request, sim.now_ts())
        owner, product = _str(request, "ownerId"), _str(request, "productName")
        return await _off_loop(
            lambda: {"bills": wire.fixed_bills(sim, category, start, end, owner, product)}
        )

    # --- catalog
    async def products(request: Request) -> Any:
        return wire.products_json(
            _str(request, "clusterId"), _str(request, "productName"), sim.quirks
        )

    async def cpu_products(request: Request) -> Any:
        return wire.cpu_products_json(_str(request, "productName"))

    async def clusters(request: Request) -> Any:
        return wire.clusters_json()

    async def storages(request: Request) -> Any:
        first = sim.quirks.first_page
        page_no = _int(request, "pageNo", first)
        return wire.storages_json(
            first if page_no is None else page_no, _int(request, "pageSize", 10) or 10, sim.quirks
        )

    # --- tasks
    async def training(request: Request) -> Any:
        limit = _int(request, "pagination.limit", 10) or 10
        return wire.training_json(sim, limit, _str(request, "pagination.cursor"))

    async def async_result(request: Request) -> Any:
        task_id = _str(request, "task_id")
        if not task_id:
            raise SimError(400, "INVALID_REQUEST_BODY", "task_id is required")
        return wire.async_result_json(sim, task_id)

    # --- actions
    def action(name: str) -> Handler:
        path = f"{GPU}/gpu/instance/{name}"

        async def handler(request: Request) -> Any:
            entry: dict[str, Any] = request.state.action_entry
            body = await _json_body(request)
            shaped = faults.peek_error_body(path)
            if shaped is not None and not shaped.performed:
                faults.take_error_body(path)
                entry["fault"] = "action_error_body"
                return JSONResponse(shaped.body, status_code=shaped.status)
            iid = body.get("instanceId") if isinstance(body, dict) else None
            stuck = name == "stop" and isinstance(iid, str) and faults.stop_sticks(iid)
            result = sim.perform(name, body, stuck=stuck, entry=entry)  # SimError: answered
            if stuck and isinstance(iid, str):
                faults.take_stuck_stop(iid)
                entry["fault"] = "stuck_stop"
            shaped = faults.take_error_body(path)
            if shaped is not None:  # performed first (``performed: true``)
                entry["fault"] = "action_error_body"
                return JSONResponse(shaped.body, status_code=shaped.status)
            delay = faults.take_delay(path)
            if delay is not None:  # carried out; the answer comes late
                entry["fault"] = "action_delay"
                await asyncio.sleep(delay.seconds)
            after = faults.take_after(path)
            if after is not None:
                entry["fault"] = "action_5xx_after"
                return error_response(
                    after.status, after.reason, "injected: carried out, then the answer failed"
                )
            return result

        return handler

    # --- control
    async def clock_get(request: Request) -> Response:
        speed = getattr(sim.clock, "speed", None)  # None: a clock moved only by hand
        return JSONResponse(
            {"now": sim.clock.now().isoformat(), "unix": sim.now_ts(), "speed": speed}
        )

    async def clock_advance(request: Request) -> Response:
        body = await request.json()
        advance = getattr(sim.clock, "advance", None)
        if advance is None:
            return error_response(400, "VALIDATOR_PARAM", "this clock cannot be moved")
        advance(seconds=float(body.get("seconds", 0)))
        return await clock_get(request)

    async def clock_set(request: Request) -> Response:
        body = await request.json()
        setter = getattr(sim.clock, "set", None)
        if setter is None:
            return error_response(400, "VALIDATOR_PARAM", "this clock cannot be set")
        setter(datetime.fromisoformat(str(body["time"]).replace("Z", "+00:00")))
        return await clock_get(request)

    async def profile(request: Request) -> Response:
        body = await request.json()
        try:
            sim.set_profile(str(body["instance_id"]), str(body["profile"]))
        except SimError as exc:
            return error_response(exc.status, exc.reason, exc.message)
        except (KeyError, ValueError) as exc:
            return error_response(400, "VALIDATOR_PARAM", str(exc))
        return JSONResponse({"ok": True})

    async def add_instance(request: Request) -> Response:
        body = await request.json()
        if not isinstance(body, dict):
            return error_response(400, "VALIDATOR_PARAM", "body must be an object")
        known = {"id", "name", "gpus", "product", "billing_mode", "profile", "running_for",
                 "envs", "cluster"}  # fmt: skip
        unknown = sorted(set(body) - known)
        if unknown:
            return error_response(400, "VALIDATOR_PARAM", f"unknown keys {unknown}")
        envs = body.get("envs") or {}
        if not isinstance(envs, dict):
            return error_response(400, "VALIDATOR_PARAM", "envs must be an object of strings")
        fields = {k: v for k, v in body.items() if k not in ("id", "envs")}
        try:
            inst = sim.add_instance(str(body.get("id") or ""), envs=envs, **fields)
        except (TypeError, ValueError) as exc:
            return error_response(400, "VALIDATOR_PARAM", str(exc))
        return JSONResponse(wire.instance_json(inst, detail=True))

    async def top_up(request: Request) -> Response:
        body = await request.json()
        sim.top_up(round(float(body["usd"]) * 10000))
        return JSONResponse({"balance_usd": sim.balance_10k() / 10000})

    async def actions_log(request: Request) -> Response:
        return JSONResponse({"actions": list(sim.actions)})

    async def faults_endpoint(request: Request) -> Response:
        if request.method == "POST":
            try:
                faults.update(await request.json())
            except (KeyError, ValueError, TypeError) as exc:
                return error_response(400, "VALIDATOR_PARAM", str(exc))
        return JSONResponse(faults.as_dict())

    async def stats_get(request: Request) -> Response:
        return JSONResponse(stats.as_dict())

    async def stats_reset(request: Request) -> Response:
        stats.counts.clear()
        stats.max_in_flight = stats.in_flight
        return JSONResponse(stats.as_dict())

    async def summary(request: Request) -> Response:
        return JSONResponse(
            {
                "now": sim.clock.now().isoformat(),
                "scenario": sim.scenario,
                "instances": len(sim.instances()),
                "balance_usd": sim.balance_10k() / 10000,
                "burn_usd_per_hour": sim.burn_10k_per_hour() / 10000,
            }
        )

    async def quirks_endpoint(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise QuirkError("body must be an object of quirk keys and values")
                sim.set_quirks(body)
            except (QuirkError, ValueError) as exc:
                return error_response(400, "VALIDATOR_PARAM", str(exc))
        return JSONResponse(sim.quirks.as_dict())

    def _time_param(request: Request, name: str) -> int | None:
        raw = request.query_params.get(name, "").strip()
        if not raw:
            return None
        try:
            return int(float(raw))
        except ValueError:
            return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp())

    async def truth(request: Request) -> Response:
        try:
            since = _time_param(request, "since")
        except ValueError as exc:
            return error_response(400, "VALIDATOR_PARAM", f"since: {exc}")
        return JSONResponse(await asyncio.to_thread(truth_json, sim, since))

    async def truth_metrics(request: Request) -> Response:
        try:
            iid = _str(request, "instanceId")
            start, end = _time_param(request, "start"), _time_param(request, "end")
            interval = _int(request, "interval", 60) or 60
            if not iid or start is None or end is None:
                raise ValueError("instanceId, start and end are required")
            return JSONResponse(metrics_truth(sim, iid, start, end, interval))
        except SimError as exc:
            return error_response(exc.status, exc.reason, exc.message)
        except ValueError as exc:
            return error_response(400, "VALIDATOR_PARAM", str(exc))

    async def notify(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        notifications.append({"time": sim.clock.now().isoformat(), "body": body})
        return JSONResponse({})

    async def notifications_get(request: Request) -> Response:
        return JSONResponse({"notifications": list(notifications)})

    async def not_found(request: Request) -> Response:
        response = error_response(404, "API_NOT_FOUND", f"no such API: {request.url.path}")
        stats.record("(unknown)", 404)
        return response

    routes = [
        api(f"{GPU}/gpu/instances", list_instances),
        api(f"{GPU}/gpu/instance", get_instance),
        api("/openapi/v1/metrics/gpu/instance", metrics),
        api("/openapi/v1/billing/balance/detail", balance),
        api("/v3/user", user),
        api("/openapi/v1/billing/bill/list", bill_list),
        api("/openapi/v1/billing/bill/monthly/list", monthly_bill_list),
        api(f"{GPU}/products", products),
        api(f"{GPU}/cpu/products", cpu_products),
        api(f"{GPU}/clusters", clusters),
        api(f"{GPU}/networkstorages/list", storages),
        api("/v3/training", training),
        api("/v3/async/task-result", async_result),
        *(api(f"{GPU}/gpu/instance/{name}", action(name), "POST", name) for name in ACTIONS),
        Route("/_sim/clock", clock_get, methods=["GET"]),
        Route("/_sim/clock/advance", clock_advance, methods=["POST"]),
        Route("/_sim/clock/set", clock_set, methods=["POST"]),
        Route("/_sim/profile", profile, methods=["POST"]),
        Route("/_sim/instances", add_instance, methods=["POST"]),
        Route("/_sim/actions", actions_log, methods=["GET"]),
        Route("/_sim/topup", top_up, methods=["POST"]),
        Route("/_sim/faults", faults_endpoint, methods=["GET", "POST"]),
        Route("/_sim/stats", stats_get, methods=["GET"]),
        Route("/_sim/stats/reset", stats_reset, methods=["POST"]),
        Route("/_sim/summary", summary, methods=["GET"]),
        Route("/_sim/quirks", quirks_endpoint, methods=["GET", "POST"]),
        Route("/_sim/truth", truth, methods=["GET"]),
        Route("/_sim/truth/metrics", truth_metrics, methods=["GET"]),
        Route("/_sim/notify", notify, methods=["POST"]),
        Route("/_sim/notifications", notifications_get, methods=["GET"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    app.state.faults = faults
    app.state.stats = stats
    app.state.notifications = notifications
    app.state.max_bill_window_days = wire.MAX_BILL_WINDOW // DAY
    return app
