"""One process's connection to the replicas of one model.

The session owns what every call of a run shares: what the endpoints serve (probed once, and
again on `server(refresh=True)`), which model must answer (`model=`, `model_revision=`), the
endpoint pool, the request cache, the counters and closing. It trusts only what holds: every
answer must come from the model probed, a few identical credential or route failures in a row
stop the run (every answer so far is in the request cache), and it pickles as its options and
what was probed, never as a socket, an event loop or a database handle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from typing import Any, Sequence

from ..cache import RequestCache, request_key
from ..errors import ConfigError, EndpointError, RowError
from ..options import Connection, Sampling
from ..protocol import Reply
from .http import Failure, Http, run_blocking
from .pool import Endpoint, EndpointPool, Outcome
from .server import PROBE_TIMEOUT, PROXY_HINT, ServerInfo, Target, check_health, probe
from .tgi import RequestFormat

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 60.0
_SYSTEMATIC_BEFORE_STOP = 3  # identical credential / route / redirect / proxy failures in a row
_HINTS = {
    "unauthorized": "Check token= (the saved Hugging Face token goes only to Hugging Face's API hosts over https).",
    "redirect": "Point endpoint= at the address it redirects to.",
    "proxy": PROXY_HINT,
}


@dataclasses.dataclass
class _Live:
    """What calls share on one event loop for one probe: rebuilt when either changes."""

    loop: asyncio.AbstractEventLoop
    generation: int
    server: ServerInfo
    format: RequestFormat
    pool: EndpointPool
    headers: dict[str, dict[str, str]] = dataclasses.field(repr=False)  # per endpoint URL, for POSTs; holds the token
    in_flight: dict[bytes, asyncio.Future[Reply]] = dataclasses.field(default_factory=dict)  # by request key


class _Abandoned(Exception):
    """The call that was sending a request others wait for was cancelled or interrupted."""


class ClientSession:
    """Calls for one run: `await session(messages, schema=...)` returns a `Reply`."""

    def __init__(self, connection: Connection, sampling: Sampling) -> None:
        self.connection = connection
        self.sampling = sampling
        self.calls_sent = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self._server: ServerInfo | None = None
        self._probed: dict[str, ServerInfo | None] = {}
        self._generation = 0
        self._targets: dict[str, Target] | None = None
        self._http = Http(connection.timeout)
        self._live: _Live | None = None
        self._cache = RequestCache(connection.cache_dir) if connection.request_cache else None
        self._answered_as: str | None = None  # the model name an OpenAI-style server's answers give
        self._streak: tuple[str, int] = ("", 0)

    def __getstate__(self) -> dict[str, Any]:
        return {"connection": self.connection, "sampling": self.sampling, "server": self._server, "probed": self._probed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["connection"], state["sampling"])
        self._server, self._probed = state["server"], state["probed"]

    # -- what the endpoints serve -------------------------------------------------------------

    def server(self, *, refresh: bool = False) -> ServerInfo:
        """What the endpoints serve: every endpoint that answers must serve the same model.

        One that does not answer is left out for now and probed again during the run. Call it
        from a thread that is not running the calls' event loop.
        """
        if self._server is None or refresh:
            try:
                self._adopt(run_blocking(self._probe_all, PROBE_TIMEOUT))
            except Exception:
                self._server = self._answered_as = None  # what was probed before is no longer known to hold
                raise
        return self._server

    async def _probe_all(self, http: Http) -> dict[str, ServerInfo | EndpointError]:
        targets = self._target_map()
        results = await asyncio.gather(*(probe(http, target, self.sampling) for target in targets.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, EndpointError):
                raise result  # ConfigError: this model is not served; anything else is a bug
        return dict(zip(targets, results))

    def _adopt(self, results: dict[str, ServerInfo | EndpointError]) -> None:
        answered = {url: info for url, info in results.items() if isinstance(info, ServerInfo)}
        errors = [error for error in results.values() if isinstance(error, EndpointError)]
        if not answered:
            if len(errors) == 1:
                raise errors[0]
            raise EndpointError("No endpoint answers: " + " | ".join(map(str, errors))) from errors[0]
        if len({(info.identity, info.kind) for info in answered.values()}) > 1:
            listing = ", ".join(f"{url} serves {info.identity!r} ({info.kind})" for url, info in answered.items())
            raise ConfigError(f"The endpoints must be replicas of one model and server kind: {listing}.")
        server = next(iter(answered.values()))
        if self._server is not None and server.identity != self._server.identity:
            logger.warning("The endpoints now serve %r, no longer %r.", server.identity, self._server.identity)
            self._answered_as = None
        self._server = server
        self._probed = {url: info if isinstance(info, ServerInfo) else None for url, info in results.items()}
        self._generation += 1

    def _target_map(self) -> dict[str, Target]:
        """Each endpoint's URL, headers and proxy; made per process, since it holds the token."""
        if self._targets is None:
            self._targets = {url: Target.of(url, self.connection.token) for url in self.connection.endpoints}
        return self._targets

    # -- calls ----------------------------------------------------------------------------------

    async def __call__(self, messages: Sequence[dict[str, str]], *, schema: dict | None = None, affinity: str | None = None) -> Reply:
        """From the request cache when answered before, else over HTTP (with the request cache on,
        once for identical calls in flight together); `affinity` (the row) sends calls that share
        a prompt prefix to the same replica.

        Raises `RowError` for a call that finally failed, `EndpointError` to stop the run.
        """
        live = self._live_here()
        body = live.format.encode(messages, schema)
        if self._cache is None:
            return await self._send(live, body, affinity)
        key = request_key(live.server.identity, live.format.route, body)
        cached = _cached_reply(self._cache.get(key))
        if cached is not None:
            self.cache_hits += 1
            return cached
        while (shared := live.in_flight.get(key)) is not None:
            # Rows with the same instruction and response ask the same at the same time: wait for
            # the answer the first one is getting (shielded: a waiter's cancellation is its own).
            try:
                reply = await asyncio.shield(shared)
            except _Abandoned:
                continue  # its sender was cancelled: send it ourselves
            self.cache_hits += 1
            return reply
        self.cache_misses += 1
        shared = live.in_flight[key] = asyncio.get_running_loop().create_future()
        try:
            reply = await self._send(live, body, affinity)
        except BaseException as err:  # cancelled, or interrupted: the waiters send their own
            shared.set_exception(err if isinstance(err, Exception) else _Abandoned())
            shared.exception()  # retrieved, whether or not anyone waits
            raise
        finally:
            del live.in_flight[key]
        shared.set_result(reply)
        self._cache.put(key, vars(reply))  # every field of the record, read back by `_cached_reply`
        return reply

    async def aclose(self) -> None:
        if self._live is not None:
            self._live.pool.close()
            self._live = None
        await self._http.aclose()
        if self._cache is not None:
            self._cache.close()

    def _live_here(self) -> _Live:
        """The pool and request format for this loop and the latest probe (made on first use)."""
        loop = asyncio.get_running_loop()
        live = self._live
        if live is not None and live.loop is loop and live.generation == self._generation and self._server is not None:
            return live
        if live is not None and live.loop is loop:
            live.pool.close()
        server = self._server if self._server is not None else self.server()  # blocks this loop once
        targets = self._target_map()
        endpoints = [Endpoint(targets[url], self._probed.get(url), self.connection.max_concurrency) for url in targets]
        headers = {url: {**target.headers, "content-type": "application/json"} for url, target in targets.items()}
        self._live = _Live(loop, self._generation, server, RequestFormat(self.sampling, server), EndpointPool(endpoints, self._recheck), headers)
        return self._live

    async def _send(self, live: _Live, body: bytes, affinity: str | None) -> Reply:
        """The one retry routine: the row's endpoint or the least busy, again after transient
        failures; a retry goes to another endpoint than the one that failed, when one is up."""
        retries = self.connection.max_retries
        failure: Failure | None = None
        failed: Endpoint | None = None
        for attempt in range(retries + 1):
            endpoint = await live.pool.acquire(affinity if failed is None else None, avoid=failed)
            if endpoint is None:
                failure = failure or Failure("connection", "no endpoint is up", Outcome.REFUSED)
            else:
                try:
                    reply = await self._attempt(live, endpoint, body)
                    self._streak = ("", 0)
                    return reply
                except Failure as caught:
                    failure, failed = caught, endpoint
                    if not failure.retryable:
                        self._count_final(failure, endpoint.url + live.format.route)
                        raise RowError(failure.kind, failure.args[0]) from None
            if attempt < retries:
                await asyncio.sleep(_backoff(attempt, self.connection.retry_backoff, failure.retry_after))
        if not live.pool.any_up:
            endpoints = ", ".join(self.connection.endpoints)
            kept = "Every answer received so far is in the request cache: run" if self._cache is not None else "Run"
            raise EndpointError(f"Every endpoint is down ({endpoints}); the last call failed with {failure}. {kept} again when a server is back.") from failure
        raise RowError(failure.kind, failure.args[0])

    async def _attempt(self, live: _Live, endpoint: Endpoint, body: bytes) -> Reply:
        """One HTTP request; a `Failure` says what went wrong and whether to try again."""
        outcome, sent_at = Outcome.LOST, time.monotonic()
        try:
            response = await self._http.request(
                "POST", endpoint.url + live.format.route, live.headers[endpoint.url], body=body, cap=live.format.reply_cap, proxy=endpoint.target.proxy
            )
            reply, model = live.format.read(response)
            outcome = Outcome.OK
            self._check_model(model, live.server, endpoint.url)
            return reply
        except Failure as failure:
            outcome = failure.outcome
            raise
        except asyncio.CancelledError:
            outcome = Outcome.CANCELLED
            raise
        finally:
            if outcome is not Outcome.REFUSED:  # a refused connection sent nothing
                self.calls_sent += 1
            live.pool.release(endpoint, outcome, sent_at)

    def _check_model(self, answered: str | None, server: ServerInfo, url: str) -> None:
        """Stop the run if an answer comes from another model than the one probed.

        TGI names its `model_id` in every answer. Other servers may name an alias or a dated
        version (OpenAI: "gpt-4o" answers as "gpt-4o-2024-08-06"), so the name of their first
        answer after a probe is learned, and any other name after it stops the run.
        """
        if answered is None:
            return
        expected = server.model_id if server.kind == "tgi" else self._answered_as
        if expected is None:
            self._answered_as = expected = answered
        if answered != expected:
            raise EndpointError(
                f"{url} now answers as {answered!r}, not {expected!r}: the server behind it changed. "
                "Run again to probe it; answers already received stay cached under the model that gave them."
            )

    def _count_final(self, failure: Failure, address: str) -> None:
        """Stop the run after a few identical credential, route, redirect or proxy failures in a row."""
        if not failure.systematic:
            self._streak = ("", 0)
            return
        text = str(failure)
        count = self._streak[1] + 1 if self._streak[0] == text else 1
        self._streak = (text, count)
        if count >= _SYSTEMATIC_BEFORE_STOP:
            hint = _HINTS.get(failure.kind, f"Check the endpoint's address and api= (this run posts to {address}).")
            kept = " Every answer received so far is in the request cache: run again once this is fixed." if self._cache is not None else ""
            raise EndpointError(f"Stopping: the last {count} calls all failed with {text}. {hint}{kept}")

    async def _recheck(self, endpoint: Endpoint) -> ServerInfo:
        """Whether a down endpoint is back, healthy and serving the same model."""
        await check_health(self._http, endpoint.target)
        server = await probe(self._http, endpoint.target, self.sampling)
        expected = self._server
        if (server.identity, server.kind) != (expected.identity, expected.kind):
            raise EndpointError(f"{endpoint.url} now serves {server.identity!r}, not {expected.identity!r}")
        return server


def _cached_reply(value: Any) -> Reply | None:
    """A cached answer, if it has the shape we store; anything else (entries from before
    `cut_off` was recorded included) is asked again."""
    if not isinstance(value, dict):
        return None
    try:
        reply = Reply(**value)
    except TypeError:
        return None
    counts = (reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens)
    if isinstance(reply.text, str) and all(type(n) is int for n in counts) and type(reply.cut_off) is bool and "cut_off" in value:
        return reply
    return None


def _backoff(attempt: int, base: float, retry_after: float | None) -> float:
    """The server's `Retry-After` if it gave one, else exponential backoff with full jitter."""
    if retry_after is not None:
        return retry_after
    return random.uniform(0, min(_MAX_BACKOFF, base * 2**attempt))
