"""HTTP/1.1 for every request coevol-hf sends to an LLM server, on asyncio's own transports.

At hundreds of calls a second the client's CPU is what limits a run on one machine, and the
requests are all alike: a JSON POST, or a probe's GET, on a kept-alive connection, answered with
a body of known length or in chunks. This module does only that, for a fraction of the CPU
aiohttp or huggingface_hub's httpx session take per call (benchmarks/http_client_cost.py,
benchmarks/README.md). What it guarantees, because a long run must not hang or leak on one bad
server:

- no redirect is followed: a 301/302 would turn a POST into a GET and carry the token to
  another host; the caller sees the 3xx and says where it points;
- one deadline per request, from connecting to the last byte, so a server trickling a byte a
  minute cannot hold a call forever; a connection that cannot be made is told apart from a
  slow answer;
- a reply larger than its cap is refused, never read into memory;
- a failed TLS handshake is named as such, with its cause chained, never as "cannot reach";
- a kept-alive connection the server had closed while it was idle (its end arriving within a
  second of the request, with not a byte of answer) is replaced once; a request the server
  held longer and then dropped is never sent again by this module;
- `HTTP(S)_PROXY` / `NO_PROXY` are honoured, never for a loopback host, and `~/.netrc` is never read.

Over TLS, an answer framed by the connection's end (no length, no chunks: HTTP/1.0 style, which
no LLM server sends) is taken as complete when the connection ends with or without close_notify
(asyncio reports both alike; a reset fails it); cut short, its JSON fails to parse.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import functools
import ipaddress
import os
import ssl
import urllib.request
from typing import Awaitable, Callable, Mapping, TypeVar, cast
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..errors import ConfigError
from ..options import is_http_url
from .pool import Outcome

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0
_MAX_HEAD = 64 << 10  # status line and headers; TGI's are a few hundred bytes
# Some firewalls refuse requests without a User-Agent; identity: this client decompresses nothing.
_FIXED_HEADERS = f"User-Agent: coevol-hf/{__version__}\r\nAccept-Encoding: identity\r\n"
_MAX_CHUNK_LINE = 4 << 10
_HEX_DIGITS = b"0123456789abcdefABCDEF"
# A kept-alive connection that ends this soon after a request, unanswered, was closed by the
# server while idle (the end crossed the request); later, the server may have started on it.
_STALE_WINDOW = 1.0
_RouteKey = tuple[str, str, int, str | None]  # scheme, host, port, proxy: requests with one key share connections


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes


@dataclasses.dataclass(frozen=True)
class Deadline:
    total: float  # seconds from connecting to the last byte of the answer
    connect: float  # of which at most this long to connect


def deadline(seconds: float) -> Deadline:
    """`seconds` in all, of which 10 (half, if less) at most to connect: a server that cannot be
    reached is told apart from one that answers slowly."""
    return Deadline(seconds, min(seconds / 2, CONNECT_TIMEOUT))


class Failure(Exception):
    """A failed attempt: the row error kind it becomes, how the endpoint did, whether to retry.

    `systematic`: every call would get it alike (credentials, route, redirect, a proxy's
    refusal), so a few in a row stop the run instead of writing the same error on every row.
    """

    def __init__(
        self, kind: str, message: str, outcome: Outcome, *, retryable: bool = True, retry_after: float | None = None, systematic: bool = False
    ) -> None:
        super().__init__(message)
        self.kind, self.outcome, self.retryable, self.retry_after, self.systematic = kind, outcome, retryable, retry_after, systematic

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


class Http:
    """Kept-alive connections for the running event loop, opened on first use inside it.

    Connections are bound to their loop: a request from another loop (a forked worker, a test's
    new `asyncio.run`) starts afresh, and the old connections are left to their loop.
    """

    def __init__(self, timeout: float) -> None:
        self._deadline = deadline(timeout)
        # Idle connections by loop, then by route key: a connection serves only its own loop.
        self._idle: dict[asyncio.AbstractEventLoop, dict[_RouteKey, list[_Connection]]] = {}
        self._routes: dict[tuple[str, str | None], _Route] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        body: bytes | None = None,
        cap: int,
        proxy: str | None = None,
        timeout: Deadline | None = None,
    ) -> Response:
        """One request, without redirects, read to the end within the timeout; raises `Failure`."""
        loop = asyncio.get_running_loop()
        timeout = timeout or self._deadline
        expires = loop.time() + timeout.total
        route = self._routes.get((url, proxy)) or self._route(url, proxy)
        message = route.message(method, headers, body)
        idle = (self._idle.get(loop) or self._pool_for(loop)).setdefault(route.key, [])
        kept = _open_one(idle)
        if kept is not None:
            try:
                return await self._exchange(idle, kept, message, cap, expires, timeout)
            except _Unanswered as err:
                if not err.stale:
                    raise _lost(str(err)) from None
                # closed by the server while idle: once more, on a new connection
        connection = await _open(route, min(timeout.connect, expires - loop.time()))
        if connection.closed:  # ended by the server as it was accepted: the request was never sent
            raise Failure("connection", "the server ended the connection before the request was sent", Outcome.REFUSED)
        try:
            return await self._exchange(idle, connection, message, cap, expires, timeout)
        except _Unanswered as err:
            raise _lost(str(err)) from None

    async def aclose(self) -> None:
        """Close this loop's idle connections at once (those of other loops are left to them)."""
        for connections in self._idle.pop(asyncio.get_running_loop(), {}).values():
            for connection in connections:
                connection.close()
        await asyncio.sleep(0)  # lets the transports close their sockets before the loop ends

    def _pool_for(self, loop: asyncio.AbstractEventLoop) -> dict[_RouteKey, list[_Connection]]:
        """A new loop's pool; the pools of loops closed since are let go (nothing can close their sockets now)."""
        for closed in [other for other in self._idle if other.is_closed()]:
            del self._idle[closed]
        pool = self._idle[loop] = {}
        return pool

    def _route(self, url: str, proxy: str | None) -> _Route:
        route = self._routes[url, proxy] = _Route.of(url, proxy)
        return route

    @staticmethod
    async def _exchange(idle: list[_Connection], connection: _Connection, message: bytes, cap: int, expires: float, timeout: Deadline) -> Response:
        """One request and its answer on `connection`, which goes back to `idle` if it can carry another."""
        answer = _Answer(cap)
        try:
            await connection.exchange(message, answer, expires)
        except asyncio.TimeoutError:
            raise Failure("timeout", f"no complete answer within {timeout.total:g} s", Outcome.LOST) from None
        finally:
            # Not while part of the request is unsent: the server answered early and may not read on.
            if answer.reusable and not connection.closed and connection.transport.get_write_buffer_size() == 0:
                idle.append(connection)
            else:
                connection.close()
        return Response(answer.status, answer.headers, answer.body)


@dataclasses.dataclass(frozen=True)
class _Route:
    """Where one URL's requests go: the address to connect to (the proxy's, if any), the TLS to
    speak, and the start of every request sent there."""

    key: _RouteKey
    connect_host: str  # the proxy's, when there is one
    connect_port: int
    tls_host: str | None  # the server name to check the certificate against; None for plain http
    tunnel: str | None  # "host:port" to ask an http proxy to CONNECT to, for https through it
    proxy_authorization: str  # a header line, or ""
    start: str  # the request line after the method, and the Host header

    @classmethod
    def of(cls, url: str, proxy: str | None) -> _Route:
        parts = urlsplit(url)
        host, secure = parts.hostname or "", parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        host_header = parts.netloc.rpartition("@")[2]
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, host, port, proxy)
        tls_host = host if secure else None
        if proxy is None:
            return cls(key, host, port, tls_host, None, "", _start(path, host_header))
        via = urlsplit(proxy)
        authorization = ""
        if via.username is not None:
            credentials = base64.b64encode(f"{unquote(via.username)}:{unquote(via.password or '')}".encode()).decode()
            authorization = f"Proxy-Authorization: Basic {credentials}\r\n"
        if secure:  # the proxy sees only the tunnel's address; the request inside it is the server's
            tunnel = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            return cls(key, via.hostname or "", via.port or 80, tls_host, tunnel, authorization, _start(path, host_header))
        # Plain http through the proxy: the absolute URL, and the proxy's credentials on each request.
        return cls(key, via.hostname or "", via.port or 80, None, None, authorization, _start(f"http://{host_header}{path}", host_header) + authorization)

    def message(self, method: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        """The request's bytes. Header values are checked where they are made (a token in
        options.py, the saved token in server.py): printable ASCII, no line break."""
        lines = [method, " ", self.start]
        for name, value in headers.items():
            lines += (name, ": ", value, "\r\n")
        if body is not None:
            lines += ("Content-Length: ", str(len(body)), "\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        return head + body if body else head


def _start(target: str, host_header: str) -> str:
    """The request line after the method, the Host header and the headers every request carries."""
    return f"{target} HTTP/1.1\r\nHost: {host_header}\r\n{_FIXED_HEADERS}"


def _open_one(idle: list[_Connection]) -> _Connection | None:
    """The most recently used idle connection still open; those the server closed are dropped."""
    while idle:
        connection = idle.pop()
        if not connection.closed:
            return connection
    return None


async def _open(route: _Route, within: float) -> _Connection:
    try:
        if within <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(_connect(route), within)
    except asyncio.TimeoutError:
        raise Failure("connection", f"no connection within {max(within, 0):g} s", Outcome.REFUSED) from None
    except ssl.SSLError as err:  # before OSError, which it also is
        raise _tls_failed(err) from err
    except OSError as err:
        raise Failure("connection", f"cannot connect ({type(err).__name__}: {err})", Outcome.REFUSED) from err


async def _connect(route: _Route) -> _Connection:
    loop = asyncio.get_running_loop()
    direct_tls = _tls_context() if route.tls_host is not None and route.tunnel is None else None
    _, connection = await loop.create_connection(_Connection, route.connect_host, route.connect_port, ssl=direct_tls, server_hostname=route.tls_host if direct_tls else None)
    if route.tunnel is None:
        return connection
    try:
        answer = _Answer(0, bodiless=True)
        message = f"CONNECT {route.tunnel} HTTP/1.1\r\nHost: {route.tunnel}\r\n{route.proxy_authorization}\r\n"
        try:
            await connection.exchange(message.encode("latin-1"), answer, None)
        except _Unanswered as err:
            raise ConnectionError(f"the proxy {route.connect_host}:{route.connect_port} closed the connection ({err})") from None
        if not 200 <= answer.status < 300:
            refusal = f"the proxy {route.connect_host}:{route.connect_port} refused a tunnel to {route.tunnel} (HTTP {answer.status})"
            raise Failure("proxy", refusal, Outcome.REFUSED, retryable=False, systematic=True)
        tls = await loop.start_tls(connection.transport, connection, _tls_context(), server_hostname=route.tls_host)
        if tls is None:  # the proxy ended the tunnel as the handshake ended
            raise ConnectionError(f"the proxy {route.connect_host}:{route.connect_port} closed the tunnel")
        connection.transport, connection.fresh = tls, True
    except BaseException:
        connection.close()
        raise
    return connection


@functools.lru_cache(maxsize=4)
def _tls_context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # The arguments are the cache key only: OpenSSL reads both variables as the context is made.
    return ssl.create_default_context()


def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates, or those of `SSL_CERT_FILE` / `SSL_CERT_DIR` as set now
    (OpenSSL reads them instead of its default places)."""
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


class _Unanswered(Exception):
    """The connection ended before a byte of the answer came back; `stale`: at once, as a
    connection the server had closed while idle does."""

    def __init__(self, message: str, *, stale: bool) -> None:
        super().__init__(message)
        self.stale = stale


class _Connection(asyncio.Protocol):
    """One connection, reading one answer at a time."""

    transport: asyncio.Transport  # set by connection_made, before the protocol is handed out

    def __init__(self) -> None:
        self.closed = False
        self.fresh = True  # no answer read on it yet: a TLS error now is the handshake's
        self._pending: tuple[_Answer, asyncio.Future[None]] | None = None  # the answer being read
        self._sent_at = 0.0

    async def exchange(self, message: bytes, answer: _Answer, expires: float | None) -> None:
        """Send `message` and read `answer` until it is complete; raises `Failure`, `_Unanswered`
        or `asyncio.TimeoutError` (at loop time `expires`)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending = (answer, done)
        timer = loop.call_at(expires, self._fail, asyncio.TimeoutError()) if expires is not None else None
        try:
            self._sent_at = loop.time()
            self.transport.write(message)
            await done
            self.fresh = False
        finally:
            if timer is not None:
                timer.cancel()
            self._pending = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's are not asyncio's subclasses)

    def data_received(self, data: bytes) -> None:
        if self._pending is None or self._pending[1].done():  # bytes nobody asked for: the connection cannot be trusted again
            self.close()
            return
        answer, done = self._pending
        try:
            complete = answer.feed(data)
        except Failure as failure:
            self._fail(failure)
            return
        if complete:
            done.set_result(None)

    def eof_received(self) -> bool:
        self.closed = True
        self._end(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end(exc)

    def _end(self, exc: Exception | None) -> None:
        if self._pending is None or self._pending[1].done():
            return
        answer, done = self._pending
        if answer.ends_at_close() and exc is None:
            done.set_result(None)
        elif not answer.started and self.fresh and isinstance(exc, ssl.SSLError):  # refused just after the handshake (a client certificate required)
            done.set_exception(_tls_failed(exc))
        elif not answer.started:
            stale = asyncio.get_running_loop().time() - self._sent_at < _STALE_WINDOW
            done.set_exception(_Unanswered(f"{type(exc).__name__}: {exc}" if exc else "the server closed it without answering", stale=stale))
        else:
            done.set_exception(_lost(f"{type(exc).__name__}: {exc}" if exc else "the server closed it mid-answer"))

    def _fail(self, error: Exception) -> None:
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(error)
        self.close()

    def close(self) -> None:
        """At once: no TLS close_notify exchange, which a loop ending next would cut short."""
        self.closed = True
        self.transport.abort()


class _Answer:
    """One HTTP/1.1 answer, read from its bytes as they arrive: the head, then the body by its
    framing (a length, chunks, or up to the connection's end)."""

    def __init__(self, cap: int, *, bodiless: bool = False) -> None:
        self.cap, self.bodiless = cap, bodiless
        self.status = 0
        self.headers: dict[str, str] = {}
        self.started = False  # a byte came back
        self._framing = "head"  # then "length", "chunk-size", "chunk-data", "chunk-end", "trailer", "close", "done"
        self._buffer = bytearray()
        self._remaining = 0
        self._keep_alive = False
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def body(self) -> bytes:
        return b"".join(self._parts)

    @property
    def reusable(self) -> bool:
        """Complete, and the connection may carry another request."""
        return self._framing == "done" and self._keep_alive

    def feed(self, data: bytes) -> bool:
        """Take the bytes that arrived; True once the answer is complete."""
        self.started = True
        if self._framing == "head":
            self._buffer += data
            if not self._read_head():
                return False
            data = bytes(self._buffer)  # what came after the head
            self._buffer.clear()
        if self._framing == "length":
            return self._take_length(data)
        if self._framing == "close":
            self._add(data)
            return False
        self._buffer += data
        return self._take_chunks()

    def ends_at_close(self) -> bool:
        """Whether the connection's end completes this answer (a body without length or chunks)."""
        return self._framing == "close"

    def _read_head(self) -> bool:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    raise _malformed(f"no end of its head in {_MAX_HEAD >> 10} KiB")
                return False
            lines = self._buffer[:end].decode("latin-1").split("\r\n")
            del self._buffer[: end + 4]
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if not (version in ("HTTP/1.1", "HTTP/1.0") and code.isascii() and code.isdigit() and rest[3:4] in ("", " ")):
                raise _malformed(f"it starts {lines[0][:60]!r}")
            if code[0] != "1":  # 1xx answers are interim: the real one follows
                break
        self.status = int(code)
        headers = self.headers
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _malformed(f"a header line reads {line[:60]!r}")
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        length, coding = headers.get("content-length"), headers.get("transfer-encoding")
        if self.bodiless or self.status in (204, 304):
            self._framing, self._remaining = "length", 0
        elif coding is not None:  # it overrides a Content-Length, and the two together make a suspect answer
            chunked = coding.rsplit(",", 1)[-1].strip().lower() == "chunked"
            self._framing = "chunk-size" if chunked else "close"
            self._keep_alive = self._keep_alive and chunked and length is None
        elif length is not None:
            if not (length.isascii() and length.isdigit()):
                raise _malformed(f"its Content-Length is {length[:30]!r}")
            if len(length) > 18 or int(length) > self.cap:  # 18 digits: below int()'s limit on long strings
                raise _too_large(self.cap)
            self._framing, self._remaining = "length", int(length)
        else:
            self._framing, self._keep_alive = "close", False
        return True

    def _take_length(self, data: bytes) -> bool:
        if len(data) >= self._remaining:
            if len(data) > self._remaining:  # more than the answer: the connection is out of step
                self._keep_alive = False
                data = data[: self._remaining]
            self._add(data)
            self._remaining = 0
            return self._complete()
        self._add(data)
        self._remaining -= len(data)
        return False

    def _take_chunks(self) -> bool:
        buffer = self._buffer
        while True:
            if self._framing == "chunk-data":
                taken = bytes(buffer[: self._remaining])
                del buffer[: self._remaining]
                self._add(taken)
                self._remaining -= len(taken)
                if self._remaining:
                    return False
                self._framing = "chunk-end"
            if self._framing == "chunk-end":
                if len(buffer) < 2:
                    return False
                if buffer[:2] != b"\r\n":
                    raise _malformed("a chunk does not end with CRLF")
                del buffer[:2]
                self._framing = "chunk-size"
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > _MAX_CHUNK_LINE:
                    raise _malformed("a chunk's size line has no end")
                return False
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if self._framing == "trailer":
                if not line:
                    if buffer:
                        self._keep_alive = False
                    return self._complete()
                continue
            size = line.split(b";", 1)[0].strip()
            if not size or size.strip(_HEX_DIGITS):
                raise _malformed(f"a chunk's size reads {line[:30]!r}")
            self._remaining = int(size, 16)
            self._framing = "trailer" if self._remaining == 0 else "chunk-data"

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.cap:
            raise _too_large(self.cap)
        self._parts.append(data)

    def _complete(self) -> bool:
        self._framing = "done"
        return True


def _lost(cause: str) -> Failure:
    return Failure("connection", f"the connection failed ({cause})", Outcome.LOST)


def _tls_failed(err: ssl.SSLError) -> Failure:
    return Failure("tls", f"the TLS handshake failed ({type(err).__name__}: {err})", Outcome.REFUSED)


def _malformed(what: str) -> Failure:
    return Failure("bad_response", f"the server's answer is not HTTP/1.1: {what}", Outcome.ERROR)


def _too_large(cap: int) -> Failure:
    # At temperature 0 the same request gets the same oversized answer: asking again cannot help.
    return Failure("bad_response", f"the answer is larger than {cap // 1024} KiB; refused unread", Outcome.ERROR, retryable=False)


def run_blocking(work: Callable[[Http], Awaitable[T]], timeout: float) -> T:
    """`work` on a fresh loop in its own thread, for sync callers (a notebook's thread may
    already run a loop, where `asyncio.run` is refused)."""

    async def main() -> T:
        http = Http(timeout)
        try:
            return await work(http)
        finally:
            await http.aclose()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="coevol-hf-probe") as thread:
        return thread.submit(asyncio.run, main()).result()


def is_loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address. Not `*.localhost`: without a resolver that knows the
    name (RFC 6761), it can be asked of DNS, and answered with any address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxy_for(url: str) -> str | None:
    """The proxy `HTTP(S)_PROXY` / `NO_PROXY` name for this URL; never one for a loopback host.

    Raises `ConfigError` for a proxy that is not an `http://` one (a bare `host:port` is taken
    as one), the only kind spoken to.
    """
    if is_loopback(url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme
    proxy = None if urllib.request.proxy_bypass_environment(parts.hostname or "") else urllib.request.getproxies_environment().get(scheme)
    if proxy is None:
        return None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    if not is_http_url(proxy, ("http",)):
        via = urlsplit(proxy)
        shown = f"{via.scheme}://{via.hostname or ''}"  # never its credentials
        raise ConfigError(f"The proxy set by {scheme.upper()}_PROXY ({shown}...) is not an http://host:port address, the only kind coevol-hf speaks to.")
    return proxy
