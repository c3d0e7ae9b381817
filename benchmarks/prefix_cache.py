"""How much of CoEvol's prompt reading the server's prefix cache saves, on the real local model.

    python benchmarks/prefix_cache.py [--rows 8] [--replicas 1|2] [--max-new-tokens 96]

Refines the first N Self-Instruct seed tasks (one round each) on llama.cpp serving SmolLM2-135M,
with one server or two servers as replicas. A recording proxy on 127.0.0.1 sits in front of
each server and keeps, for every answer, what the server itself reports: prompt tokens, prompt
tokens it took from its cache (`usage.prompt_tokens_details.cached_tokens`) and the milliseconds
it spent evaluating the rest of the prompt (`timings.prompt_ms`). Also reports the judge's
readable-verdict rate and the agreement of its two orders, to show a prompt layout did not hurt
the judge. The request cache is off, so every call reaches a server.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from datasets import Dataset

from coevol_hf import CoEvol
from coevol_hf.local import LocalServer
from coevol_hf.stats import compute_stats
from coevol_hf.trace import Trace

SEED_TASKS = Path(__file__).resolve().parents[1] / "tests" / "data" / "self_instruct_seed_tasks.jsonl"


def rows(n: int) -> list[dict]:
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()[:n]]
    return [{"instruction": t["instruction"], "input": t["instances"][0]["input"], "output": t["instances"][0]["output"]} for t in tasks]


@dataclasses.dataclass
class Recorded:
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prompt_ms: float = 0.0


class RecordingProxy:
    """Forwards every request to `upstream` and adds up what the answers report."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.recorded = Recorded()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def start(self) -> str:
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    async def _start(self) -> str:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self.url

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body or None, headers={"content-type": "application/json"}) as answer:
            content = await answer.read()
            if request.path == "/v1/chat/completions" and answer.status == 200:
                data = json.loads(content)
                usage, timings = data.get("usage") or {}, data.get("timings") or {}
                self.recorded.calls += 1
                self.recorded.prompt_tokens += usage.get("prompt_tokens", 0)
                self.recorded.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                self.recorded.prompt_ms += timings.get("prompt_ms", 0.0)
            return web.Response(body=content, status=answer.status, content_type=answer.content_type)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--parallel", type=int, default=4, help="slots per server")
    args = parser.parse_args()

    threads = 2 // args.replicas  # the two cores, shared between the servers
    servers = [LocalServer(parallel=args.parallel, threads=threads) for _ in range(args.replicas)]
    proxies = []
    try:
        for server in servers:
            server.start()
            proxy = RecordingProxy(server.url)
            proxy.start()
            proxies.append(proxy)
        refine = CoEvol(endpoint=[p.url for p in proxies], max_rounds=1, max_new_tokens=args.max_new_tokens, request_cache=False, cache_dir=tempfile.mkdtemp())
        started = time.perf_counter()
        out = Dataset.from_list(rows(args.rows)).map(refine, batched=True)
        wall = time.perf_counter() - started
    finally:
        for server in servers:
            server.stop()

    total = Recorded()
    for proxy in proxies:
        for field in dataclasses.fields(Recorded):
            setattr(total, field.name, getattr(total, field.name) + getattr(proxy.recorded, field.name))
    stats = compute_stats(out)
    verdicts = readable = 0
    for text in out["coevol_trace"]:
        if text is None:
            continue
        for turn in Trace.from_json(text).turns:
            for round_ in turn.rounds:
                for verdict in (round_.old_first, round_.new_first):
                    if verdict is not None:
                        verdicts += 1
                        readable += verdict.scores is not None
    share = total.cached_tokens / total.prompt_tokens if total.prompt_tokens else 0.0
    print(f"rows {args.rows}, replicas {args.replicas}, max_new_tokens {args.max_new_tokens}, errors {stats.errors_by_kind or 'none'}")
    print(f"LLM calls {total.calls}; prompt tokens {total.prompt_tokens}, from the server's cache {total.cached_tokens} ({share:.1%})")
    print(f"server prompt evaluation {total.prompt_ms / 1000:.1f} s; wall time {wall:.1f} s")
    print(f"judge verdicts readable {readable} of {verdicts}; orders agree in {stats.judges_agree} of {stats.judged_rounds} judged rounds")


if __name__ == "__main__":
    main()
