"""Which endpoint takes the next call, and how many calls each one gets at a time.

Each endpoint has a limit on calls in flight that starts at `max_concurrency`, never exceeds
the server's advertised `max_concurrent_requests`, halves on a 429 ("Model is overloaded": TGI
has no queue beyond its limit) and grows back by one per limit's worth of successes (AIMD, as
TCP does). A call goes to the live endpoint with the fewest calls in flight. An endpoint that
refuses connections is taken out; one that fails several calls in a row (5xx, timeouts, broken
connections, unreadable answers) is checked (`/health`, and that it still serves the same
model) and taken out if the check fails: one bad prompt must not take a healthy server out.
Endpoints taken out are checked again, less and less often, until they pass.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import hashlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine

if TYPE_CHECKING:  # server.py imports this module through http.py
    from .server import ServerInfo, Target

logger = logging.getLogger(__name__)

_FAILURES_BEFORE_CHECK = 3
_LOAD_BOUND = 1.25  # a row's endpoint may hold this much over an even share of the calls in flight
_PROBE_INTERVAL = (1.0, 30.0)  # first and longest wait between probes of a down endpoint


class Outcome(enum.Enum):
    """How an endpoint did on one call: what the pool learns from it."""

    OK = "ok"  # it answered sanely (a final 4xx is the request's fault, not the endpoint's)
    OVERLOADED = "overloaded"  # 429: fewer calls at a time
    ERROR = "error"  # 5xx, unreadable answer: several in a row trigger a health check
    LOST = "lost"  # timeout, broken connection: counted as ERROR
    REFUSED = "refused"  # no connection at all: taken out at once
    CANCELLED = "cancelled"  # our side gave up: says nothing about the endpoint


class Endpoint:
    """One replica: its URL, the headers it gets, what it serves and how busy it is."""

    def __init__(self, target: Target, server: ServerInfo | None, max_concurrency: int) -> None:
        self.target = target
        self.url = target.url
        self.max_concurrency = max_concurrency
        self.server = server
        self.in_flight = 0
        self.failures = 0
        self.limit = float(self.ceiling)
        self.last_cut = 0.0
        self.up = server is not None

    @property
    def ceiling(self) -> int:
        advertised = self.server.max_concurrent_requests if self.server is not None else None
        return min(self.max_concurrency, advertised) if advertised else self.max_concurrency

    @property
    def has_room(self) -> bool:
        return self.up and self.in_flight < int(self.limit)


class EndpointPool:
    """Hands out endpoints for calls; `probe` re-checks a down one (returns its ServerInfo or raises)."""

    def __init__(self, endpoints: list[Endpoint], probe: Callable[[Endpoint], Awaitable[ServerInfo]]) -> None:
        self.endpoints = endpoints
        self._probe = probe
        # Calls waiting for room, each with the endpoint it avoids (a retry's failed one) or None.
        self._waiters: collections.deque[tuple[asyncio.Future[None], Endpoint | None]] = collections.deque()
        self._probing: set[str] = set()
        self._checking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        for endpoint in endpoints:
            if not endpoint.up:
                self._schedule_probe(endpoint)

    @property
    def any_up(self) -> bool:
        return any(e.up for e in self.endpoints)

    async def acquire(self, affinity: str | None = None, *, avoid: Endpoint | None = None) -> Endpoint | None:
        """The endpoint for the next call, waiting for room; None when every endpoint is down.

        `affinity` names the call's row: its endpoint is preferred while it has room. `avoid` (the
        endpoint a retried call just failed on) is used only when no other endpoint is up: a
        replica that fails fast always has room, and would take every retry of its rows."""
        while True:
            shunned = avoid if self._others_up(avoid) else None
            candidates = [e for e in self.endpoints if e.has_room and e is not shunned]
            if candidates:
                preferred = self._row_endpoint(affinity) if affinity is not None and len(self.endpoints) > 1 else None
                endpoint = preferred or min(candidates, key=lambda e: e.in_flight)
                endpoint.in_flight += 1
                return endpoint
            if not self.any_up:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((waiter, shunned))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)  # pass on the room we were given
                raise

    def release(self, endpoint: Endpoint, outcome: Outcome, sent_at: float) -> None:
        """Give back the endpoint of a finished call. `sent_at` (time.monotonic()) tells 429s to
        calls sent before the last cut, which that cut already answered, from new ones."""
        endpoint.in_flight -= 1
        before = int(endpoint.limit)
        if outcome is Outcome.OK:
            endpoint.failures = 0
            endpoint.limit = min(float(endpoint.ceiling), endpoint.limit + 1 / endpoint.limit)
        elif outcome is Outcome.CANCELLED:
            pass
        elif outcome is Outcome.OVERLOADED:
            if sent_at > endpoint.last_cut:
                endpoint.limit = max(1.0, endpoint.limit / 2)
                endpoint.last_cut = time.monotonic()
                logger.info("%s is overloaded (429): %d calls in flight at most for now", endpoint.url, int(endpoint.limit))
        elif outcome is Outcome.REFUSED:
            self._take_out(endpoint)
        else:
            endpoint.failures += 1
            if endpoint.failures >= _FAILURES_BEFORE_CHECK and endpoint.up and endpoint.url not in self._checking:
                self._checking.add(endpoint.url)
                self._spawn(self._check(endpoint))
        self._wake(1 + max(0, int(endpoint.limit) - before), freed=endpoint)

    def _row_endpoint(self, affinity: str) -> Endpoint | None:
        """The row's endpoint (the highest hash of (affinity, URL) among those up), if it may take
        the call: room within its own limit and within the bound on its share of the calls in flight."""
        up = [e for e in self.endpoints if e.up]
        if not up:
            return None
        endpoint = max(up, key=lambda e: hashlib.blake2b(f"{e.url}\n{affinity}".encode(), digest_size=8).digest())
        bound = math.ceil(_LOAD_BOUND * (sum(e.in_flight for e in up) + 1) / len(up))
        return endpoint if endpoint.has_room and endpoint.in_flight + 1 <= bound else None

    def close(self) -> None:
        """Stop checking down endpoints: the session is closing, or was probed again."""
        for task in list(self._tasks):
            task.cancel()

    def _wake(self, count: int, *, freed: Endpoint | None = None) -> None:
        """Wake `count` waiters, in order; room `freed` on one endpoint goes past the waiters that
        avoid it (they would find no room and wait again) while another endpoint is up."""
        others_up = self._others_up(freed)
        passed: list[tuple[asyncio.Future[None], Endpoint | None]] = []
        while count > 0 and self._waiters:
            waiter, avoided = self._waiters.popleft()
            if waiter.done():
                continue
            if others_up and avoided is freed:
                passed.append((waiter, avoided))
                continue
            waiter.set_result(None)
            count -= 1
        self._waiters.extendleft(reversed(passed))
        if not self.any_up:  # nobody will release: let every waiter see that
            while self._waiters:
                waiter, _ = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    def _others_up(self, endpoint: Endpoint | None) -> bool:
        """Whether an endpoint other than `endpoint` (when given) is up: only then is it avoided."""
        return endpoint is not None and any(e.up and e is not endpoint for e in self.endpoints)

    def _take_out(self, endpoint: Endpoint) -> None:
        if endpoint.up:
            endpoint.up = False
            logger.warning("Taking %s out of the rotation; it will be checked again.", endpoint.url)
            self._schedule_probe(endpoint)

    async def _check(self, endpoint: Endpoint) -> None:
        try:
            endpoint.server = await self._probe(endpoint)
            endpoint.failures = 0
        except Exception as err:
            logger.warning("%s failed its check after failed calls: %s", endpoint.url, err)
            self._take_out(endpoint)
            self._wake(0)
        finally:
            self._checking.discard(endpoint.url)

    def _schedule_probe(self, endpoint: Endpoint) -> None:
        if endpoint.url not in self._probing:
            self._probing.add(endpoint.url)
            self._spawn(self._probe_until_up(endpoint))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_until_up(self, endpoint: Endpoint) -> None:
        wait, longest = _PROBE_INTERVAL
        try:
            while True:
                await asyncio.sleep(wait)
                try:
                    endpoint.server = await self._probe(endpoint)
                except Exception as err:  # still down, or now serving something else
                    logger.info("%s is still out of the rotation: %s", endpoint.url, err)
                    wait = min(longest, wait * 2)
                    continue
                endpoint.up, endpoint.failures = True, 0
                endpoint.limit = max(1.0, min(endpoint.limit, float(endpoint.ceiling)))
                logger.warning("%s is back in the rotation.", endpoint.url)
                self._wake(int(endpoint.limit))
                return
        finally:
            self._probing.discard(endpoint.url)
