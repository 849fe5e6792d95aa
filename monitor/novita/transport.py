"""An httpx transport that sends requests with aiohttp.

Why not httpx's own transport: httpcore's pure-Python HTTP/1.1 stack costs about 2.5 ms of CPU
per request (and its connection pool grows quadratically in cost with its size,
encode/httpcore#1035); aiohttp's C-accelerated parser costs about 0.7 ms. The monitor sends a
request per running instance every minute, so on a fleet of a thousand instances the difference
decides whether a cycle is bound by the network or by the CPU (``novita-monitor bench collect``).

The client keeps speaking httpx (``httpx.Request`` in, ``httpx.Response`` out, httpx exceptions),
so tests swap in ``httpx.MockTransport`` or ``httpx.ASGITransport`` unchanged.

Why not the ``httpx-aiohttp`` package: it maps every ``aiohttp.ClientConnectionError``, server
disconnects included, to ``httpx.ConnectTimeout``, i.e. "never sent". The client retries an
action (POST) only when it was certainly not sent, so a disconnect after a renew was sent must
read as "outcome unknown". Here only a failed TCP connect or a connect timeout counts as not sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport", "map_error"]

#: aiohttp's own defaults may include ``br``/``zstd``, which httpx can decode only with extras
ACCEPT_ENCODING = "gzip, deflate"
_SKIP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over one ``aiohttp.ClientSession`` with at most ``max_connections``.

    ``timeout`` bounds connecting and each wait for data (aiohttp's ``sock_connect`` and
    ``sock_read``). The session is made on first use inside the running event loop; a transport
    used from a new event loop (a second ``asyncio.run``) makes a new one.
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
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit),
                timeout=self._timeout,
                auto_decompress=False,  # httpx.Response decodes by Content-Encoding itself
                headers={"User-Agent": self._user_agent, "Accept-Encoding": ACCEPT_ENCODING},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_here()
        headers = [(k, v) for k, v in request.headers.multi_items() if k not in _SKIP_HEADERS]
        body: Any = request.content or None
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as resp:
                content = await resp.read()
                raw_headers = list(resp.raw_headers)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise map_error(exc) from exc
        return httpx.Response(status, headers=raw_headers, content=content, request=request)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()
