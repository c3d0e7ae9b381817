"""The back-pressure rule of the endpoint pool, as pure logic: halve on overload, grow back, cap."""

from __future__ import annotations

import asyncio
import collections
import time

from coevol_hf.client.pool import Endpoint, EndpointPool, Outcome
from coevol_hf.client.server import ServerInfo, Target


def pool_of(max_concurrency: int, advertised: int | None) -> tuple[EndpointPool, Endpoint]:
    server = ServerInfo(kind="tgi", model_id="m", max_concurrent_requests=advertised)
    endpoint = Endpoint(Target("http://127.0.0.1:1", {}), server, max_concurrency)

    async def probe(endpoint: Endpoint) -> ServerInfo:
        return server

    return EndpointPool([endpoint], probe=probe), endpoint


def test_limit_halves_once_per_overload_and_grows_back_to_the_ceiling() -> None:
    async def scenario() -> list[int]:
        pool, endpoint = pool_of(max_concurrency=64, advertised=16)
        seen = [int(endpoint.limit)]  # capped by the advertised 16, not 64
        sent = time.monotonic()
        for _ in range(10):  # ten calls in flight together, all answered 429
            await pool.acquire()
        for _ in range(10):
            pool.release(endpoint, Outcome.OVERLOADED, sent)
        seen.append(int(endpoint.limit))  # one cut for one overload
        later = time.monotonic()
        await pool.acquire()
        pool.release(endpoint, Outcome.OVERLOADED, later)
        seen.append(int(endpoint.limit))  # a 429 to a call sent after the cut cuts again
        for _ in range(200):
            await pool.acquire()
            pool.release(endpoint, Outcome.OK, time.monotonic())
        seen.append(int(endpoint.limit))
        return seen

    assert asyncio.run(scenario()) == [16, 8, 4, 16]


def test_callers_wait_for_room_and_never_exceed_the_limit() -> None:
    async def scenario() -> int:
        pool, endpoint = pool_of(max_concurrency=3, advertised=None)
        peak = 0

        async def call() -> None:
            nonlocal peak
            taken = await pool.acquire()
            peak = max(peak, taken.in_flight)
            await asyncio.sleep(0.001)
            pool.release(taken, Outcome.OK, time.monotonic())

        await asyncio.gather(*(call() for _ in range(50)))
        return peak

    assert asyncio.run(scenario()) == 3


def replicas(count: int, max_concurrency: int = 64) -> EndpointPool:
    server = ServerInfo(kind="tgi", model_id="m")
    endpoints = [Endpoint(Target(f"http://127.0.0.1:{8000 + i}", {}), server, max_concurrency) for i in range(count)]

    async def probe(endpoint: Endpoint) -> ServerInfo:
        return server

    return EndpointPool(endpoints, probe=probe)


def test_the_calls_of_a_row_go_to_one_replica_and_rows_spread_over_all() -> None:
    async def scenario() -> dict[str, set[str]]:
        pool = replicas(3)
        seen: dict[str, set[str]] = {}
        for row in range(300):
            for _ in range(8):  # one call at a time: every replica always has room
                endpoint = await pool.acquire(f"row {row}")
                seen.setdefault(f"row {row}", set()).add(endpoint.url)
                pool.release(endpoint, Outcome.OK, time.monotonic())
        return seen

    seen = asyncio.run(scenario())
    assert all(len(urls) == 1 for urls in seen.values())
    per_replica = collections.Counter(url for urls in seen.values() for url in urls)
    assert len(per_replica) == 3 and min(per_replica.values()) > 60  # 100 expected each


def test_a_replica_going_down_moves_only_its_own_rows() -> None:
    async def scenario() -> tuple[dict[str, str], dict[str, str], str]:
        pool = replicas(3)

        async def placement() -> dict[str, str]:
            placed = {}
            for row in range(90):
                endpoint = await pool.acquire(f"row {row}")
                placed[f"row {row}"] = endpoint.url
                pool.release(endpoint, Outcome.OK, time.monotonic())
            return placed

        before = await placement()
        gone = pool.endpoints[0]
        gone.up = False
        after = await placement()
        pool.close()
        return before, after, gone.url

    before, after, gone = asyncio.run(scenario())
    assert all(after[row] == url for row, url in before.items() if url != gone)
    assert gone not in after.values()


def test_a_busy_row_replica_hands_calls_to_the_least_loaded() -> None:
    async def scenario() -> list[int]:
        pool = replicas(2)
        taken = [await pool.acquire("one hot row") for _ in range(20)]  # twenty calls of one row in flight at once
        in_flight = sorted(e.in_flight for e in pool.endpoints)
        for endpoint in taken:
            pool.release(endpoint, Outcome.OK, time.monotonic())
        return in_flight

    # Bounded loads: the row's replica takes at most a quarter over an even share (13 of 20).
    assert asyncio.run(scenario()) == [7, 13]


def test_room_freed_on_a_replica_a_retry_avoids_goes_to_a_call_that_can_use_it() -> None:
    async def scenario() -> tuple[str | None, bool]:
        pool = replicas(2, max_concurrency=1)
        failing, healthy = pool.endpoints
        taken = [await pool.acquire(avoid=healthy), await pool.acquire(avoid=failing)]  # one call on each: both full
        assert taken == [failing, healthy]
        retry = asyncio.ensure_future(pool.acquire(avoid=failing))  # queued first: a retry of a call that failed there
        fresh = asyncio.ensure_future(pool.acquire())  # queued second: a new call
        await asyncio.sleep(0)
        pool.release(failing, Outcome.ERROR, time.monotonic())  # the failing replica has room again
        for _ in range(5):
            await asyncio.sleep(0)
        got = fresh.result().url if fresh.done() else None
        retry_waiting = not retry.done()
        retry.cancel()
        pool.close()
        return got, retry_waiting

    # The new call takes the room; the retry keeps waiting for the healthy replica.
    assert asyncio.run(scenario()) == ("http://127.0.0.1:8000", True)
