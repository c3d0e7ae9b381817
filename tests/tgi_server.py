"""An in-process HTTP server on 127.0.0.1 that speaks TGI's routes and error bodies.

Replies come from a script: a function of the agent role (recognised from its persona)
and the parsed request, so tests can steer each path of the algorithm (accept, reject, tie,
unreadable verdicts, server errors, hangs, answers cut at `max_new_tokens`, bodies trickled a
byte at a time) and then check what the server received, headers included. Like TGI with
`--max-concurrent-requests`, it answers 429 beyond `slots` calls in flight; it can also `hold`
every answer (to kill a client at a known point), `die` (refuse connections), `restart` on the
same port serving another model, list several models (`/v1/models` of vLLM with LoRA adapters)
and `redirect` every route elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import ssl
import threading
import time
from typing import Any, Callable

from aiohttp import web
from threaded_server import ThreadedServer

from coevol_hf.prompts import Prompts

_DEFAULTS = Prompts()
PERSONA_ROLES = {
    _DEFAULTS.advocate_persona: "advocate",
    _DEFAULTS.critic_persona: "critic",
    _DEFAULTS.advisor_persona: "advisor",
    _DEFAULTS.editor_persona: "editor",
    _DEFAULTS.judge_persona: "judge",
}


@dataclasses.dataclass
class Call:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        """The payload, canonically: equal for a retry of the same call."""
        return json.dumps(self.body, sort_keys=True)

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.body.get("messages", [])

    @property
    def role(self) -> str:
        """The agent role, recognised from its persona; stage-2 debaters are `<role>_rebuttal`."""
        if "messages" in self.body:
            users = [m["content"] for m in self.messages if m["role"] == "user"]
            role = next((role for persona, role in PERSONA_ROLES.items() if users and persona in users[0]), "unknown")
            return f"{role}_rebuttal" if role in ("advocate", "critic") and len(users) > 1 else role
        prompt = self.body.get("inputs", "")
        return next((role for persona, role in PERSONA_ROLES.items() if persona in prompt), "unknown")

    @property
    def task(self) -> str:
        """The last user message (chat) or the prompt (generate)."""
        return self.messages[-1]["content"] if self.messages else self.body.get("inputs", "")

    def answers(self) -> tuple[str, str]:
        """The two answers a judge request compares, as (A, B)."""
        a = re.search(r"\[Answer A\]\n(.*?)\n\[End of answer A\]", self.task, re.S)
        b = re.search(r"\[Answer B\]\n(.*?)\n\[End of answer B\]", self.task, re.S)
        assert a and b, f"not a judge request: {self.task[:200]}"
        return a.group(1), b.group(1)

    def response_under_review(self) -> str:
        opening = next((m["content"] for m in self.messages if m["role"] == "user"), self.body.get("inputs", ""))
        match = re.search(r"Answer under review:\n(.*?)\n\nYour role:", opening, re.S)
        assert match, f"no answer in: {opening[:200]}"
        return match.group(1)


@dataclasses.dataclass
class Error:
    """Answer with an HTTP error in TGI's shape instead of a reply text."""

    status: int
    message: str
    error_type: str
    body: str | None = None  # a raw body instead of TGI's JSON (a proxy's error page, say)
    headers: dict[str, str] | None = None


@dataclasses.dataclass
class Hang:
    """Answer nothing for this long (longer than the client's timeout)."""

    seconds: float


@dataclasses.dataclass
class Answer:
    """A reply text with what the server says about it: `finish_reason: "length"` when cut at
    `max_new_tokens`, the prompt tokens its KV cache held (vLLM, llama.cpp)."""

    text: str
    finish_reason: str = "stop"
    cached_tokens: int | None = None


@dataclasses.dataclass
class Trickle:
    """Send a valid answer's status and headers at once, then its body `chunk` bytes every
    `interval` seconds; `chunked`: with no Content-Length, so the client learns the size only as it reads."""

    text: str
    interval: float
    chunk: int = 1
    chunked: bool = False


Script = Callable[[Call], "str | Answer | Error | Hang | Trickle"]
# A chat template for api="generate": each message as `<|role|>text`, then the assistant's turn.
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"


def default_script(call: Call) -> str | Error:
    """Debaters and advisor give fixed texts; the editor appends " [edited]"; the judge prefers the longer answer."""
    if call.role == "advisor":
        return "- Add an example.\n- Be more precise.\n- Mention the main caveat.\n- A fourth one to drop."
    if call.role == "editor":
        return call.response_under_review() + " [edited]"
    if call.role == "judge":
        return prefer_longer(call)
    return f"{call.role} review of: {call.response_under_review() if call.role in ('advocate', 'critic') else 'the other review'}"


def prefer_longer(call: Call) -> str:
    a, b = call.answers()
    return "A\nIt is more complete." if len(a) > len(b) else "B\nIt is more complete."


class TGIServer(ThreadedServer):
    """Start with `with TGIServer(script) as server:`; `server.url`, `server.calls`."""

    def __init__(
        self,
        script: Script = default_script,
        *,
        model_id: str = "test-org/test-model",
        model_sha: str = "0123abcd",
        kind: str = "tgi",
        delay: float = 0.0,
        slots: int | None = None,
        max_concurrent_requests: Any = 128,
        other_models: tuple[str, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
        prefix_cache: bool = False,
    ) -> None:
        super().__init__(ssl_context)
        self.script = script
        self.model_id = model_id
        self.model_sha = model_sha
        self.kind = kind
        self.other_models = other_models  # listed by /v1/models after model_id
        self.redirect: str | None = None  # when set, every route answers 301 to this URL
        self.probes: list[tuple[str, dict[str, str]]] = []  # (path, headers) of GET /info and /v1/models
        self.requests: list[str] = []  # "METHOD /path" of every request received, on any route
        self.delay = delay
        self.slots = slots
        self.max_concurrent_requests = max_concurrent_requests
        self.calls: list[Call] = []
        self.answered: list[Call] = []  # calls whose reply (any status) was sent
        self.overloaded = 0  # 429s sent because every slot was busy
        self.metadata_requests: list[str] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.dead = False
        self.metadata_drops = 0  # the next N requests to /info or /v1/models lose their connection
        self.info_error: Error | None = None  # when set, /info answers with it (a server still loading)
        self.healthy = True  # what GET /health says (TGI: 503 when the model cannot generate)
        # Report cached prompt tokens as vLLM and llama.cpp do, from an unbounded prefix cache.
        self.prefix_cache = prefix_cache
        self._seen_prompts: list[str] = []
        self._held: asyncio.Event | None = None
        self._lock = threading.Lock()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._redirecting])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/generate", self._generate)
        app.router.add_get("/info", self._info)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _start(self, port: int = 0) -> None:
        await super()._start(port)
        self._held = asyncio.Event()
        self._held.set()

    # -- faults -------------------------------------------------------------------------------

    def hold(self) -> None:
        """Keep every answer from now on until `release`."""
        self._loop.call_soon_threadsafe(self._held.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._held.set)

    def die(self) -> None:
        """Refuse new connections and drop every open one, as a crashed server does."""
        self.dead = True
        self.run(self._site.stop())

    def restart(self, **changes: Any) -> None:
        """Stop, change attributes (`model_id="other/model"`), and listen again on the same port."""
        self.run(self._runner.cleanup())
        for name, value in changes.items():
            setattr(self, name, value)
        self.dead = False
        self.run(self._start(port=int(self.url.rsplit(":", 1)[1])))

    # -- what the tests read ----------------------------------------------------------------

    def roles(self) -> list[str]:
        return [c.role for c in self.calls]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.answered.clear()
            self.metadata_requests.clear()
            self.overloaded = 0

    # -- routes -----------------------------------------------------------------------------

    @web.middleware
    async def _redirecting(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if self.redirect is None:
            return await handler(request)
        raise web.HTTPMovedPermanently(self.redirect + request.path)

    async def _info(self, request: web.Request) -> web.Response:
        self._drop_if_dead(request)
        self._drop_metadata(request)
        self.metadata_requests.append("/info")
        self.probes.append(("/info", dict(request.headers)))
        if self.info_error is not None:
            return _error_response(self.info_error)
        if self.kind != "tgi":
            return web.json_response({"error": "Not Found", "error_type": "not_found"}, status=404)
        return web.json_response(
            {
                "model_id": self.model_id,
                "model_sha": self.model_sha,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": 4095,
                "max_total_tokens": 4096,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "3.3.6",
            }
        )

    async def _health(self, request: web.Request) -> web.Response:
        self._drop_if_dead(request)
        if not self.healthy:
            return web.json_response({"error": "unhealthy", "error_type": "healthcheck"}, status=503)
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        self._drop_if_dead(request)
        self._drop_metadata(request)
        self.metadata_requests.append("/v1/models")
        self.probes.append(("/v1/models", dict(request.headers)))
        ids = (self.model_id, *self.other_models)
        models = [{"id": i, "object": "model", "created": 0, "owned_by": self.kind} for i in ids]
        if self.kind == "tgi":  # TGI's spec: the one model served, not a list
            return web.json_response(models[0])
        return web.json_response({"object": "list", "data": models})

    async def _outcome(self, request: web.Request, call: Call) -> Error | Answer | Trickle | str:
        """What the script answers, once the server's slots (429 beyond them), delay, hold and the
        script's hangs allow: the same for both generation routes."""
        if self.slots is not None and self.in_flight >= self.slots:
            self.overloaded += 1
            return Error(429, "Model is overloaded", "overloaded")
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            outcome = self.script(call)
            if isinstance(outcome, Hang):
                await asyncio.sleep(outcome.seconds)
            await self._held.wait()
            self._drop_if_dead(request)
        finally:
            self.in_flight -= 1
        return "answer after hanging" if isinstance(outcome, Hang) else outcome

    async def _chat(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        outcome = await self._outcome(request, call)
        if isinstance(outcome, Error):
            return self._answer(call, _error_response(outcome))
        answer = outcome if isinstance(outcome, (Answer, Trickle)) else Answer(outcome)
        prompt = "".join(f"<|{m['role']}|>{m['content']}" for m in call.messages)
        usage: dict[str, Any] = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(answer.text) // 4, "total_tokens": 0}
        if isinstance(answer, Answer) and answer.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": answer.cached_tokens}
        elif self.prefix_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": self._cached_prefix(prompt, answer.text)}
        # A vLLM-like server names the model asked for; TGI (asked for "tgi") its model_id.
        model = call.body.get("model") if self.kind != "tgi" and call.body.get("model") in (self.model_id, *self.other_models) else self.model_id
        body = {
            "object": "chat.completion",
            "id": "",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "3.3.6-native",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "logprobs": None, "finish_reason": getattr(answer, "finish_reason", "stop")}],
            "usage": usage,
        }
        if isinstance(answer, Trickle):
            return await self._trickle(request, call, json.dumps(body).encode(), answer)
        return self._answer(call, web.json_response(body))

    async def _trickle(self, request: web.Request, call: Call, body: bytes, trickle: Trickle) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        if trickle.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        try:
            for i in range(0, len(body), trickle.chunk):
                await response.write(body[i : i + trickle.chunk])
                await asyncio.sleep(trickle.interval)
        except ConnectionError:  # the client gave up: what the test expects
            return response
        self._answer(call, response)
        return response

    def _cached_prefix(self, prompt: str, answer: str) -> int:
        """Tokens (of 4 characters) at the start of `prompt` that a prompt or answer seen before
        already covered: what a server with an unbounded prefix cache would not read again."""
        with self._lock:
            longest = max((len(os.path.commonprefix([prompt, seen])) for seen in self._seen_prompts), default=0)
            self._seen_prompts.append(f"{prompt}<|assistant|>{answer}")
        return longest // 4

    def _answer(self, call: Call, response: web.Response) -> web.Response:
        with self._lock:
            self.answered.append(call)
        return response

    def _drop_if_dead(self, request: web.Request) -> None:
        if self.dead:
            request.transport.close()
            raise ConnectionResetError("the server died")

    def _drop_metadata(self, request: web.Request) -> None:
        if self.metadata_drops > 0:
            self.metadata_drops -= 1
            request.transport.close()
            raise ConnectionResetError("a transient fault")

    async def _generate(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        if call.body.get("parameters", {}).get("temperature") == 0:
            return _error_response(Error(422, "Input validation error: `temperature` must be strictly positive", "validation"))
        outcome = await self._outcome(request, call)
        if isinstance(outcome, Error):
            return self._answer(call, _error_response(outcome))
        answer = outcome if isinstance(outcome, Answer) else Answer(outcome, "eos_token")
        return self._answer(call, web.json_response(
            {"generated_text": answer.text, "details": {"finish_reason": answer.finish_reason, "generated_tokens": len(answer.text) // 4, "seed": None, "prefill": [], "tokens": []}}
        ))

    async def _record(self, request: web.Request) -> Call:
        self._drop_if_dead(request)
        call = Call(request.path, dict(request.headers), await request.json())
        with self._lock:
            self.calls.append(call)
        return call


def _error_response(error: Error) -> web.Response:
    if error.body is not None:
        return web.Response(status=error.status, text=error.body, content_type="text/html", headers=error.headers)
    return web.json_response({"error": error.message, "error_type": error.error_type}, status=error.status, headers=error.headers)
