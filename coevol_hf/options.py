"""Every option of the operators, defined once.

Each option is a field of a frozen dataclass with its help text and whether it can change the
refined text. From these fields come the keyword arguments of `CoEvol` and `PairwiseJudge`, the
`fn_kwargs` they accept, the `coevol-hf refine` flags (`add_arguments`) and the README's option
table (`markdown_table`): one definition, checked once, in `__post_init__`.

Options that change outputs enter the `datasets` fingerprint and the run configuration; the
others (how servers are reached) never do. `Connection` and `Sampling` are the views the client
session needs: how to reach the servers, and what every request carries besides its messages.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .formats import FORMATS, Columns, Layout
from .judge import JUDGE_MODES, JudgeMode
from .prompts import Prompts

Api = Literal["chat", "generate"]
OnError = Literal["record", "raise"]
Pipeline = Literal["coevol", "debate_advise_edit", "advise_edit", "advise_edit_blind", "edit"]
# The full method and the paper's ablations, each a single pass without a judge:
PIPELINES: Mapping[str, str] = {
    "coevol": "debate, advise, edit, judge in both orders; repeat while the edit wins",
    "debate_advise_edit": "two-stage debate, advisor, editor; one pass, no judge",
    "advise_edit": "advisor sees the instruction and the response, then the editor revises it",
    "advise_edit_blind": "advisor sees only the instruction, then the editor revises the response",
    "edit": "the editor writes a new response from the instruction alone",
}

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
ENDPOINT_ENV = "COEVOL_ENDPOINT"


def option(default: Any, help: str, *, output: bool = True, cli: Callable[[str], Any] | None = None, default_text: str | None = None) -> Any:
    """A field with its help text. `output=False`: it cannot change what the agents write.

    `cli` converts the flag's text when that is not the field's plain type (a file to read, a
    mapping); `default_text` is how the README shows a default read from the environment.
    """
    metadata = {"help": help, "output": output, "cli": cli, "default_text": default_text}
    if isinstance(default, (dict, list, Prompts, Columns)) or callable(default):
        raise TypeError("options keep immutable defaults")
    return dataclasses.field(default=default, metadata=metadata, repr=output)


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _read_json(path: str) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def _key_values(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"expected ROLE=NAME pairs separated by commas (instruction=prompt,output=completion), not {text!r}")
        pairs[key.strip()] = value.strip()
    return pairs


@dataclasses.dataclass(frozen=True)
class Connection:
    """How to reach the servers: never part of a fingerprint, never written anywhere. Made by
    `JudgeOptions.connection()`, which holds the defaults and the checks.

    `endpoints` are replicas of one model. `max_retries` bounds the retries of a call after 429,
    5xx, timeouts and broken connections; the wait starts at `retry_backoff` seconds and doubles
    (with jitter) unless the server says `Retry-After`.
    """

    endpoints: tuple[str, ...]
    max_concurrency: int
    timeout: float
    token: str | None = dataclasses.field(repr=False)
    max_retries: int
    retry_backoff: float
    request_cache: bool
    cache_dir: str | None


@dataclasses.dataclass(frozen=True)
class Sampling:
    """What every request carries besides its messages, and which model must answer it. Made by
    `JudgeOptions.sampling`, which holds the defaults and the checks."""

    api: Api
    chat_template: str | None
    temperature: float
    max_new_tokens: int
    seed: int | None
    structured_judge: bool
    model: str | None
    model_revision: str | None


@dataclasses.dataclass(frozen=True)
class JudgeOptions:
    """The options every operator has: the server, sampling, the judge, prompts, failures."""

    endpoint: str | tuple[str, ...] | None = option(
        None,
        "server URL, or a list (comma-separated) of replicas of one model",
        output=False,
        default_text=f"`${ENDPOINT_ENV}`",
    )
    judge_mode: JudgeMode = option("compare", '`"compare"`: the judge names the better answer; `"score"`: two 1-10 scores')
    temperature: float = option(0.0, "sampling temperature of every call (0: greedy, the paper's default)")
    max_new_tokens: int = option(1000, "new tokens per call at most")
    seed: int | None = option(0, "sampling seed sent with every call")
    api: Api = option("chat", '`"chat"`: Messages API; `"generate"`: TGI\'s `/generate` with `chat_template=` (needs `jinja2`)')
    chat_template: str | None = option(None, "the model's Jinja chat template, for `api=\"generate\"` (CLI: a file)", cli=_read_text)
    model: str | None = option(None, "the model the server must serve (a `/v1/models` id); lets cached re-runs skip asking the server")
    model_revision: str | None = option(
        None, "the model's revision, for servers that do not report one (OpenAI-style servers; required for an Inference Endpoint, whose TGI names its model `/repository`); enters the cache keys"
    )
    structured_judge: bool = option(True, "ask the judge for JSON with a schema the server enforces (TGI and OpenAI forms)")
    prompts: Prompts | Mapping[str, str] | None = option(
        None, "any template of `coevol_hf.prompts.Prompts` (personas, tasks, the shared opening), e.g. `{\"editor_task\": \"... {suggestions}\"}`; each must use all of its fields (CLI: a JSON file)", cli=_read_json, default_text="defaults"
    )
    context_turns: int = option(3, "earlier exchanges of a multi-turn row each call sees")
    on_error: OnError = option(
        "record", 'a row whose calls finally fail: `"record"` writes its error column and goes on; `"raise"` stops the run'
    )
    max_concurrency: int = option(64, "requests in flight per endpoint and process at most; also capped by the server's `max_concurrent_requests`", output=False)
    timeout: float = option(600.0, "seconds per request, from connecting to the last byte (of which 10, or half if less, to connect)", output=False)
    max_retries: int = option(6, "retries of a call after 429, 5xx, timeouts, lost connections", output=False)
    retry_backoff: float = option(1.0, "first wait before a retry, in seconds, doubling with jitter", output=False)
    request_cache: bool = option(True, "keep every answered call on disk and reuse it", output=False)
    cache_dir: str | None = option(None, "where the request cache lives", output=False, default_text="`$HF_HOME/coevol-hf`")
    token: str | None = option(
        None, "sent as `Authorization: Bearer`; your saved `HF_TOKEN` goes only to Hugging Face's API hosts", output=False
    )

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        check_int("context_turns", self.context_turns, minimum=0)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)
        _check_choice("judge_mode", self.judge_mode, JUDGE_MODES)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature <= 2:
            raise ConfigError(f"temperature must be a number from 0 (greedy) to 2, not {self.temperature!r}.")
        object.__setattr__(self, "temperature", float(self.temperature))  # 0 and 0.0: one request body, one cache key
        for name in ("structured_judge", "request_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, not {getattr(self, name)!r}.")
        _check_choice("on_error", self.on_error, ("record", "raise"), "'record' (write the error and go on) or 'raise' (stop the run)")
        _check_choice("api", self.api, ("chat", "generate"), "'chat' (Messages API) or 'generate' (TGI's native route)")
        if self.api == "generate" and not (isinstance(self.chat_template, str) and self.chat_template.strip()):
            raise ConfigError(
                "api='generate' sends raw prompts to TGI's /generate route, so it needs chat_template= "
                "(the model's Jinja chat template, as in its tokenizer_config.json)."
            )
        if self.api == "chat" and self.chat_template is not None:
            raise ConfigError("chat_template= is only used with api='generate'; the Messages API applies the server's template.")
        for name in ("model", "model_revision", "cache_dir", "token"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise ConfigError(f"{name} must be a non-empty string or None, not {value!r}.")
        if self.token is not None and not is_header_safe(self.token):
            # A header cannot carry it (a token read from a file often ends with "\r\n"); never shown.
            raise ConfigError("token= holds a space, a line break, a control or non-ASCII character: pass the token alone.")
        object.__setattr__(self, "prompts", Prompts.from_value(self.prompts))
        check_int("max_concurrency", self.max_concurrency, minimum=1)
        check_int("max_retries", self.max_retries, minimum=0)
        for name in ("timeout", "retry_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a finite positive number of seconds, not {value!r}.")
        if self.endpoint is not None:
            object.__setattr__(self, "endpoint", _endpoints(self.endpoint))

    @property
    def sampling(self) -> Sampling:
        return Sampling(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Sampling)})

    def connection(self) -> Connection:
        """How to reach the servers; without `endpoint=`, `COEVOL_ENDPOINT` is read now."""
        endpoints = self.endpoint if self.endpoint is not None else _endpoints(os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT, ENDPOINT_ENV)
        names = {f.name for f in dataclasses.fields(Connection)} - {"endpoints"}
        return Connection(endpoints=endpoints, **{name: getattr(self, name) for name in names})

    def output_options(self) -> dict[str, Any]:
        """The options that can change outputs, JSON-ready: what the fingerprint and the card record."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("output", True)}

    def replace(self, overrides: Mapping[str, Any]) -> "JudgeOptions":
        """These options with some changed (`fn_kwargs`), refusing unknown names with the known ones."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = set(overrides) - set(known)
        if unknown:
            raise ConfigError(f"Unknown option(s) {sorted(unknown)} in fn_kwargs; known: {sorted(known)}.")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any], operator: str) -> "JudgeOptions":
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = set(options) - set(known)
        if unknown:
            raise ConfigError(f"{operator} does not take {sorted(unknown)}; it takes {sorted(known)}.")
        return cls(**options)


@dataclasses.dataclass(frozen=True)
class CoEvolOptions(JudgeOptions):
    """The options of `CoEvol`."""

    pipeline: Pipeline = option("coevol", "the full method, or one of the paper's one-pass baselines (no judge, no rounds: they ignore `max_rounds`, `judge_mode` and `structured_judge`)")
    max_rounds: int = option(3, "rounds per turn at most; refinement stops at the first rejected edit")
    columns: Columns | Mapping[str, str] | None = option(
        None,
        'column names, e.g. `{"instruction": "prompt", "output": "completion"}` (CLI: `instruction=prompt,output=completion`)',
        cli=_key_values,
        default_text="auto",
    )
    format: Layout = option("auto", "the layout; `auto` detects it from the columns")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("max_rounds", self.max_rounds, minimum=1)
        _check_choice("pipeline", self.pipeline, tuple(PIPELINES))
        _check_layout(self)

    def output_options(self) -> dict[str, Any]:
        """As for every operator, less the judge's and the rounds' options when the pipeline has neither."""
        options = super().output_options()
        if self.pipeline != "coevol":
            for name in ("max_rounds", "judge_mode", "structured_judge"):
                del options[name]
        return options


@dataclasses.dataclass(frozen=True)
class PairwiseOptions(JudgeOptions):
    """The options of `PairwiseJudge`: which two answers to compare, and how rows are laid out."""

    a: str | None = option(None, "the column holding answer A (for ShareGPT and messages rows: a column of answer texts)")
    b: str | None = option(None, "the column holding answer B")
    columns: Columns | Mapping[str, str] | None = option(None, "column names of the instruction (and input, conversations, messages)", cli=_key_values, default_text="auto")
    format: Layout = option("auto", "the layout of the rows the instruction is read from")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_layout(self)
        for name in ("a", "b"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name}= must be a column name, not {value!r}.")
        if self.a == self.b:
            raise ConfigError(f"a= and b= name the same column {self.a!r}; give the two columns to compare.")


# -- the command line and the README, from the same fields -----------------------------------


def add_arguments(parser: argparse.ArgumentParser, options: type[JudgeOptions], *, skip: tuple[str, ...] = ()) -> None:
    """One flag per option: `--max-rounds 2`, `--no-request-cache` for a True default."""
    hints = typing.get_type_hints(options)
    for field in dataclasses.fields(options):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = _plain_help(field.metadata["help"])
        if field.default is True:
            parser.add_argument("--no-" + field.name.replace("_", "-"), dest=field.name, action="store_false", help=f"turn off what is on by default: {help_text}")
            continue
        choices = _literal_choices(hints[field.name])
        convert = _argument_type(field.metadata["cli"]) if field.metadata["cli"] else _scalar_type(field.default, hints[field.name])
        parser.add_argument(flag, dest=field.name, type=convert, choices=choices, default=field.default, help=help_text)


def _argument_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`convert` for argparse, which would replace a ValueError's message by "invalid <function> value"."""

    def checked(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return checked


def options_from_arguments(args: argparse.Namespace, options: type[JudgeOptions]) -> dict[str, Any]:
    """The keyword options a parsed command line gives (only those set on it differ from defaults)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(options) if hasattr(args, f.name) and getattr(args, f.name) != f.default}


def markdown_table(options: type[JudgeOptions]) -> str:
    """The README's table of options, generated from the fields."""
    lines = ["| option | default | what it does |", "| --- | --- | --- |"]
    for field in dataclasses.fields(options):
        default = field.metadata["default_text"] or f"`{field.default!r}`".replace("'", '"')
        lines.append(f"| `{field.name}` | {default} | {field.metadata['help']} |")
    return "\n".join(lines)


# -- checks -------------------------------------------------------------------------------------


def is_header_safe(value: str) -> bool:
    """Printable ASCII without spaces: what a token must be to travel in a header."""
    return value.isascii() and value.isprintable() and " " not in value


def is_http_url(url: object, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    """A URL of one of `schemes` in printable ASCII without spaces, with a host a resolver can be
    asked for (IDNA), and a port number up to 65535 if it gives one."""
    if not isinstance(url, str) or "://" not in url or not url.isascii() or not url.isprintable() or " " in url:
        return False
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  # raises for a port that is not a number up to 65535
        (parts.hostname or "").encode("idna")  # raises for an empty label ("tgi..internal")
    except (ValueError, UnicodeError):
        return False
    return parts.scheme in schemes and bool(parts.hostname)


def _endpoints(value: Any, where: str = "endpoint") -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where} needs at least one http:// or https:// URL, got {value!r}.")
    for endpoint in value:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{where} must be an http:// or https:// URL (or a list of them), not {endpoint!r}.")
        if not is_http_url(endpoint):
            raise ConfigError(f"{where} {endpoint!r} needs a valid host name, a port number up to 65535 if it gives one, and printable ASCII without spaces (percent-encode the rest).")
        if "@" in urlsplit(endpoint).netloc:
            # A URL is printed in logs, errors and cards; a secret must not ride in it.
            raise ConfigError(f"{where} URLs must not carry credentials (user:password@); pass token= instead.")
    return tuple(dict.fromkeys(e.rstrip("/") for e in value))


def _check_layout(options: CoEvolOptions | PairwiseOptions) -> None:
    """`format=` (None means "auto") and `columns=` (a dict of column names, or a `Columns`)."""
    object.__setattr__(options, "format", options.format or "auto")
    _check_choice("format", options.format, ("auto", *FORMATS), f"'auto' or one of {list(FORMATS)}")
    columns = options.columns
    if columns is None:
        columns = Columns()
    elif isinstance(columns, Mapping):
        names = {f.name for f in dataclasses.fields(Columns)}
        unknown = set(columns) - names
        if unknown:
            raise ConfigError(f"Unknown column role(s) {sorted(unknown)} in columns=; known: {sorted(names)}.")
        columns = Columns(**columns)
    elif not isinstance(columns, Columns):
        raise ConfigError(f"columns must be a dict of column names or a Columns, not {type(columns).__name__}.")
    object.__setattr__(options, "columns", columns)


def check_int(name: str, value: Any, *, minimum: int = 1) -> None:
    """Raise `ConfigError` unless `value` is an int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, not {value!r}.")


def _check_choice(name: str, value: Any, choices: tuple[str, ...], described: str | None = None) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be {described or f'one of {list(choices)}'}, not {value!r}.")


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _plain_help(text: str) -> str:
    return text.replace("`", "").replace("%", "%%")


def _literal_choices(hint: Any) -> list[str] | None:
    return list(typing.get_args(hint)) if typing.get_origin(hint) is Literal else None


def _scalar_type(default: Any, hint: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        raise TypeError("a bool option defaults to True and becomes --no-...")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return type(default)
    for candidate in (int, float):
        if candidate in typing.get_args(hint):
            return candidate
    return str
