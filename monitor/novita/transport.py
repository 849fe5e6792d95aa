"""How the client puts a request on the wire: aiohttp in production, any httpx transport in tests.

Why not httpx's own transport: httpcore's pure-Python HTTP/1.1 stack costs about 2.5 ms of CPU
per request (and its connection pool grows quadratically in cost with its size,
encode/httpcore#1035); aiohttp's C-accelerated parser costs about 0.7 ms. The monitor sends a
request per running instance every minute, so on a fleet of a thousand instances the difference
decides whether a cycle is bound by the network or by the CPU (``novita-monitor bench collect``).

The client sees one small seam, :class:`Wire`: ``send(method, url, headers, body) -> Reply``,
failures raised as httpx exceptions. :class:`AiohttpWire` is the production wire;
:class:`HttpxWire` carries any ``httpx.AsyncBaseTransport``, so tests pass
``httpx.MockTransport`` or ``httpx.ASGITransport(sim_app)``. Building ``httpx.Request`` and
``httpx.Response`` objects costs ~0.17 ms per request (URL parsing in pure Python), a fifth of
aiohttp's own cost, which is why the production path does not go through them.

Why not the ``httpx-aiohttp`` package: it maps every ``aiohttp.ClientConnectionError``, server
disconnects included, to ``httpx.ConnectTimeout``, i.e. "never sent". The client retries an
action (POST) only when it was certainly not sent, so a disconnect after a renew was sent must
read as "outcome unknown". Here only a failed TCP connect or a connect timeout counts as not sent.

A wire reads an answer's body only up to ``limit`` bytes (after decompression): an answer that
announces more (``Content-Length``) is refused before its body is read, one that streams more is
refused as soon as the limit is passed, with :class:`TooLarge`, and its connection is dropped
rather than drained. A 50 MB answer read whole once took the daemon from 107 to 257 MB.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

import aiohttp
import httpx

__all__ = [
    "DEFAULT_MAX_BYTES",
    "AiohttpWire",
    "HttpxWire",
    "Reply",
    "TooLarge",
    "Wire",
    "map_error",
    "read_capped",
]

#: the largest answer body a client reads unless told otherwise (bytes, decoded)
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, body read. ``headers`` is case-insensitive."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    @property
    def reason_phrase(self) -> str:
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""


class TooLarge(Exception):
    """An answer whose body is larger than ``limit`` bytes: refused, not read whole.

    ``declared`` is its ``Content-Length`` when that gave it away before any of the body was
    read (None when the limit was passed while reading). Not an ``httpx`` error: the exchange
    itself worked, the client decides what a refused answer means (see ``NovitaClient``).
    """

    def __init__(
        self, status_code: int, headers: Mapping[str, str], limit: int, declared: int | None
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.limit = limit
        self.declared = declared
        announced = f" ({declared} bytes announced)" if declared is not None else ""
        super().__init__(f"answer larger than {limit} bytes{announced}")


async def read_capped(
    status: int, headers: Mapping[str, str], chunks: AsyncIterable[bytes], limit: int
) -> bytes:
    """An answer's body from its (decoded) ``chunks``, unless it is larger than ``limit``:
    :class:`TooLarge` at once when its ``Content-Length`` says so (the encoded size: a
    compressed body that large would only be larger decoded), else as soon as the chunks pass
    the limit."""
    try:
        declared: int | None = int(headers.get("Content-Length") or "")
    except ValueError:
        declared = None
    if declared is not None and declared > limit:
        raise TooLarge(status, headers, limit, declared)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(status, headers, limit, None)
        parts.append(chunk)
    return b"".join(parts)


class Wire(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        limit: int | None = None,
    ) -> Reply:
        """One HTTP exchange; failures raised as ``httpx.TransportError`` subclasses, an
        answer body over ``limit`` bytes (None: no limit) as :class:`TooLarge`."""
        ...

    async def aclose(self) -> None: ...


def map_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception for an aiohttp (or asyncio) failure.

    Only ``ConnectError``/``ConnectTimeout`` mean "the request was not sent"; everything else
    (disconnects, resets, read timeouts, malformed responses) means it may have been.
    """
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS handshake
        return httpx.ConnectError(message)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError and any other timeout
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)  # payload errors, resets, anything else after sending


class AiohttpWire:
    """The production :class:`Wire`: keep-alive HTTP/1.1 over one ``aiohttp.ClientSession``
    with at most ``max_connections``.

    ``timeout`` bounds connecting and each wait for data (aiohttp's ``sock_connect`` and
    ``sock_read``). The session is made on first use inside the running event loop and belongs
    to it: close the wire (``aclose``) before that loop ends; it then reopens in the next loop
    that uses it. Bodies are decompressed by aiohttp (it advertises only the encodings it can
    decode).
    """

    def __init__(self, *, max_connections: int, timeout: float, user_agent: str) -> None:
        self._limit = max_connections
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout, sock_read=timeout
        )
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed and self._loop is not loop:
            # its sockets belong to the other loop and cannot be closed from this one
            raise RuntimeError(
                "this Novita client was used in another event loop and not closed there: "
                "call `await client.aclose()` before that loop ends"
            )
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit),
                timeout=self._timeout,
                headers={"User-Agent": self._user_agent},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        limit: int | None = None,
    ) -> Reply:
        session = self._session_here()
        try:
            async with session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as resp:
                if limit is None:
                    content = await resp.read()
                else:
                    try:
                        content = await read_capped(
                            resp.status, resp.headers, resp.content.iter_any(), limit
                        )
                    except TooLarge:
                        resp.close()  # the rest is not read: the connection is not reused
                        raise
                return Reply(resp.status, resp.headers, content)
        except aiohttp.ClientResponseError as exc:
            # its repr carries the request's headers, the API key among them: not chained
            raise map_error(exc) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise map_error(exc) from exc

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()


class HttpxWire:
    """A :class:`Wire` over any ``httpx.AsyncBaseTransport`` (tests: ``MockTransport``,
    ``ASGITransport``)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        limit: int | None = None,
    ) -> Reply:
        request = httpx.Request(method, url, headers=headers, content=body)
        response = await self.transport.handle_async_request(request)
        try:
            if limit is None:
                content = await response.aread()
            else:
                content = await read_capped(
                    response.status_code, response.headers, response.aiter_bytes(), limit
                )
        finally:
            await response.aclose()
        return Reply(response.status_code, response.headers, content)

    async def aclose(self) -> None:
        await self.transport.aclose()
