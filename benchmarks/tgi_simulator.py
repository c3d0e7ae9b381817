"""A TGI-protocol server that simulates a GPU: fixed service time per request, a slot limit.

Like TGI with `--max-concurrent-requests`, a request arriving while every slot is busy gets
429 `{"error": "Model is overloaded", "error_type": "overloaded"}`; `/info` advertises the limit.
Replies are cheap and deterministic so that the client does real CoEvol work: advisor-style
suggestion lines for every agent, and a JSON verdict for judge requests (those that ask for a
schema) that prefers one of the two answers by a hash of their texts, the same in both orders,
so about half of all edits are accepted and rows run 1 to `max_rounds` rounds.

Run it in its own process so that its CPU time is not counted as the client's:

    python benchmarks/tgi_simulator.py --slots 32 --service-time 0.1

It prints its URL; `GET /stats` returns the counters (busy slot-seconds, requests, 429s) and
`POST /stats/reset` zeroes them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import time

from aiohttp import web

_ANSWER = re.compile(r"\[Answer ([AB])\]\n(.*?)\n\[End of answer \1\]", re.S)
MODEL_ID = "simulated/coevol-benchmark-model"


class Simulator:
    def __init__(self, slots: int, service_time: float) -> None:
        self.slots = slots
        self.service_time = service_time
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.busy_seconds = 0.0
        self.served = 0
        self.overloaded = 0
        self.peak_in_flight = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/info", self.info)
        app.router.add_get("/health", lambda _: web.Response(status=200))
        app.router.add_get("/v1/models", lambda _: web.json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]}))
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/stats/reset", self.reset_stats)
        return app

    async def info(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"model_id": MODEL_ID, "model_sha": "simulated", "max_concurrent_requests": self.slots, "version": "3.3.6-simulated"}
        )

    async def chat(self, request: web.Request) -> web.Response:
        if self.in_flight >= self.slots:
            self.overloaded += 1
            return web.json_response({"error": "Model is overloaded", "error_type": "overloaded"}, status=429)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            body = await request.json()
            started = time.monotonic()
            await asyncio.sleep(self.service_time)
            self.busy_seconds += time.monotonic() - started
        finally:
            self.in_flight -= 1
        self.served += 1
        task = body["messages"][-1]["content"]
        text = _verdict(task) if "response_format" in body else _suggestions(task)
        return web.json_response(
            {
                "object": "chat.completion",
                "id": "",
                "created": int(time.time()),
                "model": MODEL_ID,
                "system_fingerprint": "3.3.6-simulated",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(task) // 4, "completion_tokens": len(text) // 4, "total_tokens": (len(task) + len(text)) // 4},
            }
        )

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "slots": self.slots,
                "service_time": self.service_time,
                "busy_slot_seconds": self.busy_seconds,
                "served": self.served,
                "overloaded": self.overloaded,
                "peak_in_flight": self.peak_in_flight,
                "seconds_since_reset": time.monotonic() - self.started,
            }
        )

    async def reset_stats(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})


def _suggestions(task: str) -> str:
    tag = hashlib.sha256(task.encode()).hexdigest()[:8]
    return f"- Add a concrete example ({tag}).\n- State the main caveat.\n- Be more precise."


def _verdict(task: str) -> str:
    answers = dict(_ANSWER.findall(task))
    a, b = answers.get("A", ""), answers.get("B", "")
    better = "A" if hashlib.sha256(a.encode()).digest() > hashlib.sha256(b.encode()).digest() else "B"
    return json.dumps({"better": better, "reason": "simulated"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--service-time", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    simulator = Simulator(args.slots, args.service_time)

    async def serve() -> None:
        runner = web.AppRunner(simulator.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
