"""The aiohttp-backed httpx transport against real local sockets.

What matters is the sent/not-sent line: only a failed connect may be retried for an action (POST),
because anything after the request left (a disconnect, a reset, a read timeout, a broken answer)
may have renewed an instance already. Each scenario runs a tiny HTTP/1.1 server on 127.0.0.1
that counts what really arrived, so "sent exactly once" is checked on the wire, not inferred.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import socket
import struct
import threading
import traceback
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from monitor.novita.client import NovitaClient, RetryPolicy
from monitor.novita.errors import OutcomeUnknownError, ResponseTooLargeError, UnavailableError
from monitor.novita.transport import map_error

API_KEY = "sk-test-7f3e9a1c-SECRET-d4b2"
ATTEMPTS = 3


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.1 server that records every request it reads


@dataclass
class Seen:
    """One request as it arrived: request line, headers in order, body."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)


#: after reading a request: return the raw answer (bytes), or None to do nothing more here
Behaviour = Callable[[Seen, asyncio.StreamWriter], Awaitable[bytes | None]]


def answer(
    status: int = 200,
    body: bytes = b"{}",
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
    *,
    chunks: list[bytes] | None = None,
) -> bytes:
    """A raw HTTP/1.1 response; ``chunks`` makes it ``Transfer-Encoding: chunked``."""
    lines = [f"HTTP/1.1 {status} OK", *(f"{k}: {v}" for k, v in headers)]
    if chunks is None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    else:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def replying(raw: bytes) -> Behaviour:
    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
        return raw

    return behave


class WireServer:
    """HTTP/1.1 on 127.0.0.1 (a free port) that records requests and behaves as told.

    ``behave`` gets each request and returns the raw answer to write (the connection is then kept
    alive for the next request), or None after it has dealt with the connection itself; then the
    server stops reading this connection and closes it when the client does.
    """

    def __init__(self, behave: Behaviour) -> None:
        self.behave = behave
        self.requests: list[Seen] = []
        self.connections = 0
        self.open = 0  # connections not yet closed (by either side)
        self._changed = threading.Condition()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._changed:
            self.connections += 1
            self.open += 1
        try:
            while True:
                seen = await _read_request(reader)
                if seen is None:
                    break
                self.requests.append(seen)
                raw = await self.behave(seen, writer)
                if raw is None:
                    if not writer.is_closing():
                        await reader.read()  # whatever comes until the client gives up
                    break
                writer.write(raw)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or stop() ended a connection the client left open
        finally:
            self._tasks.discard(task)
            writer.close()
            with self._changed:
                self.open -= 1
                self._changed.notify_all()

    def wait_all_closed(self, timeout: float) -> bool:
        """From another thread: True once every connection has closed (False after ``timeout``)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.open == 0, timeout)


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers = []
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    length = sum(int(v) for k, v in headers if k.lower() == "content-length")
    body = await reader.readexactly(length) if length else b""
    return Seen(method, target, headers, body)


@asynccontextmanager
async def wire_server(behave: Behaviour) -> AsyncIterator[WireServer]:
    server = WireServer(behave)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextmanager
def wire_server_in_thread(behave: Behaviour) -> Iterator[WireServer]:
    """The same server on its own event loop in a thread, for tests that call ``asyncio.run``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = WireServer(behave)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
        yield server
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


# ---- behaviours after reading a request -----------------------------------------------------


async def close_silently(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
    """Read the request, answer nothing, close: the server may have acted on it."""
    writer.close()
    return None


async def reset(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
    """Read the request, then abort the connection with a TCP RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return None


async def hang(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
    """Read the request and never answer (the server loop waits for the client to hang up)."""
    return None


async def truncated_body(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
    """Promise 100 bytes, send 10, close: a payload error after the headers arrived."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    writer.close()
    return None


async def garbage_status_line(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
    """An answer that is not HTTP at all."""
    writer.write(b"HTTP/1.1 two-hundred OK\r\n\r\n")
    await writer.drain()
    writer.close()
    return None


# ---------------------------------------------------------------------------------------------
# Helpers


@dataclass
class Sleeps:
    """The retry policy's sleep: records the waits instead of waiting."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_client(base_url: str, sleeps: Sleeps, timeout: float = 5.0) -> NovitaClient:
    policy = RetryPolicy(max_attempts=ATTEMPTS, sleep=sleeps, random=lambda: 0.5)
    return NovitaClient(API_KEY, base_url, retry=policy, timeout=timeout)


@asynccontextmanager
async def served(
    behave: Behaviour, sleeps: Sleeps, timeout: float = 5.0
) -> AsyncIterator[tuple[WireServer, NovitaClient]]:
    """A server behaving as told and a client (the aiohttp wire) pointed at it."""
    async with wire_server(behave) as server, make_client(server.url, sleeps, timeout) as client:
        yield server, client


def assert_key_hidden(exc: BaseException) -> None:
    """Neither the error, nor anything in its chain, nor its printed traceback shows the key."""
    printed = "".join(traceback.format_exception(exc))
    assert API_KEY not in printed
    assert API_KEY not in repr(exc)
    link: BaseException | None = exc
    while link is not None:
        assert API_KEY not in str(link), f"API key in the message of {type(link).__name__}"
        link = link.__cause__ or link.__context__


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A port bound but not listening: a connect there is refused (and no one else can take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# 1. Connection refused: certainly not sent, so even an action is retried


async def test_refused_get_is_retried_and_reported_not_sent(refused_url: str) -> None:
    sleeps = Sleeps()
    async with make_client(refused_url, sleeps) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.get_user_info()
    assert caught.value.not_sent is True
    assert client.requests_sent == ATTEMPTS
    assert len(sleeps.waits) == ATTEMPTS - 1
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert isinstance(caught.value.__cause__.__cause__, aiohttp.ClientConnectorError)
    assert_key_hidden(caught.value)


async def test_refused_action_is_retried_because_it_never_left(refused_url: str) -> None:
    sleeps = Sleeps()
    async with make_client(refused_url, sleeps) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.stop_instance("i-1")
    assert caught.value.not_sent is True
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert client.requests_sent == ATTEMPTS
    assert len(sleeps.waits) == ATTEMPTS - 1
    assert_key_hidden(caught.value)


# ---------------------------------------------------------------------------------------------
# 2. The server read the request and went away: sent, outcome unknown


async def test_disconnect_after_request_get_is_retried() -> None:
    sleeps = Sleeps()
    async with served(close_silently, sleeps) as (server, client):
        with pytest.raises(UnavailableError) as caught:
            await client.get_user_info()
    assert caught.value.not_sent is False
    assert client.requests_sent == ATTEMPTS
    assert len(sleeps.waits) == ATTEMPTS - 1
    # aiohttp itself replays an idempotent request once when the server disconnects
    # (RFC 9112 §9.3.1), so each client attempt reaches this server twice
    assert len(server.requests) == 2 * ATTEMPTS, (
        f"expected aiohttp's one replay per GET attempt, server saw {len(server.requests)}"
    )
    assert all(r.method == "GET" for r in server.requests)
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert_key_hidden(caught.value)


async def test_disconnect_after_renew_is_outcome_unknown_after_one_send() -> None:
    sleeps = Sleeps()
    async with served(close_silently, sleeps) as (server, client):
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.renew_instance("i-1", 1)
    assert len(server.requests) == 1, "a renew must reach the server exactly once"
    assert server.requests[0].method == "POST"
    assert client.requests_sent == 1
    assert sleeps.waits == []
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert_key_hidden(caught.value)


@pytest.mark.parametrize(
    ("behave", "cause"),
    [
        (reset, httpx.ReadError),
        (truncated_body, httpx.ReadError),
        (garbage_status_line, httpx.RemoteProtocolError),
    ],
    ids=["reset", "truncated-body", "garbage-status-line"],
)
async def test_failures_after_sending_an_action_are_outcome_unknown(
    behave: Behaviour, cause: type[httpx.TransportError]
) -> None:
    sleeps = Sleeps()
    async with served(behave, sleeps) as (server, client):
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.convert_to_monthly("i-1", 1)
    assert len(server.requests) == 1
    assert client.requests_sent == 1
    assert sleeps.waits == []
    assert isinstance(caught.value.__cause__, cause)
    assert_key_hidden(caught.value)


@pytest.mark.parametrize(
    ("behave", "sends_per_attempt"),
    # aiohttp replays a GET once by itself when the connection fails before any answer
    # (reset); not once the answer has begun (truncated body) or is garbage
    [(reset, 2), (truncated_body, 1), (garbage_status_line, 1)],
    ids=["reset", "truncated-body", "garbage-status-line"],
)
async def test_failures_after_sending_a_read_are_retried(
    behave: Behaviour, sends_per_attempt: int
) -> None:
    sleeps = Sleeps()
    async with served(behave, sleeps) as (server, client):
        with pytest.raises(UnavailableError) as caught:
            await client.get_user_info()
    assert caught.value.not_sent is False
    assert client.requests_sent == ATTEMPTS
    assert len(sleeps.waits) == ATTEMPTS - 1
    assert len(server.requests) == sends_per_attempt * ATTEMPTS
    assert_key_hidden(caught.value)


# ---------------------------------------------------------------------------------------------
# 3. The server read the request and never answered: a read timeout


async def test_no_answer_get_times_out_and_is_retried() -> None:
    sleeps = Sleeps()
    async with wire_server(hang) as server:
        policy = RetryPolicy(max_attempts=2, sleep=sleeps, random=lambda: 0.5)
        async with NovitaClient(API_KEY, server.url, retry=policy, timeout=0.3) as client:
            with pytest.raises(UnavailableError) as caught:
                await client.get_user_info()
    assert caught.value.not_sent is False
    assert client.requests_sent == 2
    assert len(server.requests) == 2
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert_key_hidden(caught.value)


async def test_no_answer_to_stop_is_outcome_unknown_after_one_send() -> None:
    sleeps = Sleeps()
    async with served(hang, sleeps, timeout=0.3) as (server, client):
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.stop_instance("i-1")
    assert len(server.requests) == 1, "a stop must reach the server exactly once"
    assert client.requests_sent == 1
    assert sleeps.waits == []
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert_key_hidden(caught.value)


# ---------------------------------------------------------------------------------------------
# 4. Encoded answers


BALANCE = {"availableBalance": "123400", "cashBalance": "100000"}


async def test_gzip_answer_is_decoded() -> None:
    raw = answer(
        body=gzip.compress(json.dumps(BALANCE).encode()),
        headers=(("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
    )
    async with served(replying(raw), Sleeps()) as (_server, client):
        balance = await client.get_balance()
    assert balance.available_usd == Decimal("12.34")
    assert balance.cash_usd == Decimal("10")


async def test_deflate_answer_is_decoded() -> None:
    raw = answer(
        body=zlib.compress(json.dumps(BALANCE).encode()),
        headers=(("Content-Type", "application/json"), ("Content-Encoding", "deflate")),
    )
    async with served(replying(raw), Sleeps()) as (_server, client):
        balance = await client.get_balance()
    assert balance.available_usd == Decimal("12.34")


async def test_chunked_answer_is_reassembled() -> None:
    body = json.dumps(BALANCE).encode()
    raw = answer(chunks=[body[:5], body[5:9], body[9:]])
    async with served(replying(raw), Sleeps()) as (_server, client):
        balance = await client.get_balance()
    assert balance.available_usd == Decimal("12.34")


async def test_chunked_gzip_answer_is_decoded() -> None:
    packed = gzip.compress(json.dumps({**BALANCE, "padding": "x" * 3000}).encode())
    raw = answer(
        headers=(("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
        chunks=[packed[i : i + 97] for i in range(0, len(packed), 97)],
    )
    async with served(replying(raw), Sleeps()) as (_server, client):
        balance = await client.get_balance()
    assert balance.available_usd == Decimal("12.34")


# ---------------------------------------------------------------------------------------------
# 4b. Answers over the size cap: refused before they are read whole

CAP = 1024 * 1024  # 1 MB for these tests (the default is 20 MB)
BIG = 50 * 1024 * 1024  # the 50 MB answer that once took the daemon from 107 to 257 MB


def streaming(total: int, *, announce: bool, sent: list[int]) -> Behaviour:
    """Answer 200 with ``total`` bytes of JSON-ish body in 64 kB pieces, counting in ``sent``
    what was written before the client went away (``announce``: a Content-Length)."""

    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
        head = ["HTTP/1.1 200 OK", "Content-Type: application/json"]
        head.append(f"Content-Length: {total}" if announce else "Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        piece = b" " * 65536
        try:
            while sent[0] < total:
                writer.write(piece if announce else b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                sent[0] += len(piece)
        except (ConnectionError, OSError):
            pass
        writer.close()
        return None

    return behave


@asynccontextmanager
async def capped(behave: Behaviour) -> AsyncIterator[tuple[WireServer, NovitaClient]]:
    """A server behaving as told and a client whose answer cap is :data:`CAP`."""
    async with (
        wire_server(behave) as server,
        NovitaClient(API_KEY, server.url, max_response_bytes=CAP) as client,
    ):
        yield server, client


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_over_the_cap_is_refused_before_it_is_read_whole(announce: bool) -> None:
    import tracemalloc

    sent = [0]
    sleeps = Sleeps()
    async with wire_server(streaming(BIG, announce=announce, sent=sent)) as server:
        policy = RetryPolicy(max_attempts=ATTEMPTS, sleep=sleeps, random=lambda: 0.5)
        async with NovitaClient(
            API_KEY, server.url, retry=policy, max_response_bytes=CAP
        ) as client:
            tracemalloc.start()
            try:
                with pytest.raises(ResponseTooLargeError) as caught:
                    await client.list_products()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    error = caught.value
    assert error.limit == CAP and error.status == 200
    assert f"cap of {CAP} bytes" in str(error)
    assert (str(BIG) in str(error)) is announce  # the announced size, when there was one
    assert client.requests_sent == 1 and sleeps.waits == []  # never retried: as large again
    assert len(server.requests) == 1
    # the body was not read whole: the server could not even write most of it
    assert sent[0] < BIG / 2
    assert peak < 8 * CAP, f"peak {peak / 1e6:.1f} MB while refusing a {BIG / 1e6:.0f} MB answer"
    assert_key_hidden(error)


async def test_a_compressed_answer_is_capped_by_its_decoded_size() -> None:
    packed = gzip.compress(b"[" + b"0," * (2 * CAP) + b"0]")  # 4 MB of JSON in a few kB
    raw = answer(
        body=packed,
        headers=(("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
    )
    async with capped(replying(raw)) as (_server, client):
        with pytest.raises(ResponseTooLargeError):
            await client.list_products()
    assert len(packed) < CAP / 10


async def test_an_answer_within_the_cap_and_the_connection_after_a_refusal() -> None:
    small = json.dumps(BALANCE).encode()

    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> bytes | None:
        if "products" in seen.target:
            return answer(body=b"[" + b"0," * CAP + b"0]")
        return answer(body=small)

    async with capped(behave) as (server, client):
        with pytest.raises(ResponseTooLargeError):
            await client.list_products()
        balance = await client.get_balance()  # a fresh connection: the big one was dropped
    assert balance.available_usd == Decimal("12.34")
    assert server.connections == 2


async def test_an_action_answered_over_the_cap_is_still_an_outcome() -> None:
    """A 2xx to an action means it was carried out: the unread answer is not an error; a 5xx
    over the cap is still an unknown outcome, sent once."""
    ok = answer(body=b'{"pad": "' + b"x" * (2 * CAP) + b'"}')
    failed = answer(status=500, body=b'{"pad": "' + b"x" * (2 * CAP) + b'"}')
    async with capped(replying(ok)) as (server, client):
        result = await client.stop_instance("i-1")
    assert "not read" in result["raw"] and len(server.requests) == 1
    async with capped(replying(failed)) as (server, client):
        with pytest.raises(OutcomeUnknownError):
            await client.stop_instance("i-1")
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------------------------
# 5. What goes on the wire


async def test_action_request_on_the_wire() -> None:
    async with served(replying(answer(body=b'{"ok": true}')), Sleeps()) as (server, client):
        result = await client.renew_instance("i-42", 3)
    assert result == {"ok": True}
    [seen] = server.requests
    assert seen.method == "POST"
    assert seen.target == "/gpu-instance/openapi/v1/gpu/instance/renewInstance"
    assert seen.header_values("Authorization") == [f"Bearer {API_KEY}"]
    # only encodings the stack decodes without optional extras (no br, no zstd)
    assert seen.header_values("Accept-Encoding") == ["gzip, deflate"]
    assert seen.header_values("Host") == [server.url.removeprefix("http://")]
    assert seen.header_values("User-Agent") == ["novita-monitor"]
    assert seen.header_values("Content-Type") == ["application/json"]
    assert seen.header_values("Content-Length") == [str(len(seen.body))]
    assert seen.header_values("Transfer-Encoding") == []
    assert json.loads(seen.body) == {"instanceId": "i-42", "month": 3}


async def test_query_parameters_on_the_wire() -> None:
    awkward = "RTX 4090+24GB & a=b/c%20d ü"
    async with served(replying(answer(body=b'{"data": []}')), Sleeps()) as (server, client):
        products = await client.list_products(cluster_id="c-1", product_name=awkward)
    assert products == []
    [seen] = server.requests
    assert seen.method == "GET"
    assert urlsplit(seen.target).path == "/gpu-instance/openapi/v1/products"
    assert seen.query() == {"clusterId": ["c-1"], "productName": [awkward]}, seen.target
    assert seen.body == b""
    assert len(seen.header_values("Host")) == 1
    assert seen.header_values("Authorization") == [f"Bearer {API_KEY}"]


async def test_keep_alive_reuses_one_connection() -> None:
    raw = answer(body=json.dumps(BALANCE).encode())
    async with served(replying(raw), Sleeps()) as (server, client):
        for _ in range(3):
            await client.get_balance()
    assert len(server.requests) == 3
    assert server.connections == 1


# ---------------------------------------------------------------------------------------------
# 6. One client, two event loops


def test_one_client_across_two_asyncio_runs_closed_in_each() -> None:
    raw = answer(body=json.dumps(BALANCE).encode())
    with wire_server_in_thread(replying(raw)) as server:
        client = NovitaClient(API_KEY, server.url, retry=RetryPolicy(sleep=Sleeps()))

        async def balance_then_close() -> Decimal:
            try:
                return (await client.get_balance()).available_usd
            finally:
                await client.aclose()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert asyncio.run(balance_then_close()) == Decimal("12.34")
            assert asyncio.run(balance_then_close()) == Decimal("12.34")
            gc.collect()
        assert server.wait_all_closed(timeout=2), "aclose() left a connection open"
    assert len(server.requests) == 2
    assert client.requests_sent == 2
    assert [w.message for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_client_left_open_in_one_event_loop_is_refused_in_the_next() -> None:
    """The session's sockets belong to the loop that made them and cannot be closed from
    another: using the client from a second loop without closing it in the first is an error
    that says what to do, not a silent socket leak."""
    raw = answer(body=json.dumps(BALANCE).encode())
    with wire_server_in_thread(replying(raw)) as server:
        client = NovitaClient(API_KEY, server.url, retry=RetryPolicy(sleep=Sleeps()))

        async def balance() -> Decimal:
            return (await client.get_balance()).available_usd

        first = asyncio.new_event_loop()
        try:
            assert first.run_until_complete(balance()) == Decimal("12.34")  # not closed
            with pytest.raises(RuntimeError, match=r"aclose\(\)"):
                asyncio.run(balance())
            first.run_until_complete(client.aclose())
        finally:
            first.close()
        assert server.wait_all_closed(timeout=0.5)
    assert len(server.requests) == 1


async def test_aclose_is_idempotent_and_the_transport_reopens() -> None:
    raw = answer(body=json.dumps(BALANCE).encode())
    async with wire_server(replying(raw)) as server:
        client = NovitaClient(API_KEY, server.url, retry=RetryPolicy(sleep=Sleeps()))
        await client.get_balance()
        await client.aclose()
        await client.aclose()
        assert (await client.get_balance()).available_usd == Decimal("12.34")
        await client.aclose()
    assert len(server.requests) == 2
    assert server.connections == 2


# ---------------------------------------------------------------------------------------------
# 7. map_error, one aiohttp failure at a time

KEY = ConnectionKey(
    host="api.novita.ai",
    port=443,
    is_ssl=True,
    ssl=True,
    proxy=None,
    proxy_auth=None,
    proxy_headers_hash=None,
)


def _response_error() -> aiohttp.ClientResponseError:
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    info = aiohttp.RequestInfo(
        URL("https://api.novita.ai/v3/user"), "GET", CIMultiDictProxy(CIMultiDict())
    )
    return aiohttp.ClientResponseError(info, (), status=400, message="Invalid status line")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ConnectionTimeoutError("Connection timeout to host"), httpx.ConnectTimeout),
        (
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
            httpx.ConnectError,
        ),
        (
            aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),
            httpx.ConnectError,
        ),
        (
            aiohttp.ClientConnectorCertificateError(KEY, ValueError("bad certificate")),
            httpx.ConnectError,
        ),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), httpx.ReadTimeout),
        (TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (_response_error(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("Response payload is not completed"), httpx.ReadError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), httpx.ReadError),
        (aiohttp.InvalidURL("http://[::1"), httpx.UnsupportedProtocol),
        (OSError(32, "Broken pipe"), httpx.ReadError),
        (ConnectionResetError(104, "Connection reset by peer"), httpx.ReadError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_map_error(exc: BaseException, expected: type[httpx.TransportError]) -> None:
    mapped = map_error(exc)
    assert type(mapped) is expected
    assert str(mapped).startswith(type(exc).__name__)
    sent = not isinstance(mapped, httpx.ConnectError | httpx.ConnectTimeout)
    not_sent_types = (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError)
    assert sent is not isinstance(exc, not_sent_types)
