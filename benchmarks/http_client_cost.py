"""The CPU cost of one HTTP call, by client library, against the simulator (no service time by default).

It separates the transport's floor from coevol-hf's own work: each library posts the same chat
completion body `--calls` times, `--concurrency` at a time, and we divide process CPU time by calls.
Then coevol-hf's own `Http` alone, and last its `ClientSession` making `--calls` distinct calls (a
first run: every call a request cache miss, encoded, keyed, sent, read, checked and written to
SQLite).

    python benchmarks/http_client_cost.py --calls 3000
    python benchmarks/http_client_cost.py --calls 3000 --concurrency 64 --service-time 0.1

With no service time the event loop is never idle and each of its turns handles many replies;
with `--service-time 0.1 --concurrency 64` calls are paced as in `throughput.py --slots 64
--concurrency 64` (at most 640 a second, a few replies per turn), where every call costs more.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from typing import Any, Awaitable, Callable

from throughput import SimulatorProcess

BODY = {
    "model": "tgi",
    "messages": [{"role": "system", "content": "You are a reviewer."}, {"role": "user", "content": "Instruction:\nSay hi.\n\nAnswer under review:\nHi!"}],
    "max_tokens": 1000,
    "temperature": 0.0,
    "seed": 0,
}


async def measure(post: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await post()

    await asyncio.gather(*(one() for _ in range(20)))  # warm up connections
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return 1000 * (time.process_time() - started) / calls


async def httpx2_session(url: str, calls: int, concurrency: int) -> float:
    from huggingface_hub.utils import get_async_session

    async with get_async_session() as session:

        async def post() -> Any:
            response = await session.post(url, json=BODY, timeout=60)
            return json.loads(response.content)

        return await measure(post, calls, concurrency)


async def httpcore2_pool(url: str, calls: int, concurrency: int) -> float:
    import httpcore2

    async with httpcore2.AsyncConnectionPool(max_connections=concurrency) as pool:
        payload = json.dumps(BODY).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]

        async def post() -> Any:
            response = await pool.request("POST", url, headers=headers, content=payload)
            return json.loads(response.content)

        return await measure(post, calls, concurrency)


async def aiohttp_session(url: str, calls: int, concurrency: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def post() -> Any:
            async with session.post(url, json=BODY) as response:
                return json.loads(await response.read())

        return await measure(post, calls, concurrency)


async def coevol_http(url: str, calls: int, concurrency: int) -> float:
    from coevol_hf.client.http import Http

    http = Http(60.0)
    payload = json.dumps(BODY).encode()
    headers = {"content-type": "application/json"}

    async def post() -> Any:
        response = await http.request("POST", url, headers, body=payload, cap=1 << 20)
        return json.loads(response.body)

    try:
        return await measure(post, calls, concurrency)
    finally:
        await http.aclose()


async def coevol_session(url: str, calls: int, concurrency: int) -> float:
    from coevol_hf.client.session import ClientSession
    from coevol_hf.options import CoEvolOptions

    with tempfile.TemporaryDirectory() as cache_dir:
        options = CoEvolOptions(endpoint=url.removesuffix("/v1/chat/completions"), max_concurrency=concurrency, cache_dir=cache_dir)
        session = ClientSession(options.connection(), options.sampling)
        await asyncio.to_thread(session.server)
        numbers = itertools.count()
        system, user = BODY["messages"]

        async def post() -> Any:
            return await session([system, {"role": "user", "content": f"{user['content']} ({next(numbers)})"}])

        try:
            return await measure(post, calls, concurrency)
        finally:
            await session.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--service-time", type=float, default=0.0, help="seconds the simulator holds each call")
    args = parser.parse_args()
    simulator = SimulatorProcess(slots=10_000, service_time=args.service_time)
    url = simulator.url + "/v1/chat/completions"
    try:
        clients = (
            ("httpx2 (huggingface_hub's session)", httpx2_session),
            ("httpcore2 pool", httpcore2_pool),
            ("aiohttp", aiohttp_session),
            ("coevol-hf Http (HTTP/1.1 on asyncio transports)", coevol_http),
            ("coevol-hf ClientSession (its Http, request cache)", coevol_session),
        )
        for name, client in clients:
            cpu = asyncio.run(client(url, args.calls, args.concurrency))
            print(json.dumps({"client": name, "calls": args.calls, "concurrency": args.concurrency, "service_time": args.service_time, "client_cpu_ms_per_call": round(cpu, 3)}))
    finally:
        simulator.close()


if __name__ == "__main__":
    main()
