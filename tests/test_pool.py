"""The back-pressure rule of the endpoint pool, as pure logic: halve on overload, grow back, cap."""

from __future__ import annotations

import asyncio
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
