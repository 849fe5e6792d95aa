"""``POST /_sim/instances``: a test adds a running instance with a past (its profile, billing
mode and environment), as the list, get-instance, metrics and bills then show it. And the action
log's ``answered``: false while an answer is held back (``action_delay``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from monitor.clock import ManualClock

GPU = "/gpu-instance/openapi/v1"


@pytest.fixture
async def client(sim_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app),
        base_url="http://sim",
        headers={"Authorization": "Bearer k"},
    ) as c:
        yield c


async def test_an_added_instance_is_listed_with_its_env_past_and_billing(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    added = await client.post(
        "/_sim/instances",
        json={
            "id": "keep-me",
            "name": "precious-run",
            "billing_mode": "spot",
            "profile": "idle",
            "running_for": 3 * 3600,
            "envs": {"NOVITA_MONITOR_PROTECT": "true"},
        },
    )
    assert added.status_code == 200, added.text
    got = (await client.get(f"{GPU}/gpu/instance", params={"instanceId": "keep-me"})).json()
    assert got == added.json()
    assert got["name"] == "precious-run" and got["billingMode"] == "spot"
    assert got["status"] == "running"
    assert int(got["lastStartedAt"]) == int(clock.now().timestamp()) - 3 * 3600
    envs = {e["key"]: e["value"] for e in got["envs"]}
    assert envs == {"PYTHONUNBUFFERED": "1", "NOVITA_MONITOR_PROTECT": "true"}
    listed = (await client.get(f"{GPU}/gpu/instances", params={"pageSize": 100})).json()
    assert "keep-me" in [i["id"] for i in listed["instances"]]
    # its past: idle GPU metrics over the last hours
    now = int(clock.now().timestamp())
    metrics = (
        await client.get(
            "/openapi/v1/metrics/gpu/instance",
            params={"instanceId": "keep-me", "startTime": now - 3600, "endTime": now},
        )
    ).json()
    points = metrics["gpuUtilization"]["avg"]
    assert points and max(float(p["value"]) for p in points) < 5
    # the demo's instances keep only the default variable
    other = (await client.get(f"{GPU}/gpu/instance", params={"instanceId": "demo-notebook"})).json()
    assert other["envs"] == [{"key": "PYTHONUNBUFFERED", "value": "1"}]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"id": "x", "billing_mode": "monthly"}, "billing_mode must be onDemand or spot"),
        ({"id": "x", "profile": "sleepy"}, "unknown profile 'sleepy'"),
        ({"id": "x", "gpus": 0}, "gpus must be an integer from 1 to 8"),
        ({"id": "x", "product": "tpu"}, "unknown product 'tpu'"),
        ({"id": "x", "colour": "red"}, "unknown keys ['colour']"),
        ({"id": "x", "envs": ["A=1"]}, "envs must be an object"),
        ({"id": "demo-notebook"}, "exists already"),
        ({}, "id must be a non-empty string"),
    ],
)
async def test_a_bad_instance_is_refused_with_what_is_wrong(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    answer = await client.post("/_sim/instances", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["message"]


async def test_the_action_log_says_when_a_held_answer_was_sent(
    client: httpx.AsyncClient, sim_app: Starlette
) -> None:
    sim_app.state.faults.delay_next(f"{GPU}/gpu/instance/stop", 0.5)
    call = asyncio.create_task(
        client.post(f"{GPU}/gpu/instance/stop", json={"instanceId": "demo-notebook"})
    )
    for _ in range(200):  # bounded: the request reaches the model within a few loop turns
        log = (await client.get("/_sim/actions")).json()["actions"]
        if log and log[0]["performed"]:
            break
        await asyncio.sleep(0.005)
    (held,) = log
    assert held["performed"] is True and held["fault"] == "action_delay"
    assert held["answered"] is False  # carried out, its answer not sent yet
    assert (await call).status_code == 200
    (sent,) = (await client.get("/_sim/actions")).json()["actions"]
    assert sent["answered"] is True and sent["status"] == 200
