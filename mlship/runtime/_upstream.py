"""The front's HTTP/1.1 client to one backend: a pool of kept-alive connections over its Unix sockets.

A small asyncio protocol with httptools' response parser (a pinned runtime requirement, which uvicorn uses for
serving too) rather than a client library: the runtime already has both, the backends are ours (HTTP/1.1,
Content-Length bodies, no redirects, no TLS), and a request through the front costs one write and one parse.
Responses are read whole: a backend answers bounded JSON (its requests are bounded by MLSHIP_MAX_BODY_BYTES,
its answers by MLSHIP_MAX_ROWS), so streaming would only add code.

A backend has one listening socket per worker (see _backends): new connections go to them in turn, so the
front's connections, and with them the load, are spread evenly over the workers. A pooled connection that fails
before any byte of its answer arrived (the backend closed it idle, or its worker was killed) is retried once on
a new connection: predictions have no side effects, and the client would otherwise see an error that is the
server's own business.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import httptools

# Request headers that describe the client's connection to the front, not the front's to the backend (RFC 9110
# 7.6.1), and those the front writes itself. Expect too: the front has read the whole body already (uvicorn
# answered the client's 100-continue), and a backend's interim 100 would be read as its answer.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-authorization", b"proxy-authenticate", b"host", b"content-length", b"expect",
})
_MAX_IDLE = 256  # connections kept per backend; more concurrent requests open more, closed after use


class UpstreamError(Exception):
    """The backend gave no complete answer: refused, reset, closed, or malformed."""


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # the backend's, hop-by-hop ones and Content-Length left out
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.closed = False
        self.received = False  # a byte of the current answer has arrived
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the backend's answer does not parse: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamError("the backend closed the connection" + (f": {exc}" if exc else "")))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"connection" and b"close" in value.lower():
            self._keep_alive = False
        if name not in HOP_BY_HOP:
            self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        response = UpstreamResponse(self.parser.get_status_code(), self._headers, b"".join(self._body))
        if not (self._keep_alive and self.parser.should_keep_alive()):
            self.close()
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: UpstreamError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def exchange(self, request: bytes) -> UpstreamResponse:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.received = False
        self._headers, self._body, self._keep_alive = [], [], True
        self.transport.write(request)
        return await self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Kept-alive connections to one backend, whose workers listen on `addresses` (abstract Unix names)."""

    def __init__(self, addresses: Sequence[str], *, connect_timeout: float = 5.0) -> None:
        self.addresses = list(addresses)
        self.connect_timeout = connect_timeout
        self.idle: list[_Connection] = []
        self._next = 0

    async def request(self, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes,
                      *, timeout: float) -> UpstreamResponse:
        """Send one request (`target`: path and query, `headers` without hop-by-hop ones) and read its answer;
        UpstreamError when no answer came, TimeoutError after `timeout` seconds."""
        head = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: mlship-backend\r\n"]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body]
        request = b"".join(head)
        async with asyncio.timeout(timeout):
            while self.idle:
                connection = self.idle.pop()
                if connection.closed:
                    continue
                try:
                    return self._done(connection, await connection.exchange(request))
                except UpstreamError:
                    connection.close()
                    if connection.received:
                        raise
                    break  # stale or killed: one more try, on a new connection
                except BaseException:  # timed out or cancelled: the answer may still come, on nobody's watch
                    connection.close()
                    raise
            connection = await self._connect()
            try:
                return self._done(connection, await connection.exchange(request))
            except BaseException:
                connection.close()
                raise

    def _done(self, connection: _Connection, response: UpstreamResponse) -> UpstreamResponse:
        if not connection.closed and len(self.idle) < _MAX_IDLE:
            self.idle.append(connection)
        elif not connection.closed:
            connection.close()
        return response

    async def _connect(self) -> _Connection:
        address = self.addresses[self._next % len(self.addresses)]
        self._next += 1
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.sock_connect(sock, address)
            _, protocol = await loop.create_unix_connection(_Connection, sock=sock)
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise UpstreamError(f"cannot connect to the backend: {exc or 'timed out'}") from None
        return protocol

    def close(self) -> None:
        for connection in self.idle:
            with contextlib.suppress(Exception):
                connection.close()
        self.idle.clear()
