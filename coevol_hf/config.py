"""The options of a run, split by whether they can change the refined text.

`RefineConfig` holds everything that decides outputs (model, sampling, rounds, judge mode,
prompts, columns, what a failed row does) and is what the `datasets` fingerprint hashes.
`Connection` holds how to reach the servers (endpoints, concurrency, timeout, retries, token,
request cache): changing it never invalidates a cache.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .formats import Columns
from .judge import JUDGE_MODES, JudgeMode
from .prompts import Prompts

Api = Literal["chat", "generate"]
OnError = Literal["record", "raise"]
Pipeline = Literal["coevol", "debate_advise_edit", "advise_edit", "advise_edit_blind", "edit"]
# The full method and the paper's ablations, each a single pass without a judge:
PIPELINES: Mapping[str, str] = {
    "coevol": "debate, advise, edit, judge in both orders; repeat while the edit wins (the default)",
    "debate_advise_edit": "two-stage debate, advisor, editor; one pass, no judge",
    "advise_edit": "advisor sees the instruction and the response, then the editor revises it",
    "advise_edit_blind": "advisor sees only the instruction, then the editor revises the response",
    "edit": "the editor writes a new response from the instruction alone",
}

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
ENDPOINT_ENV = "COEVOL_ENDPOINT"


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Every option that can change what the agents write."""

    pipeline: Pipeline = "coevol"
    max_rounds: int = 3
    judge_mode: JudgeMode = "compare"
    temperature: float = 0.0
    max_new_tokens: int = 1000
    seed: int | None = 0
    context_turns: int = 3
    api: Api = "chat"
    chat_template: str | None = None
    model: str | None = None
    structured_judge: bool = True
    on_error: OnError = "record"
    prompts: Prompts = dataclasses.field(default_factory=Prompts)
    columns: Columns = dataclasses.field(default_factory=Columns)

    def __post_init__(self) -> None:
        _check_int("max_rounds", self.max_rounds, minimum=1)
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("context_turns", self.context_turns, minimum=0)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        if self.judge_mode not in JUDGE_MODES:
            raise ConfigError(f"judge_mode must be one of {list(JUDGE_MODES)}, not {self.judge_mode!r}.")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature <= 2:
            raise ConfigError(f"temperature must be a number from 0 (greedy) to 2, not {self.temperature!r}.")
        if not isinstance(self.structured_judge, bool):
            raise ConfigError(f"structured_judge must be True or False, not {self.structured_judge!r}.")
        if self.pipeline not in PIPELINES:
            raise ConfigError(f"pipeline must be one of {list(PIPELINES)}, not {self.pipeline!r}.")
        if self.on_error not in ("record", "raise"):
            raise ConfigError(f"on_error must be 'record' (write coevol_error and go on) or 'raise' (stop the run), not {self.on_error!r}.")
        if self.api not in ("chat", "generate"):
            raise ConfigError(f"api must be 'chat' (Messages API) or 'generate' (TGI's native route), not {self.api!r}.")
        if self.api == "generate" and not (isinstance(self.chat_template, str) and self.chat_template.strip()):
            raise ConfigError(
                "api='generate' sends raw prompts to TGI's /generate route, so it needs chat_template= "
                "(the model's Jinja chat template, as in its tokenizer_config.json)."
            )
        if self.api == "chat" and self.chat_template is not None:
            raise ConfigError("chat_template= is only used with api='generate'; the Messages API applies the server's template.")

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready description of the run: the fingerprint's and the card's source."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Connection:
    """How to reach the servers; never part of the fingerprint, never written anywhere.

    `endpoints` are replicas of one model: requests go to the least busy one. `max_retries`
    bounds the retries of a call after 429, 5xx, timeouts and connection errors; the wait starts
    at `retry_backoff` seconds and doubles (with jitter) unless the server says `Retry-After`.
    """

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    max_concurrency: int = 64
    timeout: float = 600.0
    token: str | None = dataclasses.field(default=None, repr=False)
    max_retries: int = 6
    retry_backoff: float = 1.0
    request_cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        endpoints = (self.endpoints,) if isinstance(self.endpoints, str) else tuple(self.endpoints)
        if not endpoints:
            raise ConfigError("endpoint needs at least one URL.")
        for endpoint in endpoints:
            if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
                raise ConfigError(f"endpoint must be an http:// or https:// URL (or a list of them), not {endpoint!r}.")
            if "@" in urlsplit(endpoint).netloc:
                # A URL is printed in logs, errors and cards; a secret must not ride in it.
                raise ConfigError("endpoint URLs must not carry credentials (user:password@); pass token= instead.")
        object.__setattr__(self, "endpoints", tuple(dict.fromkeys(e.rstrip("/") for e in endpoints)))
        _check_int("max_concurrency", self.max_concurrency, minimum=1)
        _check_int("max_retries", self.max_retries, minimum=0)
        for name in ("timeout", "retry_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}.")
        if not isinstance(self.request_cache, bool):
            raise ConfigError(f"request_cache must be True or False, not {self.request_cache!r}.")

    @staticmethod
    def default_endpoints() -> tuple[str, ...]:
        """`COEVOL_ENDPOINT` (comma-separated for several replicas), else TGI's usual local port."""
        return _split_endpoints(os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT)


def build_config(options: Mapping[str, Any]) -> tuple[RefineConfig, Connection]:
    """Split keyword options into the two configs, refusing unknown names with the known ones."""
    refine_names = {f.name for f in dataclasses.fields(RefineConfig)} | {"format"}
    connection_names = {f.name for f in dataclasses.fields(Connection)} - {"endpoints"} | {"endpoint"}
    unknown = set(options) - refine_names - connection_names
    if unknown:
        raise ConfigError(f"Unknown option(s) {sorted(unknown)}; known: {sorted(refine_names | connection_names)}.")
    refine = {k: v for k, v in options.items() if k in refine_names}
    columns = refine.pop("columns", None)
    fmt = refine.pop("format", None)
    refine["columns"] = _columns(columns, fmt)
    refine["prompts"] = Prompts.from_value(refine.get("prompts"))
    connection = {k: v for k, v in options.items() if k in connection_names - {"endpoint"} and v is not None}
    endpoint = options.get("endpoint")
    connection["endpoints"] = Connection.default_endpoints() if endpoint is None else _split_endpoints(endpoint)
    return RefineConfig(**refine), Connection(**connection)


def _split_endpoints(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _columns(columns: Columns | Mapping[str, str] | None, fmt: str | None) -> Columns:
    if isinstance(columns, Columns):
        base = columns
    elif columns is None:
        base = Columns()
    elif isinstance(columns, Mapping):
        names = {f.name for f in dataclasses.fields(Columns)} - {"format"}
        unknown = set(columns) - names
        if unknown:
            raise ConfigError(f"Unknown column role(s) {sorted(unknown)} in columns=; known: {sorted(names)}.")
        base = Columns(**columns)
    else:
        raise ConfigError(f"columns must be a dict of column names or a Columns, not {type(columns).__name__}.")
    return dataclasses.replace(base, format=fmt) if fmt is not None else base


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, not {value!r}.")
