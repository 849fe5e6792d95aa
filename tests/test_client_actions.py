"""How the client reads the answers to actions (issue 9 §4 "Outcomes"): against scripted
answers (``httpx.MockTransport``), then against the simulator in-process and on a real socket.

A 2xx body carrying ``reason``, ``error`` or a non-zero ``code`` is not success; a POST answered
5xx or timed out is an outcome unknown after exactly one send; ``BALANCE_NOT_ENOUGH`` is its own
class; every error keeps the answer for the ledger.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.clock import ManualClock
from monitor.novita import errors as E
from monitor.novita.client import NovitaClient, RetryPolicy, renewal_bills_for
from monitor.novita.models import FixedTermBill
from monitor.sim import FleetSim, SimServer
from monitor.sim.fleet import add_months

KEY = "sk-act-Jw4nSECRETkey5566778899"
GPU = "/gpu-instance/openapi/v1"
ACT = f"{GPU}/gpu/instance"
RENEW = f"{ACT}/renewInstance"
STOP = f"{ACT}/stop"
FIXED = "/openapi/v1/billing/bill/monthly/list"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Script:
    """Answers each request with the next response (or raises the next exception)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, type) and issubclass(answer, Exception):
            raise answer("scripted", request=request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)


def mock_client(script: Script, sleeps: Sleeps | None = None) -> NovitaClient:
    retry = RetryPolicy(sleep=Sleeps() if sleeps is None else sleeps, random=lambda: 1.0)
    return NovitaClient(KEY, "https://api.test", transport=httpx.MockTransport(script), retry=retry)


# ------------------------------------------------------------------------------ 2xx bodies


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"code": 0},
        {"code": "0", "message": "success"},
        {"reason": "", "error": None},
        {"error": ""},
        {"data": {"instanceId": "i1"}},
    ],
    ids=json.dumps,
)
async def test_2xx_bodies_without_an_error_are_success(body: dict[str, Any]) -> None:
    script = Script(httpx.Response(200, json=body))
    async with mock_client(script) as client:
        assert await client.stop_instance("i1") == body
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("body", "cls", "reason"),
    [
        (
            {"code": 1, "reason": "BALANCE_NOT_ENOUGH", "message": "top up"},
            E.InsufficientBalanceError,
            "BALANCE_NOT_ENOUGH",
        ),
        (
            {"code": 400, "reason": "DEPENDENT_RESOURCE_STATE", "message": "busy"},
            E.InvalidRequestError,
            "DEPENDENT_RESOURCE_STATE",
        ),
        (
            {"code": 1, "reason": "SOMETHING_NEW", "message": "?"},
            E.InvalidRequestError,
            "SOMETHING_NEW",
        ),
        ({"reason": "RESOURCE_NOT_FOUND"}, E.NotFoundError, "RESOURCE_NOT_FOUND"),
        ({"reason": 5}, E.InvalidRequestError, "5"),
        ({"error": "renewal failed"}, E.InvalidRequestError, None),
        ({"error": {"message": "bad month", "type": "invalid"}}, E.InvalidRequestError, None),
        ({"code": 7}, E.InvalidRequestError, None),
        ({"code": "FAILED", "message": "no"}, E.InvalidRequestError, None),
        ({"code": 403, "message": "denied"}, E.AuthenticationError, None),
        ({"code": 404}, E.NotFoundError, None),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
async def test_2xx_with_an_error_body_raises_the_mapped_error(
    body: dict[str, Any], cls: type[E.APIError], reason: str | None
) -> None:
    script = Script(httpx.Response(200, json=body), httpx.Response(200, json={}))
    async with mock_client(script) as client:
        with pytest.raises(cls) as info:
            await client.renew_instance("i1", 1)
    assert type(info.value) is cls
    assert len(script.requests) == 1  # a refusal is not retried
    err = info.value
    assert (err.status, err.reason, err.path, err.method) == (200, reason, RENEW, "POST")
    assert err.answer == body
    assert "error in its body" in err.message


@pytest.mark.parametrize(
    "body",
    [{"code": 500, "reason": "UNKNOWN", "message": "oops"}, {"code": 503}, {"reason": "UNKNOWN"}],
    ids=json.dumps,
)
async def test_2xx_naming_a_server_error_is_an_unknown_outcome(body: dict[str, Any]) -> None:
    script = Script(httpx.Response(200, json=body))
    async with mock_client(script) as client:
        with pytest.raises(E.OutcomeUnknownError) as info:
            await client.renew_instance("i1", 1)
    assert len(script.requests) == 1
    assert isinstance(info.value.underlying, E.ServerError | E.UnavailableError)
    assert info.value.answer == body and info.value.status == 200


async def test_2xx_naming_a_rate_limit_is_retried_like_a_429() -> None:
    sleeps = Sleeps()
    limited = {"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": "slow down"}
    script = Script(httpx.Response(200, json=limited), httpx.Response(200, json={}))
    async with mock_client(script, sleeps) as client:
        assert await client.stop_instance("i1") == {}
    assert len(script.requests) == 2 and sleeps == [0.5]


async def test_reads_do_not_look_for_error_bodies() -> None:
    """Only actions: a read's body is parsed by its model (``reason`` is a field of some)."""
    script = Script(
        httpx.Response(
            200, json={"task": {"task_id": "a", "reason": "x", "status": "TASK_STATUS_FAILED"}}
        )
    )
    async with mock_client(script) as client:
        assert (await client.get_async_task("a")).reason == "x"


async def test_error_body_is_logged_and_the_key_scrubbed() -> None:
    body = {"code": 1, "reason": "OPERATION_LIMIT", "message": f"key {KEY} may not"}
    script = Script(httpx.Response(200, json=body))
    with capture_logs() as logs:
        async with mock_client(script) as client:
            with pytest.raises(E.InvalidRequestError) as info:
                await client.stop_instance("i1")
    assert any(e["event"] == "novita.action_error_body" for e in logs)
    assert KEY not in str(info.value) and KEY not in json.dumps(info.value.answer)
    assert info.value.answer == {**body, "message": "key *** may not"}


# ------------------------------------------------------------------------------ errors and outcomes


async def test_balance_not_enough_has_its_own_class() -> None:
    body = {"code": 400, "reason": "BALANCE_NOT_ENOUGH", "message": "insufficient", "metadata": {}}
    script = Script(httpx.Response(400, json=body))
    async with mock_client(script) as client:
        with pytest.raises(E.InsufficientBalanceError) as info:
            await client.convert_to_monthly("i1", 1)
    assert not isinstance(info.value, E.InvalidRequestError | E.OutcomeUnknownError)
    assert (info.value.status, info.value.reason, info.value.answer) == (
        400,
        "BALANCE_NOT_ENOUGH",
        body,
    )
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        (httpx.Response(502, text="bad gateway"), {"raw": "bad gateway"}),
        (
            httpx.Response(500, json={"code": 500, "reason": "UNKNOWN", "message": "m"}),
            {"code": 500, "reason": "UNKNOWN", "message": "m"},
        ),
        (httpx.ReadTimeout, None),
    ],
)
async def test_unknown_outcome_after_one_send_keeps_the_answer(answer: Any, kept: Any) -> None:
    sleeps = Sleeps()
    script = Script(answer, httpx.Response(200, json={}))
    async with mock_client(script, sleeps) as client:
        with pytest.raises(E.OutcomeUnknownError) as info:
            await client.set_auto_renew(["i1"], True, 1)
        assert client.requests_sent == 1
    assert len(script.requests) == 1 and sleeps == []
    assert info.value.answer == kept


# ------------------------------------------------------------------------------ renewal bills


def bill(**kw: Any) -> FixedTermBill:
    base = {"ownerID": "i1", "tradeType": "monthly_re_buy", "startTime": "1795000000"}
    return FixedTermBill.model_validate({**base, **kw})


def test_renewal_bills_for_a_period() -> None:
    end = datetime.fromtimestamp(1795000000, UTC)
    bills = [
        bill(),  # this period
        bill(startTime=str(1795000000 + 3600)),  # an hour off: the same period
        bill(tradeType="monthly_new_buy"),  # a purchase, not a renewal
        bill(tradeType="monthly_re_config"),  # an expansion
        bill(startTime=str(1795000000 - 31 * 86400)),  # the period before
        bill(tradeType=""),  # unknown trade type: counts (a wrong "no" pays twice)
        bill(startTime=""),  # unknown period: counts
    ]
    found = renewal_bills_for(bills, end)
    assert found == [bills[0], bills[1], bills[5], bills[6]]
    assert renewal_bills_for(bills[:1], end + timedelta(days=2)) == []


async def test_instance_fixed_term_bills_are_asked_by_owner() -> None:
    answer = {
        "bills": [
            {"ownerID": "i1", "tradeType": "monthly_re_buy", "startTime": "1795000000"},
            {"ownerID": "other", "tradeType": "monthly_re_buy", "startTime": "1795000000"},
            {"tradeType": "monthly_re_buy", "startTime": "1795000000"},
        ]
    }
    script = Script(httpx.Response(200, json=answer))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with capture_logs() as logs:
        async with mock_client(script) as client:
            bills = await client.list_instance_fixed_term_bills(
                "i1", start, start + timedelta(days=40)
            )
    assert [b.owner_id for b in bills] == ["i1", None]  # the same bills came in both windows
    assert len(script.requests) == 2  # 40 days: two windows
    params = dict(script.requests[0].url.params)
    assert (params["ownerId"], params["category"]) == ("i1", "gpu")
    assert script.requests[0].url.path == FIXED
    assert any(e["event"] == "novita.owner_filter_ignored" for e in logs)
    with pytest.raises(ValueError):
        async with mock_client(script) as client:
            await client.list_instance_fixed_term_bills("", start, start + timedelta(days=1))


# ------------------------------------------------------------------------------ against the simulator


@pytest.fixture(params=["asgi", "socket"])
async def sim_client(
    request: pytest.FixtureRequest, sim_app: Any, clock: ManualClock
) -> AsyncIterator[NovitaClient]:
    retry = RetryPolicy(sleep=Sleeps(), random=lambda: 1.0)
    if request.param == "asgi":
        transport: httpx.AsyncBaseTransport | None = httpx.ASGITransport(app=sim_app)
        base = "http://sim.test"
    else:
        server: SimServer = request.getfixturevalue("sim_server")
        transport, base = None, server.url
    async with NovitaClient(
        KEY, base, transport=transport, retry=retry, clock=clock, timeout=5.0
    ) as c:
        yield c


def performed(sim: FleetSim, path: str) -> int:
    return sum(1 for a in sim.actions if a["path"] == path and a["performed"])


async def test_get_instance_carries_what_the_act_step_checks(
    sim_client: NovitaClient, demo_sim: FleetSim
) -> None:
    demo_sim.top_up(10_000_000)
    assert await sim_client.set_auto_renew(["demo-lapsing"], True, 3) == {}
    inst = await sim_client.get_instance("demo-lapsing")
    sim_inst = demo_sim.instance("demo-lapsing")
    assert (inst.auto_renew, inst.auto_renew_month, inst.keep_data_day) == (True, 3, 7)
    assert inst.billing_mode == "monthly"
    assert inst.end_time == datetime.fromtimestamp(sim_inst.end_time or 0, UTC)
    assert inst.last_started_at == datetime.fromtimestamp(sim_inst.last_started_at or 0, UTC)
    notebook = await sim_client.get_instance("demo-notebook")
    assert (notebook.billing_mode, notebook.end_time, notebook.auto_renew) == (
        "onDemand",
        None,
        False,
    )


async def test_renew_then_its_bill_is_found(
    sim_client: NovitaClient, demo_sim: FleetSim, clock: ManualClock
) -> None:
    demo_sim.top_up(10_000_000)
    before = await sim_client.get_instance("demo-lapsing")
    assert before.end_time is not None
    now = clock.now()
    assert (
        await sim_client.find_renewal_bills(
            "demo-lapsing", before.end_time, now - timedelta(days=3), now
        )
        == []
    )
    assert await sim_client.renew_instance("demo-lapsing", 1) == {}
    after = await sim_client.get_instance("demo-lapsing")
    assert after.end_time == datetime.fromtimestamp(
        add_months(int(before.end_time.timestamp()), 1), UTC
    )
    found = await sim_client.find_renewal_bills(
        "demo-lapsing", before.end_time, now - timedelta(days=3), now + timedelta(days=3)
    )
    assert [(b.trade_type, b.start_time, b.bill_num) for b in found] == [
        ("monthly_re_buy", before.end_time, 1)
    ]
    assert after.end_time is not None
    assert (
        await sim_client.find_renewal_bills(
            "demo-lapsing", after.end_time, now - timedelta(days=3), now
        )
        == []
    )
    assert performed(demo_sim, "renewInstance") == 1


async def test_simulated_refusals_read_as_their_errors(
    sim_client: NovitaClient, demo_sim: FleetSim
) -> None:
    with pytest.raises(E.InsufficientBalanceError) as short:
        await sim_client.renew_instance("demo-subscription", 12)
    assert (short.value.status, short.value.reason) == (400, "BALANCE_NOT_ENOUGH")
    assert short.value.answer is not None and short.value.answer["code"] == 400
    with pytest.raises(E.InvalidRequestError) as months:
        await sim_client.renew_instance("demo-lapsing", 2)
    assert months.value.reason == "VALIDATOR_PARAM"
    assert performed(demo_sim, "renewInstance") == 0
    assert sim_client.requests_sent == 2


@pytest.mark.parametrize(
    ("switch", "cls", "reason"),
    [
        ({}, E.InvalidRequestError, "OPERATION_LIMIT"),
        ({"body": {"error": "stop failed"}}, E.InvalidRequestError, None),
        (
            {"body": {"code": 1, "reason": "BALANCE_NOT_ENOUGH", "message": "m"}},
            E.InsufficientBalanceError,
            "BALANCE_NOT_ENOUGH",
        ),
    ],
)
async def test_simulated_2xx_error_bodies_are_not_success(
    sim_client: NovitaClient,
    sim_app: Any,
    demo_sim: FleetSim,
    clock: ManualClock,
    switch: dict[str, Any],
    cls: type[E.APIError],
    reason: str | None,
) -> None:
    sim_app.state.faults.error_body_next(STOP, **switch)
    with pytest.raises(cls) as info:
        await sim_client.stop_instance("demo-notebook")
    assert (info.value.status, info.value.reason) == (200, reason)
    clock.advance(120)
    assert (await sim_client.get_instance("demo-notebook")).status == "running"
    assert [(a["status"], a["performed"]) for a in demo_sim.actions] == [(200, False)]


async def test_simulated_5xx_after_the_renew_is_an_unknown_outcome_sent_once(
    sim_client: NovitaClient, sim_app: Any, demo_sim: FleetSim
) -> None:
    demo_sim.top_up(10_000_000)
    end = demo_sim.instance("demo-lapsing").end_time or 0
    sim_app.state.faults.fail_after(RENEW)
    with pytest.raises(E.OutcomeUnknownError) as info:
        await sim_client.renew_instance("demo-lapsing", 1)
    assert (info.value.status, info.value.reason) == (500, "UNKNOWN")
    assert sim_client.requests_sent == 1
    assert [(a["status"], a["performed"]) for a in demo_sim.actions] == [(500, True)]
    # reconciled by reading the instance: the renew happened
    inst = await sim_client.get_instance("demo-lapsing")
    assert inst.end_time == datetime.fromtimestamp(add_months(end, 1), UTC)


async def test_simulated_stuck_stop(
    sim_client: NovitaClient, sim_app: Any, clock: ManualClock
) -> None:
    sim_app.state.faults.stick_stop("demo-notebook")
    assert await sim_client.stop_instance("demo-notebook") == {}
    clock.advance(600)
    assert (await sim_client.get_instance("demo-notebook")).status == "stopping"


def test_action_log_over_a_real_socket(sim_server: SimServer, clock: ManualClock) -> None:
    """The switches and the log through the control endpoints, over TCP."""
    url = sim_server.url
    auth = {"Authorization": "Bearer k"}
    with httpx.Client(base_url=url, timeout=10) as http:
        http.post("/_sim/topup", json={"usd": 1000})
        r = http.post("/_sim/faults", json={"action_5xx_after": {"path_prefix": RENEW}})
        assert r.status_code == 200
        r = http.post(RENEW, json={"instanceId": "demo-lapsing", "month": 1}, headers=auth)
        assert (r.status_code, r.json()["reason"]) == (500, "UNKNOWN")
        r = http.post(RENEW, json={"instanceId": "demo-lapsing", "month": 1}, headers=auth)
        assert r.status_code == 200
        log = http.get("/_sim/actions").json()["actions"]
    assert [(a["path"], a["status"], a["performed"], a["fault"]) for a in log] == [
        ("renewInstance", 500, True, "action_5xx_after"),
        ("renewInstance", 200, True, None),
    ]
    assert log[0]["body"] == {"instanceId": "demo-lapsing", "month": 1}
    assert log[0]["time"] == clock.now().isoformat()


async def test_delayed_answer_over_a_socket_is_an_unknown_outcome(
    sim_app: Any, sim_server: SimServer, demo_sim: FleetSim, clock: ManualClock
) -> None:
    """``action_delay``: carried out, answered late; the reads around it are not delayed."""
    sim_app.state.faults.delay_next(STOP, seconds=1.0)
    sleeps = Sleeps()
    retry = RetryPolicy(sleep=sleeps)
    async with NovitaClient(KEY, sim_server.url, retry=retry, timeout=0.3) as c:
        with pytest.raises(E.OutcomeUnknownError) as info:
            await c.stop_instance("demo-notebook")
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)
        assert (await c.get_instance("demo-notebook")).status == "toStop"  # it was done
        assert c.requests_sent == 2 and sleeps == []
    assert [(a["path"], a["performed"], a["fault"]) for a in demo_sim.actions] == [
        ("stop", True, "action_delay")
    ]
    assert sim_app.state.faults.as_dict()["action_delay"] == []
