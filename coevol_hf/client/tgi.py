"""LLM calls over TGI's protocols, on huggingface_hub's HTTP session.

`api="chat"` uses the Messages API (`/v1/chat/completions`), which TGI, vLLM, SGLang and
llama.cpp all serve. `api="generate"` uses TGI's native `/generate` with a prompt rendered from
the user's chat template. We build each payload ourselves rather than through
`AsyncInferenceClient`: its provider layer adds the locally saved `HF_TOKEN` to every request and
rewrites OpenAI-style `json_schema` response formats into TGI's form, which other servers
ignore; and the exact payload is what the request cache is keyed on.

429, 5xx, timeouts, broken connections and unreadable answers are retried with backoff; other
4xx are final. What finally fails becomes a `RowError` with a stable kind and the server's own
message, unless no endpoint is left, which stops the run (`EndpointError`).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from typing import Any, Sequence

import httpx2
from huggingface_hub.utils import get_async_session

from ..cache import RequestCache, request_key
from ..config import Connection, RefineConfig
from ..errors import ConfigError, EndpointError, RowError
from ..protocol import Message, Reply
from .pool import Endpoint, EndpointPool
from .server import ServerInfo, check_health, probe_server, request_headers

# HTTP statuses with a meaning of their own in TGI, named as they appear in `coevol_error`.
_STATUS_KINDS = {401: "unauthorized", 403: "unauthorized", 404: "not_found", 422: "validation", 424: "generation", 429: "overloaded"}
_CONNECT_TIMEOUT = 10.0
_MAX_BACKOFF = 60.0
_MAX_RETRY_AFTER = 300.0


class EndpointClient:
    """Makes the calls of one run: from the request cache when answered before, else over HTTP
    to the least busy endpoint, retried after transient failures."""

    def __init__(self, connection: Connection, config: RefineConfig, server: ServerInfo, probed: dict[str, ServerInfo | None]) -> None:
        self._config = config
        self._server = server
        self._connection = connection
        self._timeout = httpx2.Timeout(connection.timeout, connect=min(connection.timeout, _CONNECT_TIMEOUT))
        self._route = "/v1/chat/completions" if config.api == "chat" else "/generate"
        self._template = _compile_template(config.chat_template) if config.api == "generate" else None
        self._pool = EndpointPool(
            [Endpoint(url, {**request_headers(url, connection.token), "content-type": "application/json"}, probed.get(url), connection.max_concurrency) for url in connection.endpoints],
            self._recheck,
        )
        self._cache = RequestCache(connection.cache_dir) if connection.request_cache else None
        self._session: httpx2.AsyncClient | None = None
        self.calls_made = 0

    @property
    def cache_hits(self) -> int:
        return self._cache.hits if self._cache is not None else 0

    @property
    def cache_misses(self) -> int:
        return self._cache.misses if self._cache is not None else 0

    def payload(self, messages: Sequence[Message], schema: dict | None = None) -> dict[str, Any]:
        """The exact JSON body sent for these messages."""
        config = self._config
        if not config.structured_judge:
            schema = None
        if self._template is None:
            body: dict[str, Any] = {
                "model": self._server.request_model,
                "messages": list(messages),
                "max_tokens": config.max_new_tokens,
                "temperature": config.temperature,
            }
            if config.seed is not None:
                body["seed"] = config.seed
            if schema is not None:
                body["response_format"] = self._response_format(schema)
            return body
        # /generate rejects temperature 0: greedy decoding is do_sample=false.
        sampling = {"do_sample": True, "temperature": config.temperature} if config.temperature > 0 else {"do_sample": False}
        parameters: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "details": True, "return_full_text": False, **sampling}
        if config.seed is not None:
            parameters["seed"] = config.seed
        if schema is not None:
            parameters["grammar"] = {"type": "json", "value": schema}
        prompt = self._template.render(messages=list(messages), add_generation_prompt=True, bos_token="", eos_token="")
        return {"inputs": prompt, "parameters": parameters}

    async def __call__(self, messages: Sequence[Message], *, schema: dict | None = None) -> Reply:
        # Encoded once, canonically: the same bytes are the cache key's input and the request body.
        body = json.dumps(self.payload(messages, schema), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        key = request_key(self._server.identity, self._route, body) if self._cache is not None else None
        if key is not None:
            cached = _cached_reply(self._cache.get(key))
            if cached is not None:
                return cached
        reply = await self._call_with_retries(body)
        if key is not None:
            self._cache.put(key, {"text": reply.text, "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens})
        return reply

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.aclose()
        if self._cache is not None:
            self._cache.close()

    async def _call_with_retries(self, body: bytes) -> Reply:
        failure: _Failure | None = None
        for attempt in range(self._connection.max_retries + 1):
            endpoint = await self._pool.acquire()
            if endpoint is None:
                failure = failure or _Failure("connection", "no endpoint is up", "refused")
            else:
                try:
                    return await self._call(endpoint, body)
                except _Failure as caught:
                    failure = caught
                    if not failure.retryable:
                        raise failure.row_error() from None
            if attempt < self._connection.max_retries:
                await asyncio.sleep(_backoff(attempt, self._connection.retry_backoff, failure.retry_after))
        if not self._pool.any_up:
            endpoints = ", ".join(self._connection.endpoints)
            kept = "Every answer received so far is in the request cache: run" if self._cache is not None else "Run"
            raise EndpointError(f"Every endpoint is down ({endpoints}); the last call failed with {failure.row_error()}. {kept} again when a server is back.")
        raise failure.row_error()

    async def _call(self, endpoint: Endpoint, body: bytes) -> Reply:
        """One HTTP request; a `_Failure` says what went wrong and whether to try again."""
        if self._session is None:
            self._session = get_async_session()
        outcome, sent_at = "lost", time.monotonic()
        try:
            response = await self._session.post(endpoint.url + self._route, content=body, headers=endpoint.headers, timeout=self._timeout)
            self.calls_made += 1
            if response.status_code != 200:
                raise _http_failure(response)
            reply = self._reply(response.content)
            outcome = "ok"
            return reply
        except _Failure as failure:
            outcome = failure.outcome
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except httpx2.TimeoutException:
            self.calls_made += 1
            raise _Failure("timeout", f"the server did not answer within {self._connection.timeout:g} s", "lost") from None
        except httpx2.ConnectError as err:
            outcome = "refused"
            raise _Failure("connection", f"cannot connect ({type(err).__name__})", "refused") from None
        except httpx2.TransportError as err:
            raise _Failure("connection", f"the connection failed ({type(err).__name__})", "lost") from None
        finally:
            self._pool.release(endpoint, outcome, sent_at)

    def _reply(self, content: bytes) -> Reply:
        try:
            data = json.loads(content)
        except ValueError:
            raise _Failure("bad_response", f"the server's answer is not JSON: {content[:200]!r}", "error") from None
        if isinstance(data, dict) and "error" in data and not ({"choices", "generated_text"} & data.keys()):
            raise _error_in_body(data)
        try:
            if self._template is None:
                # The fields of TGI's ChatCompletion, read directly: huggingface_hub's
                # ChatCompletionOutput.parse_obj costs 0.3 ms per call (profiled), most of our budget.
                usage = data.get("usage") or {}
                text = data["choices"][0]["message"]["content"] or ""
                reply = Reply(text, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
            else:
                details = data.get("details") or {}
                reply = Reply(data["generated_text"], 0, details.get("generated_tokens") or 0)
            if not isinstance(reply.text, str) or not all(isinstance(n, int) for n in (reply.prompt_tokens, reply.completion_tokens)):
                raise TypeError
            return reply
        except (TypeError, KeyError, IndexError, AttributeError):
            expected = "chat completion" if self._template is None else "generation"
            raise _Failure("bad_response", f"the server's answer is not a valid {expected}: {content[:200]!r}", "error") from None

    def _response_format(self, schema: dict) -> dict:
        if self._server.kind == "tgi":
            return {"type": "json", "value": schema}
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}

    def _recheck(self, endpoint: Endpoint) -> ServerInfo:
        """Whether a down endpoint is back, healthy and serving the same model (in a worker thread)."""
        check_health(endpoint.url, self._connection.token)
        server = probe_server(endpoint.url, self._connection.token)
        if (server.identity, server.kind) != (self._server.identity, self._server.kind):
            raise EndpointError(f"{endpoint.url} now serves {server.identity!r}, not {self._server.identity!r}")
        return server


class _Failure(Exception):
    """A failed attempt: the row error it becomes, how the endpoint did, whether to retry."""

    def __init__(self, kind: str, message: str, outcome: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.outcome, self.retryable, self.retry_after = kind, outcome, retryable, retry_after

    def row_error(self) -> RowError:
        return RowError(self.kind, self.args[0])


def _cached_reply(value: Any) -> Reply | None:
    """A cached answer, if it has the shape we store (anything else is asked again)."""
    if not isinstance(value, dict):
        return None
    text, prompt_tokens, completion_tokens = value.get("text"), value.get("prompt_tokens"), value.get("completion_tokens")
    if isinstance(text, str) and isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
        return Reply(text, prompt_tokens, completion_tokens)
    return None


def _http_failure(response: httpx2.Response) -> _Failure:
    status = response.status_code
    message = f"HTTP {status}: {_server_message(response)}"
    kind = _STATUS_KINDS.get(status, "server" if status >= 500 else "http")
    if status == 429:
        return _Failure(kind, message, "overloaded", retry_after=_retry_after(response))
    if status >= 500:
        return _Failure(kind, message, "error", retry_after=_retry_after(response))
    # 4xx: the request itself is refused (too long, bad schema, unauthorized); asking again cannot help.
    return _Failure(kind, message, "ok", retryable=False)


def _error_in_body(data: dict[str, Any]) -> _Failure:
    """An error reported inside a 200 answer (as TGI does in streams), kept as its kind says."""
    error_type = str(data.get("error_type") or "server")
    message = f"error in a 200 answer: {_error_text(data['error'])}"
    if error_type == "overloaded":
        return _Failure("overloaded", message, "overloaded")
    if error_type in ("validation", "generation"):
        return _Failure(error_type, message, "ok", retryable=False)
    return _Failure("server", message, "error")


def _retry_after(response: httpx2.Response) -> float | None:
    """`Retry-After` in seconds (either form the standard allows), capped at `_MAX_RETRY_AFTER`."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _backoff(attempt: int, base: float, retry_after: float | None) -> float:
    """The server's `Retry-After` if it gave one, else exponential backoff with full jitter."""
    if retry_after is not None:
        return retry_after
    return random.uniform(0, min(_MAX_BACKOFF, base * 2**attempt))


def _server_message(response: Any) -> str:
    """The server's own error text (TGI: `{"error", "error_type"}`), else the start of the body."""
    try:
        body = response.json()
    except (ValueError, AttributeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), (str, dict)):
        return _error_text(body["error"])
    text = getattr(response, "text", "") or ""
    return text[:200] or "empty body"


def _error_text(error: Any) -> str:
    """TGI's `error` field: a message, or (from some proxies and servers) an object."""
    return error if isinstance(error, str) else json.dumps(error)[:500]


def _compile_template(source: str | None) -> Any:
    try:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigError("api='generate' renders the chat template with Jinja2: pip install 'coevol-hf[generate]'.") from None

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    try:
        return environment.from_string(source)
    except TemplateError as err:
        raise ConfigError(f"chat_template is not a valid Jinja template: {err}") from None
