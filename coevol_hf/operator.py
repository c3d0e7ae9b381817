"""The map-operator base: what `CoEvol` and `PairwiseJudge` share, so each is one row coroutine.

An operator is a plain callable for `Dataset.map(..., batched=True)`, `IterableDataset.map`,
`DatasetDict.map` and Ray Data's `map_batches`. The base owns:

- its options (one frozen dataclass per operator, see `options.py`) and `fn_kwargs` variants;
- batches in every shape those engines hand over (a dict of lists, of numpy arrays, a pandas
  DataFrame) and the matching shape out, with plain Python values inside;
- the per-process event loop on which the rows of a batch run concurrently (a sync `__call__`
  works from scripts, notebooks whose thread already runs a loop, `num_proc` workers and Ray
  actors alike);
- `on_error`: a row that fails records why in its error column, or stops the run;
- pickling (options and what was probed, never a socket) and the `datasets` fingerprint: the
  options that change outputs, the served model and this package's code, never the endpoint
  URL, concurrency, timeout or token.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import hashlib
import math
import os
import threading
import uuid
from importlib import resources
from typing import Any, ClassVar, Mapping, Sequence

import pyarrow as pa

from . import __version__
from .client.session import ClientSession
from .client.server import ServerInfo, model_identity
from .errors import ConfigError, RowError
from .options import JudgeOptions
from .prompts import Prompts
from .protocol import gather_or_cancel
from .trace import RunInfo

# The modules whose code decides the outputs (the texts, and the coevol_error and coevol_model
# columns). Editing any of them changes every fingerprint, because datasets pickles importable
# code by reference and would otherwise reuse stale results.
_OUTPUT_MODULES = (
    "options.py", "formats.py", "judge.py", "prompts.py", "protocol.py", "trace.py", "operator.py", "transform.py", "pairwise.py", "errors.py",
    "client/tgi.py", "client/session.py", "client/http.py", "client/server.py",
)


def _implementation_tag() -> str:
    digest = hashlib.sha256()
    package = resources.files("coevol_hf")
    for name in _OUTPUT_MODULES:
        digest.update(package.joinpath(name).read_bytes())
    return f"coevol-hf {__version__} {digest.hexdigest()[:16]}"


IMPLEMENTATION = _implementation_tag()
_DEFAULT_PROMPTS = dataclasses.asdict(Prompts())


@functools.lru_cache(maxsize=16)
def run_info_of(options: JudgeOptions, server: ServerInfo) -> RunInfo:
    """The run a row of these options, answered by this server, belongs to."""
    return RunInfo.of(
        version=__version__,
        implementation=IMPLEMENTATION,
        model=server.identity,
        server={"kind": server.kind, "version": server.version},
        options=options.output_options(),
        default_prompts=_DEFAULT_PROMPTS,
    )


class MapOperator:
    """Base of the map operators. Subclasses set `options_type` and write `process_row`."""

    options_type: ClassVar[type[JudgeOptions]]

    def __init__(self, **options: Any) -> None:
        self._setup(self.options_type.from_kwargs(options, type(self).__name__), None)

    def _setup(self, options: JudgeOptions, session: ClientSession | None) -> None:
        self.options = options
        self._session = _LOOP.keep(session) if session is not None else None
        self._variants: dict[str, MapOperator] = {}
        _register_fingerprint(type(self))

    @classmethod
    def from_options(cls, options: JudgeOptions) -> "MapOperator":
        operator = cls.__new__(cls)
        operator._setup(options, None)
        return operator

    # -- what a subclass writes -------------------------------------------------------------

    def output_types(self) -> Mapping[str, pa.DataType]:
        """The columns the operator adds, with their Arrow types."""
        raise NotImplementedError

    def read_columns(self, column_names: Sequence[str]) -> tuple[str, ...]:
        """The input columns the operator reads; raise `ConfigError` if the dataset lacks them."""
        raise NotImplementedError

    async def process_row(self, row: Mapping[str, Any], session: ClientSession, server: ServerInfo) -> dict[str, Any]:
        """The output columns of one row; raise `RowError` for a row that cannot be processed."""
        raise NotImplementedError

    def failed_row(self, row: Mapping[str, Any], error: RowError, server: ServerInfo) -> dict[str, Any]:
        """The output columns of a row whose processing failed with `error`."""
        raise NotImplementedError

    # -- the server -------------------------------------------------------------------------

    @property
    def session(self) -> ClientSession:
        """This process's client session; a new one if `COEVOL_ENDPOINT` changed since."""
        connection = self.options.connection()
        if self._session is None or self._session.connection != connection:
            self._session = _LOOP.keep(ClientSession(connection, self.options.sampling))
        return self._session

    @property
    def server(self) -> ServerInfo:
        """What the endpoints serve (asked once per session)."""
        return self.session.server()

    def run_info(self) -> RunInfo:
        """How this operator's rows are made (each row records it)."""
        return run_info_of(self.options, self.server)

    def fingerprint_state(self) -> dict[str, Any]:
        """What the `datasets` cache fingerprint is made of.

        The served model comes from `model=` (and `model_revision=`) when given, so hashing
        needs no request; else the server is asked again at every `map`, so a server restarted
        with another model never reuses old results. A server that does not answer gets a
        fingerprint of its own, never reused: `map` then asks it again, and either stops with
        the probe's error before any row or, if it answers by then, makes results no later run
        mistakes for its own.
        """
        sampling = self.options.sampling
        if sampling.model is not None:
            model = model_identity(sampling.model, sampling.model_revision)
        else:
            try:
                model = self.session.server(refresh=True).identity
            except Exception:  # reported by __call__, with its real message
                model = f"<unreachable {uuid.uuid4().hex}>"
        return {"operator": type(self).__name__, "implementation": IMPLEMENTATION, "model": model, "options": self.options.output_options()}

    @property
    def calls_made(self) -> int:
        """HTTP requests for LLM calls this process sent, retries included."""
        return self._count("calls_sent")

    @property
    def cache_hits(self) -> int:
        """LLM calls this process answered from the request cache instead of a server."""
        return self._count("cache_hits")

    @property
    def cache_misses(self) -> int:
        """LLM calls this process looked up in the request cache and had to ask a server for."""
        return self._count("cache_misses")

    def _count(self, counter: str) -> int:
        own = getattr(self._session, counter) if self._session is not None else 0
        return own + sum(variant._count(counter) for variant in self._variants.values())

    # -- pickling: everything for num_proc workers and Ray actors, but no live connection -----

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "session": self._session}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["options"], state["session"])

    # -- the map function -------------------------------------------------------------------

    def __call__(self, batch: Any, **overrides: Any) -> Any:
        """Process one batch (`batched=True`); `overrides` are `fn_kwargs` options for this call."""
        if overrides:
            return self._variant(overrides)(batch)
        columns = self.options.columns
        shape = Batch.of(batch, type(self).__name__, turn_columns=(columns.conversations, columns.messages))
        read = self.read_columns(shape.column_names)
        session = self.session
        server = session.server()
        rows = shape.rows(read)
        outputs = _LOOP.run(gather_or_cancel(*(self._process(row, session, server) for row in rows)))
        types = self.output_types()
        columns = {name: [output[name] for output in outputs] for name in (outputs[0] if outputs else types)}
        return shape.result(columns, types)

    def _variant(self, overrides: Mapping[str, Any]) -> "MapOperator":
        if "endpoint" in overrides:
            # datasets hashes this operator, whose model identity comes from its own endpoint: a
            # cache made for that model would be reused for whatever this endpoint serves.
            raise ConfigError(
                "endpoint= cannot be given in fn_kwargs: the datasets fingerprint names the model of the operator's own "
                "endpoint, not this one. Pass it as CoEvol(endpoint=...) (or PairwiseJudge(endpoint=...)), or set COEVOL_ENDPOINT."
            )
        key = repr(sorted(overrides.items()))
        if key not in self._variants:
            self._variants[key] = type(self).from_options(self.options.replace(overrides))
        return self._variants[key]

    async def _process(self, row: Mapping[str, Any], session: ClientSession, server: ServerInfo) -> dict[str, Any]:
        try:
            return await self.process_row(row, session, server)
        except RowError as err:
            if self.options.on_error == "raise":
                start = _first_text(row)[:60]
                raise RowError(err.kind, f"{err.args[0]} (on_error='raise'; the row starting {start!r})") from None
            return self.failed_row(row, err, server)


def _first_text(value: Any) -> str:
    """The first text in a row, conversations included: what names the row in an error."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and ("value" in value or "content" in value):
        # A turn: its text, never its role label; a system prompt (the same in every row) names no row.
        text = value.get("value", value.get("content"))
        return text if isinstance(text, str) and value.get("role", value.get("from")) != "system" else ""
    if isinstance(value, Mapping):
        items = list(value.values())
    else:
        items = value if isinstance(value, (list, tuple)) else ()
    return next((text for text in map(_first_text, items) if text), "")


class Batch:
    """A batch as an engine handed it over, read as plain Python rows and answered in kind.

    `datasets` hands a dict of lists (its own `LazyBatch` on Arrow datasets), Ray Data a dict of
    numpy arrays or a pandas DataFrame. On Arrow datasets the new columns go back as typed Arrow
    scalars: a first batch whose errors are all None would otherwise fix that column's type as
    null and make a later batch fail. Everywhere else they are plain values (numpy arrays and
    DataFrames for Ray, which replaces a batch by what it gets back, so those carry every column).
    """

    def __init__(self, batch: Any, kind: str, columns: Mapping[str, Any]) -> None:
        self.batch, self.kind, self.columns = batch, kind, columns

    @classmethod
    def of(cls, batch: Any, operator: str, *, turn_columns: Sequence[str] = ()) -> "Batch":
        """`turn_columns` hold conversations: a single row's holds dicts, a batch's holds lists."""
        not_batched = ConfigError(
            f"{operator} processes rows concurrently, a batch at a time, and was given a single row: "
            "pass batched=True to map (ds.map(coevol_refine, batched=True)), or use Ray Data's map_batches."
        )
        if _is_dataframe(batch):
            return cls(batch, "pandas", {str(name): batch[name] for name in batch.columns})
        if not isinstance(batch, Mapping):
            raise ConfigError(f"{operator} takes a batch: a dict of columns or a pandas DataFrame, not {type(batch).__name__}.")
        if type(batch).__name__ == "LazyBatch":  # datasets formats its columns only when read
            return cls(batch, "arrow", batch)
        values = list(batch.values())
        single_row = any(isinstance(batch[name], list) and batch[name][:1] and isinstance(batch[name][0], Mapping) for name in turn_columns if name in batch)
        if type(batch).__name__ == "LazyRow" or not values or single_row or not all(_is_column(v) for v in values):
            raise not_batched
        numpy = any(type(v).__module__ == "numpy" for v in values)
        return cls(batch, "numpy" if numpy else "python", batch)

    @property
    def column_names(self) -> list[str]:
        return [str(name) for name in self.columns.keys()]

    def rows(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """The rows, with only the columns `names` that the batch has, as plain Python values."""
        present = [name for name in names if name in self.columns]
        columns = {name: _plain(list(self.columns[name])) for name in present}
        size = len(next(iter(columns.values()))) if columns else 0
        return [{name: columns[name][i] for name in present} for i in range(size)]

    def result(self, new: dict[str, list[Any]], types: Mapping[str, pa.DataType]) -> Any:
        if self.kind == "arrow":
            return {name: (list(pa.array(values, type=types[name])) if name in types else values) for name, values in new.items()}
        if self.kind == "python":
            return new
        if self.kind == "numpy":
            import numpy as np

            return {**self.batch, **{name: _object_array(np, values) for name, values in new.items()}}
        import pandas as pd

        frame = self.batch.copy()
        for name, values in new.items():
            if name in types:  # typed, so that every block of a Ray job has one schema
                frame[name] = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, type=types[name])), index=frame.index)
            else:
                frame[name] = pd.Series(values, index=frame.index, dtype=object)  # None stays None
        return frame


def _is_dataframe(batch: Any) -> bool:
    return type(batch).__name__ == "DataFrame" and type(batch).__module__.startswith("pandas")


def _is_column(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return True
    # A 2-D array (a fixed-size list or tensor column, such as an embedding) is a column too.
    return type(value).__module__ == "numpy" and getattr(value, "ndim", 0) >= 1 or type(value).__name__ == "Series"


def _plain(value: Any) -> Any:
    """Python values from what numpy and pandas hold (arrays, numpy scalars, NaN for missing)."""
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing values (nullable dtypes)
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if type(value).__module__ == "numpy":
        return _plain(value.tolist())
    return value


def _object_array(np: Any, values: list[Any]) -> Any:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


_REGISTERED: set[type] = set()


def _register_fingerprint(cls: type) -> None:
    """Teach datasets' fingerprint pickler to hash an operator by `fingerprint_state()` alone.

    This uses `datasets.utils._dill.pklregister`, the hook datasets uses for tokenizers. It is
    private: pyproject bounds `datasets` to the versions tested, and tests/test_fingerprint.py
    fails loudly if the hook stops being used.
    """
    if cls in _REGISTERED:
        return
    from datasets.utils._dill import pklregister

    @pklregister(cls)
    def _hash(pickler: Any, obj: MapOperator) -> None:
        pickler.save_reduce(_fingerprint_stub, (obj.fingerprint_state(),), obj=obj)

    _REGISTERED.add(cls)


def _fingerprint_stub(state: dict[str, Any]) -> dict[str, Any]:
    return state


class _LoopThread:
    """One event loop per process, on a daemon thread, shared by every operator of the process.

    Sessions made here are closed at exit, so their connections end cleanly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None
        self._sessions: list[tuple[int, ClientSession]] = []
        atexit.register(self._close)

    def run(self, coroutine: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._get())
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def keep(self, session: ClientSession) -> ClientSession:
        self._sessions.append((os.getpid(), session))
        return session

    def _get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name="coevol-hf-loop", daemon=True).start()
            return self._loop

    def _close(self) -> None:
        if self._loop is not None and self._pid == os.getpid() and self._loop.is_running():
            for session in (session for pid, session in self._sessions if pid == self._pid):
                try:
                    asyncio.run_coroutine_threadsafe(session.aclose(), self._loop).result(5)
                except Exception:  # closing is best effort at exit
                    pass


_LOOP = _LoopThread()
