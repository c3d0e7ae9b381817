"""LLM calls over TGI's protocols, on huggingface_hub's HTTP session and output types.

`api="chat"` uses the Messages API (`/v1/chat/completions`), which TGI, vLLM, SGLang and
llama.cpp all serve. `api="generate"` uses TGI's native `/generate` with a prompt rendered from
the user's chat template. We build each payload ourselves rather than through
`AsyncInferenceClient`: its provider layer adds the locally saved `HF_TOKEN` to every request and
rewrites OpenAI-style `json_schema` response formats into TGI's form, which other servers
ignore. Server errors become `RowError`s with a stable kind and the server's own message.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Sequence

import httpx2
from huggingface_hub import ChatCompletionOutput, TextGenerationOutput
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_async_session, hf_raise_for_status

from ..config import Connection, RefineConfig
from ..errors import ConfigError, RowError
from ..protocol import Message, Reply
from .server import ServerInfo, auth_headers

# HTTP statuses with a meaning of their own in TGI, named as they appear in `coevol_error`.
_STATUS_KINDS = {401: "unauthorized", 403: "unauthorized", 404: "not_found", 422: "validation", 424: "generation", 429: "overloaded"}


class EndpointClient:
    """Makes the calls of one run against one endpoint, at most `max_concurrency` at a time."""

    def __init__(self, connection: Connection, config: RefineConfig, server: ServerInfo) -> None:
        self._config = config
        self._server = server
        self._timeout = connection.timeout
        self._slots = asyncio.Semaphore(connection.max_concurrency)
        self._headers = {k: v for k, v in auth_headers(connection.endpoint, connection.token).items() if v is not None}
        route = "/v1/chat/completions" if config.api == "chat" else "/generate"
        self._url = connection.endpoint + route
        self._template = _compile_template(config.chat_template) if config.api == "generate" else None
        self._session: httpx2.AsyncClient | None = None
        self.calls_made = 0

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
        body = self.payload(messages, schema)
        async with self._slots:
            try:
                content = await self._post(body)
            except (HfHubHTTPError, httpx2.TransportError) as err:
                raise _row_error(err) from None
        return self._reply(content)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.aclose()

    async def _post(self, body: dict[str, Any]) -> bytes:
        if self._session is None:
            self._session = get_async_session()
        response = await self._session.post(self._url, json=body, headers=self._headers, timeout=self._timeout)
        self.calls_made += 1
        hf_raise_for_status(response)
        return response.content

    def _reply(self, content: bytes) -> Reply:
        try:
            if self._template is None:
                output = ChatCompletionOutput.parse_obj_as_instance(content)
                usage = output.usage
                return Reply(
                    text=output.choices[0].message.content or "",
                    prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
                    completion_tokens=(usage.completion_tokens or 0) if usage else 0,
                )
            generated = TextGenerationOutput.parse_obj_as_instance(content)
            tokens = generated.details.generated_tokens if generated.details else 0
            return Reply(text=generated.generated_text, completion_tokens=tokens or 0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise RowError("bad_response", f"the server's answer is not a valid {'chat completion' if self._template is None else 'generation'}: {content[:200]!r}") from None

    def _response_format(self, schema: dict) -> dict:
        if self._server.kind == "tgi":
            return {"type": "json", "value": schema}
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}


def _row_error(err: Exception) -> RowError:
    if isinstance(err, httpx2.TimeoutException):
        return RowError("timeout", "the server did not answer within the timeout")
    if isinstance(err, httpx2.TransportError):
        return RowError("connection", f"connection to the server failed ({type(err).__name__})")
    response = getattr(err, "response", None)
    status = response.status_code if response is not None else 0
    kind = _STATUS_KINDS.get(status, "server" if status >= 500 else "http")
    return RowError(kind, f"HTTP {status}: {_server_message(response)}")


def _server_message(response: Any) -> str:
    """The server's own error text (TGI: `{"error", "error_type"}`), else the start of the body."""
    try:
        body = response.json()
    except (ValueError, AttributeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), (str, dict)):
        error = body["error"]
        return error if isinstance(error, str) else json.dumps(error)[:500]
    text = getattr(response, "text", "") or ""
    return text[:200] or "empty body"


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
