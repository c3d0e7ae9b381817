"""What a call looks like on the wire: the JSON body sent and how the answer reads.

`api="chat"` uses the Messages API (`/v1/chat/completions`), which TGI, vLLM, SGLang and
llama.cpp all serve. `api="generate"` uses TGI's native `/generate` with a prompt rendered from
the user's chat template. We build each body ourselves rather than through
`AsyncInferenceClient`: its provider layer adds the locally saved `HF_TOKEN` to every request and
rewrites OpenAI-style `json_schema` response formats into TGI's form, which other servers
ignore; and the exact body is what the request cache is keyed on. This module decides outputs,
so its code is part of every fingerprint (operator.py).

An answer is trusted only for what it says: a text stopped at `max_new_tokens` comes back with
`cut_off=True`, text that is not valid Unicode (a lone surrogate) is repaired before it can
reach a cache, a request or an Arrow file, and every failure has a stable kind.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import Any, Sequence

from ..errors import ConfigError, RowError
from ..options import Sampling
from ..protocol import Reply
from .http import Failure, Response
from .pool import Outcome
from .server import ServerInfo

# HTTP statuses with a meaning of their own in TGI, named as they appear in `coevol_error`.
_STATUS_KINDS = {401: "unauthorized", 403: "unauthorized", 404: "not_found", 407: "proxy", 422: "validation", 424: "generation", 429: "overloaded"}
# Answers every call would get alike (credentials, route): a few in a row stop the run.
_SYSTEMATIC = {401, 403, 404, 405, 407}
_MAX_RETRY_AFTER = 300.0
# A reply's size cap: room for TGI's per-token details (about 100 bytes a token) and then some.
_REPLY_CAP_BASE, _REPLY_CAP_PER_TOKEN = 1 << 20, 256
_SURROGATE = re.compile("[\ud800-\udfff]")
# json.dumps with options builds an encoder per call; the body of every call goes through this one.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class RequestFormat:
    """The bodies of one run's calls and the reading of their answers, for one served model."""

    def __init__(self, sampling: Sampling, server: ServerInfo) -> None:
        self.sampling = sampling
        self.server = server
        self.route = "/v1/chat/completions" if sampling.api == "chat" else "/generate"
        self.reply_cap = _REPLY_CAP_BASE + _REPLY_CAP_PER_TOKEN * sampling.max_new_tokens
        self._template = _compile_template(sampling.chat_template) if sampling.api == "generate" else None

    def payload(self, messages: Sequence[dict[str, str]], schema: dict | None = None) -> dict[str, Any]:
        """The JSON body sent for these messages."""
        sampling = self.sampling
        if not sampling.structured_judge:
            schema = None
        if self._template is None:
            body: dict[str, Any] = {
                "model": self.server.request_model,
                "messages": list(messages),
                "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature,
            }
            if sampling.seed is not None:
                body["seed"] = sampling.seed
            if schema is not None:
                body["response_format"] = self._response_format(schema)
            return body
        # /generate rejects temperature 0: greedy decoding is do_sample=false.
        choice = {"do_sample": True, "temperature": sampling.temperature} if sampling.temperature > 0 else {"do_sample": False}
        parameters: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "details": True, "return_full_text": False, **choice}
        if sampling.seed is not None:
            parameters["seed"] = sampling.seed
        if schema is not None:
            parameters["grammar"] = {"type": "json", "value": schema}
        prompt = self._template.render(messages=list(messages), add_generation_prompt=True, bos_token="", eos_token="")
        return {"inputs": prompt, "parameters": parameters}

    def encode(self, messages: Sequence[dict[str, str]], schema: dict | None = None) -> bytes:
        """The body, encoded once and canonically: the same bytes are sent and keyed on."""
        text = _CANONICAL.encode(self.payload(messages, schema))
        try:
            return text.encode()
        except UnicodeEncodeError:
            raise RowError("input", "a message holds text that is not valid Unicode (a lone surrogate)") from None

    def read(self, response: Response) -> tuple[Reply, str | None]:
        """The reply and the model the answer names; raises `Failure` for anything else."""
        if response.status != 200:
            raise _http_failure(response)
        content = response.body
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise Failure("bad_response", f"the server's answer is not JSON: {_start(content)}", Outcome.ERROR) from None
        if isinstance(data, dict) and "error" in data and not ({"choices", "generated_text"} & data.keys()):
            raise _error_in_body(data)
        try:
            if self._template is None:
                # Read directly: huggingface_hub's ChatCompletionOutput.parse_obj costs 0.3 ms per call.
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
                usage = data.get("usage") or {}
                details = usage.get("prompt_tokens_details")  # vLLM, llama.cpp, OpenAI: KV-cache reuse
                cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
                reply = Reply(clean_text(text), usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, cached, choice.get("finish_reason") == "length")
                model = data.get("model")
            else:
                details = data.get("details") or {}
                reply = Reply(clean_text(data["generated_text"]), 0, details.get("generated_tokens") or 0, 0, details.get("finish_reason") == "length")
                model = None
            if not all(type(n) is int for n in (reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens)):
                raise TypeError
            return reply, model if isinstance(model, str) else None
        except (TypeError, KeyError, IndexError, AttributeError):
            expected = "chat completion" if self._template is None else "generation"
            raise Failure("bad_response", f"the server's answer is not a valid {expected}: {_start(content)}", Outcome.ERROR) from None

    def _response_format(self, schema: dict) -> dict:
        if self.server.kind == "tgi":
            return {"type": "json", "value": schema}
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}


def clean_text(text: str) -> str:
    """`text` with lone surrogates (JSON `"\\ud83d"` decodes to one) replaced by U+FFFD.

    No UTF-8 writer accepts them: left in, one would crash the cache write, the next request
    body or the Arrow file, outside any row. Raises TypeError for a non-string.
    """
    if text.isascii():
        return text
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def _http_failure(response: Response) -> Failure:
    status = response.status
    if 300 <= status < 400:
        location = response.headers.get("location", "nowhere")
        return Failure("redirect", f"HTTP {status} to {clean_text(location)!r}: point endpoint= at the final address", Outcome.OK, retryable=False, systematic=True)
    message = f"HTTP {status}: {_server_message(response.body)}"
    kind = _STATUS_KINDS.get(status, "server" if status >= 500 else "http")
    if status == 429:
        return Failure(kind, message, Outcome.OVERLOADED, retry_after=_retry_after(response))
    if status >= 500:
        return Failure(kind, message, Outcome.ERROR, retry_after=_retry_after(response))
    # 4xx: the request itself is refused (too long, bad schema, unauthorized); asking again cannot help.
    return Failure(kind, message, Outcome.OK, retryable=False, systematic=status in _SYSTEMATIC)


def _error_in_body(data: dict[str, Any]) -> Failure:
    """An error reported inside a 200 answer (as TGI does in streams), kept as its kind says."""
    error_type = str(data.get("error_type") or "server")
    message = f"error in a 200 answer: {_error_text(data['error'])}"
    if error_type == "overloaded":
        return Failure("overloaded", message, Outcome.OVERLOADED)
    if error_type in ("validation", "generation"):
        return Failure(error_type, message, Outcome.OK, retryable=False)
    return Failure("server", message, Outcome.ERROR)


def _retry_after(response: Response) -> float | None:
    """`Retry-After` in seconds (either form the standard allows), capped at `_MAX_RETRY_AFTER`."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        if math.isnan(seconds):  # asyncio would wait forever
            return None
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _server_message(body: bytes) -> str:
    """The server's own error text (TGI: `{"error", "error_type"}`), else the start of the body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), (str, dict)):
        return _error_text(data["error"])
    return clean_text(body[:200].decode("utf-8", "replace")) or "empty body"


def _error_text(error: Any) -> str:
    """TGI's `error` field: a message, or (from some proxies and servers) an object."""
    return clean_text(error if isinstance(error, str) else json.dumps(error)[:500])


def _start(content: bytes) -> str:
    return repr(content[:200])


_TEMPLATE_CHECK = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]


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
        template = environment.from_string(source)
    except TemplateError as err:
        raise ConfigError(f"chat_template is not a valid Jinja template: {err}") from None
    try:  # every call has a system message, and a debater's rebuttal follows its own earlier turn
        template.render(messages=_TEMPLATE_CHECK, add_generation_prompt=True, bos_token="", eos_token="")
    except Exception as err:
        raise ConfigError(
            f"chat_template cannot render the conversations coevol-hf sends (a system message, then user and assistant turns): "
            f"{type(err).__name__}: {err}. Use a template that accepts a system message, such as the model's own if it does."
        ) from None
    return template
