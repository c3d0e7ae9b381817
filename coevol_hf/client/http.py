"""HTTP for every request coevol-hf sends to an LLM server, on aiohttp.

aiohttp costs 0.14 ms of CPU per call here, against 1.06 ms for huggingface_hub's httpx session
(benchmarks/http_client_cost.py), and does not refuse local servers under `HF_HUB_OFFLINE`. What
the transport guarantees, because a long run must not hang or leak on one bad server:

- no redirect is followed: a 301/302 would turn a POST into a GET and carry the token to
  another host; the caller sees the 3xx and says where it points;
- one deadline per request, from sending to the last byte, so a server trickling a byte a
  minute cannot hold a call forever;
- a reply larger than its cap is refused, never read into memory;
- a failed TLS handshake is named as such, with its cause chained, never as "cannot reach".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import urllib.request
from typing import Awaitable, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

import aiohttp

from .pool import Outcome

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Failure(Exception):
    """A failed attempt: the row error kind it becomes, how the endpoint did, whether to retry.

    `systematic`: every call would get it alike (credentials, route, redirect), so a few in a
    row stop the run instead of writing the same error on every row.
    """

    def __init__(
        self, kind: str, message: str, outcome: Outcome, *, retryable: bool = True, retry_after: float | None = None, systematic: bool = False
    ) -> None:
        super().__init__(message)
        self.kind, self.outcome, self.retryable, self.retry_after, self.systematic = kind, outcome, retryable, retry_after, systematic

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


class Http:
    """One aiohttp session for the running event loop, made on first use inside it.

    A session is bound to its loop; a request from another loop (a forked worker, a test's new
    `asyncio.run`) gets a new session, and the old one is left to its loop.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = deadline(timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        body: bytes | None = None,
        cap: int,
        proxy: str | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Response:
        """One request, without redirects, read to the end within the timeout; raises `Failure`."""
        session = self._session_here()
        timeout = timeout or self.timeout
        try:
            async with session.request(method, url, data=body, headers=headers, allow_redirects=False, proxy=proxy, timeout=timeout) as response:
                if response.content_length is not None and response.content_length > cap:
                    raise _too_large(cap)
                chunks, size = [], 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > cap:
                        raise _too_large(cap)
                    chunks.append(chunk)
                return Response(response.status, response.headers, b"".join(chunks))
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as err:
            cause = getattr(err, "certificate_error", None) or getattr(err, "os_error", None) or err
            raise Failure("tls", f"the TLS handshake failed ({type(cause).__name__}: {cause})", Outcome.REFUSED) from err
        except aiohttp.ClientConnectorError as err:
            raise Failure("connection", f"cannot connect ({type(err.os_error).__name__}: {err.os_error})", Outcome.REFUSED) from err
        except aiohttp.ConnectionTimeoutError as err:  # before asyncio.TimeoutError, which it also is
            raise Failure("connection", f"no connection within {timeout.connect:g} s", Outcome.REFUSED) from err
        except asyncio.TimeoutError as err:
            raise Failure("timeout", f"no complete answer within {timeout.total:g} s", Outcome.LOST) from err
        except aiohttp.ClientError as err:
            raise Failure("connection", f"the connection failed ({type(err).__name__}: {err})", Outcome.LOST) from err

    async def aclose(self) -> None:
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            # limit=0: the endpoint pool bounds calls in flight; a second bound would only queue them.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, trust_env=False)
            self._loop = loop
        return self._session


def deadline(seconds: float) -> aiohttp.ClientTimeout:
    """`seconds` from sending to the last byte of the answer, of which 10 (half, if less) at most to
    connect: a server that cannot be reached is told apart from one that answers slowly."""
    return aiohttp.ClientTimeout(total=seconds, connect=min(seconds / 2, CONNECT_TIMEOUT))


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

    Read here rather than with aiohttp's `trust_env`, which would also send `~/.netrc`
    credentials, over plain http too.
    """
    if is_loopback(url):
        return None
    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies_environment().get(urlsplit(url).scheme)


def _too_large(cap: int) -> Failure:
    # At temperature 0 the same request gets the same oversized answer: asking again cannot help.
    return Failure("bad_response", f"the answer is larger than {cap // 1024} KiB; refused unread", Outcome.ERROR, retryable=False)

