"""The `Dataset.map` callable: batches of rows in, refined rows and trace columns out.

`CoEvol.__call__` is a plain (sync) function so that it works from scripts, notebooks whose
thread already runs an event loop, and `num_proc` workers alike: the rows of a batch are refined
concurrently on a private event loop thread, one per process, under one bound on requests in
flight.

Caching: `datasets` hashes the transform to name its cache file. We register how a `CoEvol` is
hashed with datasets' own pickler (as datasets does for tokenizers): the hash covers the
options that change outputs, the served model and this package's implementation tag, and
leaves out endpoint, concurrency, timeout and token. Ordinary pickling (for `num_proc`) carries
the connection too, so workers reach the same server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import threading
from importlib import resources
from typing import Any, Mapping, Sequence

import pyarrow as pa
from datasets.utils._dill import pklregister

from . import __version__
from .client import EndpointClient, ServerInfo, probe_server
from .config import Connection, RefineConfig, build_config
from .errors import ConfigError, EndpointError, RowError
from .formats import Columns, Format, read_row, write_row
from .prompts import Prompts
from .protocol import RefinedConversation, gather_or_cancel, refine_conversation

# The modules whose code decides the refined text. Editing any of them changes every fingerprint,
# because datasets pickles importable code by reference and would otherwise reuse stale results.
_OUTPUT_MODULES = ("config.py", "formats.py", "judge.py", "pairwise.py", "prompts.py", "protocol.py", "transform.py", "client/tgi.py")


def _implementation_tag() -> str:
    digest = hashlib.sha256()
    package = resources.files("coevol_hf")
    for name in _OUTPUT_MODULES:
        digest.update(package.joinpath(name).read_bytes())
    return f"coevol-hf {__version__} {digest.hexdigest()[:16]}"


IMPLEMENTATION = _implementation_tag()


class CoEvol:
    """Refine the responses of a dataset with CoEvol: `ds.map(CoEvol(endpoint=...), batched=True)`.

    Every option is a keyword. `endpoint` defaults to `COEVOL_ENDPOINT`, else
    `http://127.0.0.1:8080`; a list (or comma-separated string) names replicas of one model.
    `pipeline` picks the full method (default) or one of the paper's one-pass ablations
    (`coevol_hf.config.PIPELINES`). Options that change outputs (`pipeline`, `max_rounds`, `judge_mode`, `temperature`, `max_new_tokens`,
    `seed`, `context_turns`, `api`, `chat_template`, `model`, `structured_judge`, `on_error`,
    `prompts`, `columns`, `format`) enter the cache fingerprint; `endpoint`, `max_concurrency`,
    `timeout`, `token`, `max_retries`, `retry_backoff`, `request_cache` and `cache_dir` do not.

    Every answered call is kept in a request cache (SQLite under `$HF_HOME/coevol-hf`, or
    `cache_dir`; `request_cache=False` turns it off), so a crashed or killed run, started again,
    pays only for the calls it had not received.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | None = None,
        *,
        pipeline: str = "coevol",
        max_rounds: int = 3,
        judge_mode: str = "compare",
        temperature: float = 0.0,
        max_new_tokens: int = 1000,
        seed: int | None = 0,
        context_turns: int = 3,
        api: str = "chat",
        chat_template: str | None = None,
        model: str | None = None,
        structured_judge: bool = True,
        on_error: str = "record",
        prompts: Prompts | Mapping[str, str] | None = None,
        columns: Columns | Mapping[str, str] | None = None,
        format: str | None = None,
        max_concurrency: int = 64,
        timeout: float = 600.0,
        token: str | None = None,
        max_retries: int = 6,
        retry_backoff: float = 1.0,
        request_cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        options = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self._options = options
        self.config, self._connection = build_config(options)
        self._server: ServerInfo | None = None
        self._probed: dict[str, ServerInfo | None] = {}
        self._client: EndpointClient | None = None
        self._variants: dict[str, CoEvol] = {}

    def __repr__(self) -> str:
        endpoints = ",".join(self.connection.endpoints)
        return f"CoEvol(endpoint={endpoints!r}, max_rounds={self.config.max_rounds}, judge_mode={self.config.judge_mode!r})"

    # -- what the endpoints serve ---------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """How the servers are reached; without endpoint=, `COEVOL_ENDPOINT` is read at call time."""
        if self._options["endpoint"] is None:
            endpoints = Connection.default_endpoints()
            if endpoints != self._connection.endpoints:
                self._connection = dataclasses.replace(self._connection, endpoints=endpoints)
                self._server = self._client = None
        return self._connection

    @property
    def server(self) -> ServerInfo:
        """What the endpoints serve, asked once (GET /info, else /v1/models).

        Every endpoint that answers must serve the same model; one that does not answer is
        left out for now and probed again during the run.
        """
        connection = self.connection  # first: a changed COEVOL_ENDPOINT forgets the old server
        if self._server is None:
            probed: dict[str, ServerInfo | None] = {}
            errors: list[EndpointError] = []
            for endpoint in connection.endpoints:
                try:
                    probed[endpoint] = probe_server(endpoint, connection.token)
                except EndpointError as err:
                    probed[endpoint] = None
                    errors.append(err)
            answered = {url: info for url, info in probed.items() if info is not None}
            if not answered:
                raise errors[0] if len(errors) == 1 else EndpointError("No endpoint answers: " + " | ".join(map(str, errors)))
            served = {(info.identity, info.kind) for info in answered.values()}
            if len(served) > 1:
                listing = ", ".join(f"{url} serves {info.identity!r} ({info.kind})" for url, info in answered.items())
                raise ConfigError(f"The endpoints must be replicas of one model and server kind: {listing}.")
            server = next(iter(answered.values()))
            if self.config.model is not None and self.config.model not in (server.model_id, server.identity):
                raise ConfigError(
                    f"model={self.config.model!r} was asked for, but {', '.join(answered)} "
                    f"{'serves' if len(answered) == 1 else 'serve'} {server.identity!r}. Point endpoint= at the right server or change model=."
                )
            self._server, self._probed = server, probed
        return self._server

    def fingerprint_state(self) -> dict[str, Any]:
        """What the `datasets` cache fingerprint is made of.

        The served model comes from `model=` when given (then hashing needs no request), else
        from the server; an unreachable server hashes as such, and the run then stops with a
        clear error before any row is processed.
        """
        if self.config.model is not None:
            model = self.config.model
        else:
            try:
                model = self.server.identity
            except Exception:  # reported by __call__'s preflight, with its real message
                model = "<unreachable>"
        return {"implementation": IMPLEMENTATION, "model": model, "config": self.config.to_dict()}

    def run_config(self) -> dict[str, Any]:
        """Everything needed to redo this run (`coevol_config.json` next to published data)."""
        from .card import run_config

        server = self.server
        return run_config(self.config, model=server.identity, server={"kind": server.kind, "version": server.version}, implementation=IMPLEMENTATION)

    @property
    def calls_made(self) -> int:
        """HTTP requests for LLM calls this process sent for this transform, retries included."""
        return self._count("calls_made")

    @property
    def cache_hits(self) -> int:
        """LLM calls this process answered from the request cache instead of a server."""
        return self._count("cache_hits")

    @property
    def cache_misses(self) -> int:
        """LLM calls this process looked up in the request cache and had to ask a server for."""
        return self._count("cache_misses")

    def _count(self, counter: str) -> int:
        own = getattr(self._client, counter) if self._client is not None else 0
        return own + sum(getattr(variant, counter) for variant in self._variants.values())

    # -- pickling: everything for num_proc workers, but no live connection -----------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self._options, "server": self._server, "probed": self._probed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["options"])
        self._server, self._probed = state["server"], state["probed"]

    # -- the map function -------------------------------------------------------------------

    def __call__(self, batch: Mapping[str, Sequence[Any]], **overrides: Any) -> dict[str, Any]:
        """Refine one batch (`batched=True`); `overrides` are `fn_kwargs` options for this call."""
        if overrides:
            return self._variant(overrides)(batch)
        fmt = self.config.columns.detect(list(batch))
        server = self.server
        return _LOOP.run(self._refine_batch(fmt, batch, server))

    def _variant(self, overrides: Mapping[str, Any]) -> "CoEvol":
        key = repr(sorted(overrides.items()))
        if key not in self._variants:
            unknown = set(overrides) - set(self._options)
            if unknown:
                raise ConfigError(f"Unknown option(s) {sorted(unknown)} in fn_kwargs; known: {sorted(self._options)}.")
            self._variants[key] = CoEvol(**{**self._options, **overrides})
        return self._variants[key]

    def client(self, server: ServerInfo) -> EndpointClient:
        """This process's client for the endpoints (made on first use, inside the event loop)."""
        if self._client is None:
            self._client = EndpointClient(self.connection, self.config, server, self._probed)
        return self._client

    async def _refine_batch(self, fmt: Format, batch: Mapping[str, Sequence[Any]], server: ServerInfo) -> dict[str, Any]:
        client = self.client(server)
        columns = self.config.columns
        present = [c for c in columns.source_columns(fmt) if c in batch]
        size = len(batch[present[0]])
        rows = [{c: batch[c][i] for c in present} for i in range(size)]
        # One raise (every endpoint down, on_error='raise') cancels the other rows' calls.
        results = await gather_or_cancel(*(self._refine_row(fmt, row, client) for row in rows))

        target = columns.response_column(fmt)
        written = list(batch[target])
        originals, rounds, traces, errors = [], [], [], []
        for i, (row, (original, outcome)) in enumerate(zip(rows, results)):
            originals.append(original)
            if isinstance(outcome, RowError):
                rounds.append([])
                traces.append(None)
                errors.append(str(outcome))
                continue
            written[i] = write_row(fmt, row, columns, outcome.responses)[target]
            rounds.append(outcome.accepted_rounds)
            traces.append(json.dumps(_trace(outcome, server, self.config), ensure_ascii=False))
            errors.append(None)
        return {
            target: written,
            "coevol_original": _typed(originals, pa.list_(pa.string())),
            "coevol_rounds": _typed(rounds, pa.list_(pa.int32())),
            "coevol_trace": _typed(traces, pa.string()),
            "coevol_error": _typed(errors, pa.string()),
            "coevol_model": _typed([server.identity] * size, pa.string()),
        }

    async def _refine_row(self, fmt: Format, row: Mapping[str, Any], client: EndpointClient) -> tuple[list[str], RefinedConversation | RowError]:
        """The row's original responses (as far as readable) and its refinement or why it failed."""
        try:
            conversation = read_row(fmt, row, self.config.columns)
        except RowError as err:
            return [], row_failure(err, row, self.config.on_error)
        try:
            return conversation.responses, await refine_conversation(conversation, self.config, client)
        except RowError as err:
            return conversation.responses, row_failure(err, row, self.config.on_error)


def row_failure(err: RowError, row: Mapping[str, Any], on_error: str) -> RowError:
    """The error to record for a failed row, or, with on_error='raise', raise it naming the row."""
    if on_error == "raise":
        start = next((str(v) for v in row.values() if isinstance(v, str)), "")[:60]
        raise RowError(err.kind, f"{err.args[0]} (on_error='raise'; the row starting {start!r})") from None
    return err


def _typed(values: list[Any], arrow_type: pa.DataType) -> list[pa.Scalar]:
    """Values that keep their Arrow type through `map`'s writer.

    A plain list is typed from its values, so a first batch whose errors are all None would fix
    the column as null and make a later batch fail; typed scalars carry the type themselves.
    """
    return list(pa.array(values, type=arrow_type))


def _trace(refined: Any, server: ServerInfo, config: RefineConfig) -> dict[str, Any]:
    return {
        "model": server.identity,
        "server": {"kind": server.kind, "version": server.version},
        "pipeline": config.pipeline,
        "judge_mode": config.judge_mode,
        "turns": refined.turns,
        "usage": {
            "calls": refined.usage.calls,
            "prompt_tokens": refined.usage.prompt_tokens,
            "completion_tokens": refined.usage.completion_tokens,
        },
    }


@pklregister(CoEvol)
def _hash_coevol(pickler: Any, obj: CoEvol) -> None:
    """How datasets' fingerprint pickler sees a CoEvol: its outputs-deciding state only."""
    pickler.save_reduce(_fingerprint_stub, (obj.fingerprint_state(),), obj=obj)


def _fingerprint_stub(state: dict[str, Any]) -> dict[str, Any]:
    return state


class _LoopThread:
    """One event loop per process, on a daemon thread, shared by every CoEvol of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def run(self, coroutine: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._get())
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name="coevol-hf-loop", daemon=True).start()
            return self._loop


_LOOP = _LoopThread()

coevol_refine = CoEvol()
"""Ready to use: `ds.map(coevol_refine, batched=True)`, endpoint from `COEVOL_ENDPOINT`.

Options can also be given per call: `ds.map(coevol_refine, batched=True, fn_kwargs={...})`.
Note that datasets hashes `fn_kwargs` itself, so an endpoint given there enters the cache key;
give it through `COEVOL_ENDPOINT` or `CoEvol(endpoint=...)` to keep cached results across servers.
"""
