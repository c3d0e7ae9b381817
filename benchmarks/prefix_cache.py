"""How much of CoEvol's prompt reading the server's prefix cache saves, on the real local model.

    python benchmarks/prefix_cache.py [--rows 8] [--data seed-tasks|mt-bench] [--replicas 1|2]
                                      [--max-new-tokens 96] [--judge-pairs 16] [--parallel 4]
                                      [--context-per-slot 2048] [--pin-slot]

Refines the first N Self-Instruct seed tasks, or two-turn MT-Bench conversations with GPT-4's
answers (one round per turn), on llama.cpp serving SmolLM2-135M, with one server or two servers
as replicas. A recording proxy on 127.0.0.1 sits in front of
each server and keeps, for every answer, what the server itself reports: prompt tokens, prompt
tokens it took from its cache (`usage.prompt_tokens_details.cached_tokens`) and the milliseconds
it spent evaluating the rest of the prompt (`timings.prompt_ms`), and the most an unbounded prefix
cache could have served with the same requests (`ideal_cached`). Also reports the judge's
readable-verdict rate and the agreement of its two orders, to show a prompt layout did not hurt
the judge, on two sets of calls: the judged rounds of the refinement, and `--judge-pairs` seed
tasks judged with `PairwiseJudge` (their human answer against its own first half, which the
judge should find worse). The request cache is off, so every call reaches a server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import aiohttp
from aiohttp import web
from datasets import Dataset

from coevol_hf import CoEvol, PairwiseJudge
from coevol_hf.local import LocalServer
from coevol_hf.prompts import Prompts
from coevol_hf.stats import compute_stats
from coevol_hf.trace import Trace

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SEED_TASKS = DATA / "self_instruct_seed_tasks.jsonl"


def rows(n: int) -> list[dict]:
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()[:n]]
    return [{"instruction": t["instruction"], "input": t["instances"][0]["input"], "output": t["instances"][0]["output"]} for t in tasks]


def mt_bench_rows(n: int) -> list[dict]:
    """The first N MT-Bench questions with GPT-4 reference answers, as two-turn ShareGPT rows."""
    questions = {q["question_id"]: q for q in map(json.loads, (DATA / "mt_bench_questions.jsonl").read_text().splitlines())}
    conversations = []
    for answer in map(json.loads, (DATA / "mt_bench_reference_answers_gpt4.jsonl").read_text().splitlines()[:n]):
        turns = zip(questions[answer["question_id"]]["turns"], answer["choices"][0]["turns"])
        conversations.append({"conversations": [m for user, gpt in turns for m in ({"from": "human", "value": user}, {"from": "gpt", "value": gpt})]})
    return conversations


@dataclasses.dataclass
class Recorded:
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prompt_ms: float = 0.0


    def add(self, other: "Recorded") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


_PROMPTS = Prompts()
_PERSONAS = {getattr(_PROMPTS, f"{role}_persona"): role for role in ("advocate", "critic", "advisor", "editor", "judge")}


def role_of(messages: list[dict[str, str]]) -> str:
    """The agent role of a request, from its persona (in the system or the user message): the
    first one in the request, since a small model's reviews may quote another role's persona."""
    text = "\n".join(m["content"] for m in messages)
    found = {text.find(persona): role for persona, role in _PERSONAS.items() if persona in text}
    role = found[min(found)] if found else "unknown"
    users = sum(m["role"] == "user" for m in messages)
    return f"{role} rebuttal" if role in ("advocate", "critic") and users > 1 else role


@dataclasses.dataclass
class Exchange:
    """One answered call: its role and messages, the answer, and when it arrived and finished
    (in the proxy's order of events)."""

    role: str
    messages: list[dict[str, str]]
    answer: str
    arrived: int
    finished: int


class RecordingProxy:
    """Forwards every request to `upstream` and adds up what the answers report, per role.

    With `pin_slots`, each chat call carries llama.cpp's `id_slot`, the same for every call of a
    row (from its opening), so that a row's calls run one after the other in one slot.
    """

    def __init__(self, upstream: str, pin_slots: int | None = None) -> None:
        self.upstream = upstream
        self.pin_slots = pin_slots
        self.recorded: collections.defaultdict[str, Recorded] = collections.defaultdict(Recorded)
        self.exchanges: list[Exchange] = []
        self._events = 0
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
        if self.pin_slots and request.path == "/v1/chat/completions":
            payload = json.loads(body)
            payload["id_slot"] = zlib.crc32(_opening(payload["messages"]).encode()) % self.pin_slots
            body = json.dumps(payload).encode()
        arrived = self._events = self._events + 1
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body or None, headers={"content-type": "application/json"}) as answer:
            content = await answer.read()
            if request.path == "/v1/chat/completions" and answer.status == 200:
                data = json.loads(content)
                usage, timings = data.get("usage") or {}, data.get("timings") or {}
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                messages = json.loads(body)["messages"]
                role = role_of(messages)
                self.recorded[role].add(Recorded(1, usage.get("prompt_tokens", 0), cached, timings.get("prompt_ms", 0.0)))
                self._events += 1
                self.exchanges.append(Exchange(role, messages, data["choices"][0]["message"]["content"] or "", arrived, self._events))
            return web.Response(body=content, status=answer.status, content_type=answer.content_type)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--data", choices=("seed-tasks", "mt-bench"), default="seed-tasks", help="Self-Instruct seed tasks, or two-turn MT-Bench conversations with GPT-4's answers")
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--parallel", type=int, default=4, help="slots per server")
    parser.add_argument("--context-per-slot", type=int, default=None, help="tokens of context per slot (default: LocalServer's)")
    parser.add_argument("--pin-slot", action="store_true", help="send each row's calls to one llama.cpp slot (id_slot)")
    parser.add_argument("--judge-pairs", type=int, default=16, help="seed tasks for the judge-only check (0: skip)")
    args = parser.parse_args()

    threads = 2 // args.replicas  # the two cores, shared between the servers
    sizing = {"context_per_slot": args.context_per_slot} if args.context_per_slot else {}
    servers = [LocalServer(parallel=args.parallel, threads=threads, **sizing) for _ in range(args.replicas)]
    proxies = []
    try:
        for server in servers:
            server.start()
            proxy = RecordingProxy(server.url, args.parallel if args.pin_slot else None)
            proxy.start()
            proxies.append(proxy)
        endpoints = [p.url for p in proxies]
        if args.rows:
            refine = CoEvol(endpoint=endpoints, max_rounds=1, max_new_tokens=args.max_new_tokens, request_cache=False, cache_dir=tempfile.mkdtemp())
            started = time.perf_counter()
            data = rows(args.rows) if args.data == "seed-tasks" else mt_bench_rows(args.rows)
            out = Dataset.from_list(data).map(refine, batched=True)
            report_refinement(out, time.perf_counter() - started, proxies, args)
        if args.judge_pairs:
            judged = judge_pairs(endpoints, args.judge_pairs, args.max_new_tokens)
            print(f"judge-only check, {args.judge_pairs} pairs: " + ", ".join(f"{name} {n}" for name, n in judged.items()))
    finally:
        for server in servers:
            server.stop()


def report_refinement(out: Dataset, wall: float, proxies: list[RecordingProxy], args: argparse.Namespace) -> None:
    total, by_role = Recorded(), collections.defaultdict(Recorded)
    for proxy in proxies:
        for role, recorded in proxy.recorded.items():
            total.add(recorded)
            by_role[role].add(recorded)
    stats = compute_stats(out)
    verdicts = readable = 0
    stops: collections.Counter[str] = collections.Counter()
    for text in out["coevol_trace"]:
        if text is None:
            continue
        for turn in Trace.from_json(text).turns:
            for round_ in turn.rounds:
                stops[round_.stop or "accepted"] += 1
                for verdict in (round_.old_first, round_.new_first):
                    if verdict is not None:
                        verdicts += 1
                        readable += verdict.scores is not None
    share = total.cached_tokens / total.prompt_tokens if total.prompt_tokens else 0.0
    print(f"{args.data}: rows {args.rows}, replicas {args.replicas}, max_new_tokens {args.max_new_tokens}, slots pinned {args.pin_slot}, errors {stats.errors_by_kind or 'none'}")
    print(f"LLM calls {total.calls}; prompt tokens {total.prompt_tokens}, from the server's cache {total.cached_tokens} ({share:.1%})")
    servers = [Tokenized.of(proxy) for proxy in proxies]
    ideal, ideal_by_role = ideal_cached(servers)
    print(f"an unbounded prefix cache could have served {ideal} ({ideal / max(total.prompt_tokens, 1):.1%})")
    sent, reusable, whatif_sent, whatif_reusable = advisor_in_the_advocates_thread(servers)
    whatif_total = total.prompt_tokens - sent + whatif_sent
    print(
        f"what-if, the advisor continuing the advocate's conversation: advisor {whatif_sent} prompt tokens, {whatif_reusable} reusable "
        f"(as sent: {sent}, {reusable}); in all at most {ideal - reusable + whatif_reusable} of {whatif_total} "
        f"({(ideal - reusable + whatif_reusable) / max(whatif_total, 1):.1%})"
    )
    print(f"server prompt evaluation {total.prompt_ms / 1000:.1f} s; wall time {wall:.1f} s")
    for role, recorded in sorted(by_role.items()):
        print(f"  {role}: {recorded.calls} calls, {recorded.prompt_tokens} prompt tokens, {recorded.cached_tokens} from the cache, {ideal_by_role.get(role, 0)} at most")
    print("round outcomes: " + ", ".join(f"{stop} {n}" for stop, n in stops.most_common()))
    print(f"judge verdicts readable {readable} of {verdicts}; orders agree in {stats.judges_agree} of {stats.judged_rounds} judged rounds")


@dataclasses.dataclass
class Tokenized:
    """One server's recorded calls as that server tokenizes them: each prompt, and each prompt
    followed by its answer."""

    upstream: str
    exchanges: list[Exchange]
    prompts: list[list[int]]
    completed: list[list[int]]

    @classmethod
    def of(cls, proxy: RecordingProxy) -> "Tokenized":
        prompts = [_tokens(proxy.upstream, e.messages) for e in proxy.exchanges]
        completed = [_tokens(proxy.upstream, e.messages, e.answer) for e in proxy.exchanges]
        return cls(proxy.upstream, proxy.exchanges, prompts, completed)

    def reusable(self, tokens: list[int], arrived: int) -> int:
        """The longest prefix of `tokens` the server had evaluated when a call arriving at
        `arrived` reached it (the prompts of calls that came before, the prompts and answers of
        calls that had finished), less the one token a server always evaluates."""
        seen = [p for e, p in zip(self.exchanges, self.prompts) if e.arrived < arrived]
        seen += [c for e, c in zip(self.exchanges, self.completed) if e.finished < arrived]
        shared = max((len(os.path.commonprefix([tokens, earlier])) for earlier in seen), default=0)
        return min(shared, len(tokens) - 1)


def ideal_cached(servers: list[Tokenized]) -> tuple[int, dict[str, int]]:
    """Prompt tokens an unbounded prefix cache could have served: the ceiling of a prompt layout,
    whatever the server keeps or evicts."""
    total, by_role = 0, collections.Counter()
    for server in servers:
        for exchange, prompt in zip(server.exchanges, server.prompts):
            cached = server.reusable(prompt, exchange.arrived)
            total += cached
            by_role[exchange.role] += cached
    return total, dict(by_role)


def advisor_in_the_advocates_thread(servers: list[Tokenized]) -> tuple[int, int, int, int]:
    """What-if, not a layout coevol-hf uses: the advisor's call continuing the advocate's
    conversation (its rebuttal prompt and answer, then the critic's rebuttal and the advisor's
    persona and task, without the three debate texts the thread already holds). Returns the
    advisor's prompt tokens and reusable tokens, as sent and in the what-if."""
    sent = reusable = whatif_sent = whatif_reusable = 0
    for server in servers:
        by_row: collections.defaultdict[str, dict[str, tuple[Exchange, list[int]]]] = collections.defaultdict(dict)
        for exchange, prompt in zip(server.exchanges, server.prompts):
            by_row[_opening(exchange.messages)][exchange.role] = (exchange, prompt)
        for roles in by_row.values():
            if not {"advisor", "advocate", "critic", "advocate rebuttal", "critic rebuttal"} <= roles.keys():
                continue
            (advisor, asked), (thread, _) = roles["advisor"], roles["advocate rebuttal"]
            sent, reusable = sent + len(asked), reusable + server.reusable(asked, advisor.arrived)
            rest = "Your role:" + advisor.messages[-1]["content"].split("Your role:", 1)[1]  # the thread holds the opening
            for known in (roles["advocate"][0].answer, roles["critic"][0].answer, thread.answer):
                rest = rest.replace(known, "")
            whatif = _tokens(server.upstream, [*thread.messages, {"role": "assistant", "content": thread.answer}, {"role": "user", "content": rest}])
            whatif_sent, whatif_reusable = whatif_sent + len(whatif), whatif_reusable + server.reusable(whatif, advisor.arrived)
    return sent, reusable, whatif_sent, whatif_reusable


def _opening(messages: list[dict[str, str]]) -> str:
    """What every call of a row opens with: the system message and the user message up to the persona."""
    return messages[0]["content"] + messages[1]["content"].split("Your role:", 1)[0]


def _tokens(server: str, messages: list[dict[str, str]], answer: str | None = None) -> list[int]:
    """The tokens the server evaluates for `messages` (its chat template applied), followed by
    `answer`'s when given."""
    prompt = _post(server, "/apply-template", {"messages": messages})["prompt"]
    return _post(server, "/tokenize", {"content": prompt + (answer or "")})["tokens"]


def _post(server: str, path: str, payload: dict) -> dict:
    request = urllib.request.Request(server + path, data=json.dumps(payload).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def judge_pairs(endpoints: list[str], count: int, max_new_tokens: int) -> dict[str, int]:
    """Each seed task's human answer (a) against its own first half (b), in both orders (the
    verdicts JSON names each order's scores "old" for a and "new" for b)."""
    pairs = [{**row, "half": " ".join(row["output"].split()[: max(1, len(row["output"].split()) // 2)])} for row in rows(count)]
    judge = PairwiseJudge(a="output", b="half", endpoint=endpoints, max_new_tokens=max_new_tokens, request_cache=False, cache_dir=tempfile.mkdtemp())
    out = Dataset.from_list(pairs).map(judge, batched=True)
    readable = agree = 0
    for text in out["judge_verdicts"]:
        orders = [json.loads(text)[key]["scores"] for key in ("a_first", "b_first")] if text else [None, None]
        readable += sum(scores is not None for scores in orders)
        if all(scores is not None for scores in orders):
            # Agree: both orders name the same answer (or both a tie).
            winners = [(s["old"] > s["new"]) - (s["old"] < s["new"]) for s in orders]
            agree += winners[0] == winners[1]
    return {
        "verdicts readable": readable,
        "of": 2 * count,
        "orders agree": agree,
        "full answer preferred": out["judge_winner"].count("a"),
        "half preferred": out["judge_winner"].count("b"),
    }


if __name__ == "__main__":
    main()
