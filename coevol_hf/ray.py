"""Run an operator on Ray Data, for data and servers that live on a Ray cluster.

`ds.map_batches(CoEvol, fn_constructor_kwargs={...}, concurrency=N, batch_size=B)` works as is:
each actor builds its own operator, with its own event loop, client session and request cache.
This module adds what a whole job needs on top of that, for `coevol-hf refine --ray` and for
scripts: a local instance that listens on 127.0.0.1 only, Arrow batches typed by the operator
(so every Parquet file of one job has one schema and loads with `load_dataset("parquet")`), the
rows' order, the calls every actor made, and a refusal to put SQLite on a network file system.

Each node keeps its own request cache, at `cache_dir` (default `$HF_HOME/coevol-hf`) as that node
resolves it. Ray is imported only here, and only when used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa

from .cache import RequestCache
from .errors import CoEvolError, ConfigError
from .options import check_int

if TYPE_CHECKING:
    import ray.data
    from datasets import Dataset

    from .operator import MapOperator

# File systems on which SQLite's locking is unreliable (sqlite.org: "SQLite Over a Network").
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "9p", "virtiofs"}
)
_NETWORK_FUSE = ("sshfs", "s3fs", "gcsfuse", "juicefs", "glusterfs", "ceph", "lustre", "blobfuse", "goofys", "rclone")


def connect(address: str | None = None, **init_kwargs: Any) -> None:
    """Join the Ray cluster at `address` ("auto": the one `ray start` made here), or start a local one.

    A local instance is a new one even when `RAY_ADDRESS` or a `ray start` on this machine
    names a cluster (Ray would join it), and it listens on 127.0.0.1 only: Ray otherwise binds
    its services to every interface. That choice is read when Ray is imported, so it holds only
    if Ray was not imported before in this process.
    """
    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        init_kwargs.setdefault("include_dashboard", False)
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address or "local", **init_kwargs)


@dataclasses.dataclass
class RayRun:
    """A finished job: the refined rows as a `datasets.Dataset`, the calls made, the wall time."""

    dataset: Dataset
    calls: tuple[int, int, int]  # HTTP requests sent, request-cache hits, misses (every actor)
    seconds: float


def refine_on_ray(
    dataset: Dataset,
    operator: MapOperator,
    *,
    concurrency: int = 2,
    batch_size: int = 1000,
    num_cpus: float = 1,
) -> RayRun:
    """Run `operator` over `dataset` on `concurrency` Ray actors; rows keep their order.

    The result is read back from Parquet into a file-backed `datasets.Dataset`, so everything
    that takes refined data (statistics, the card, `push_to_hub`) takes it. Call `connect` first.
    `batch_size` is lowered so that every actor gets a batch. A coevol-hf error in an actor
    (`on_error="raise"`, every endpoint down) is raised here as itself.
    """
    check_int("concurrency", concurrency)
    check_int("batch_size", batch_size)
    if len(dataset) == 0:
        return RayRun(dataset, (0, 0, 0), 0.0)  # as datasets does: no LLM call, no new column
    ray = _import_ray()
    operator.server  # a wrong or unreachable endpoint stops the job here, before any actor starts
    operator.read_columns(dataset.column_names)  # and so do missing columns
    rows = len(dataset)
    batch_size = max(1, min(batch_size, math.ceil(rows / concurrency)))  # a batch for every actor
    table = dataset.with_format("arrow")[:]  # applies select()/shuffle(); no Hub lookup, unlike from_huggingface
    blocks = max(1, math.ceil(rows / batch_size))
    tally = ray.remote(num_cpus=0)(CallTally).remote()
    started = time.perf_counter()
    with _job_context(), tempfile.TemporaryDirectory(prefix="coevol-ray-") as folder:
        mapped = map_on_ray(ray.data.from_arrow(table, override_num_blocks=blocks), operator, concurrency=concurrency, batch_size=batch_size, num_cpus=num_cpus, tally=tally)
        path = Path(folder) / "data.parquet"
        try:
            _write_parquet(mapped, path)
        except Exception as err:  # Ray's wrapper holds the actor's error as `cause`, its text a traceback
            cause = getattr(err, "cause", None)
            if isinstance(cause, CoEvolError) and cause.args and isinstance(cause.args[0], str):
                # Ray Data appends "\nFailed to apply UDF transform after 1/1 attempts ..." to the message.
                cause.args = (cause.args[0].split("\nFailed to ", 1)[0], *cause.args[1:])
                raise cause from None
            raise
        seconds = time.perf_counter() - started
        from datasets import Dataset

        refined = Dataset.from_parquet(str(path))  # copied into the datasets cache: the folder can go
    calls = ray.get(tally.totals.remote())
    ray.kill(tally)
    return RayRun(refined, calls, seconds)


def map_on_ray(
    dataset: ray.data.Dataset,
    operator: MapOperator,
    *,
    concurrency: int = 2,
    batch_size: int = 1000,
    num_cpus: float = 1,
    tally: Any = None,
) -> ray.data.Dataset:
    """`dataset.map_batches` with `operator` on an actor pool, as typed Arrow tables.

    Ray restarts a dead actor and retries its batch (its defaults for actor pools); the
    retry's answered calls come from that node's request cache. Rows keep their order only if
    `DataContext.get_current().execution_options.preserve_order` is set (`refine_on_ray` sets it).
    Without `endpoint=`, the endpoint is read here, not on each node: an actor elsewhere would
    read its own `COEVOL_ENDPOINT` (or call its own 127.0.0.1).
    """
    ray = _import_ray()
    if operator.options.endpoint is None:
        operator = type(operator).from_options(operator.options.replace({"endpoint": operator.options.connection().endpoints}))
    return dataset.map_batches(
        ArrowOperator,
        fn_constructor_kwargs={"operator": operator, "tally": tally},
        batch_format="pyarrow",
        batch_size=batch_size,
        # One batch per actor at a time: an actor's queued batch would wait behind the running one
        # while another actor idles (Ray queues up to 4 per actor by default).
        compute=ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=1),
        num_cpus=num_cpus,
    )


class ArrowOperator:
    """What each actor runs: the operator on Arrow batches, its new columns typed as it declares.

    Ray infers a column's type from each batch's values, so a batch whose `coevol_error` are all
    null would write a Parquet file whose schema differs from the others', and `datasets`
    could not load the job's output. Typing by `output_types()` keeps one schema per job.
    """

    def __init__(self, operator: MapOperator, tally: Any = None) -> None:
        if operator.options.request_cache:
            check_local_disk(RequestCache(operator.options.cache_dir).path.parent)
        self.operator, self.tally = operator, tally

    def __call__(self, table: pa.Table) -> pa.Table:
        operator = self.operator
        # Only the columns the operator reads: a plain dict batch is told from a single row by its
        # values, and a struct column (a list of dicts) would pass for a single row's turns.
        read = [name for name in operator.read_columns(table.column_names) if name in table.column_names]
        before = self._counts()
        new = operator({name: table.column(name).to_pylist() for name in read})
        if self.tally is not None:
            import ray

            ray.get(self.tally.add.remote(*(after - earlier for after, earlier in zip(self._counts(), before))))
        types = operator.output_types()
        for name, values in new.items():
            if name in table.column_names:
                index = table.column_names.index(name)
                table = table.set_column(index, name, pa.array(values, type=types.get(name, table.schema.field(name).type)))
            else:
                table = table.append_column(name, pa.array(values, type=types[name]))
        return table

    def _counts(self) -> tuple[int, int, int]:
        return self.operator.calls_made, self.operator.cache_hits, self.operator.cache_misses


class CallTally:
    """A small actor adding up what every operator actor reports after each batch."""

    def __init__(self) -> None:
        self.sent = self.hits = self.misses = 0

    def add(self, sent: int, hits: int, misses: int) -> None:
        self.sent, self.hits, self.misses = self.sent + sent, self.hits + hits, self.misses + misses

    def totals(self) -> tuple[int, int, int]:
        return self.sent, self.hits, self.misses


def check_local_disk(path: Path, mounts: str = "/proc/mounts") -> None:
    """Refuse a request cache on a network file system, where SQLite's locking is unreliable."""
    kind = file_system(path, mounts)
    if kind is not None and (kind in NETWORK_FILE_SYSTEMS or kind.startswith("fuse.") and any(name in kind for name in _NETWORK_FUSE)):
        raise ConfigError(
            f"The request cache {path} is on a network file system ({kind}); SQLite must stay on local disk. "
            "Pass cache_dir= (--cache-dir) with a local path on every node, e.g. /tmp/coevol-hf or a local SSD."
        )


def file_system(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The type of the file system holding `path` (Linux; None where /proc/mounts is missing)."""
    try:
        table = Path(mounts).read_text()
    except OSError:
        return None
    target = Path(os.path.normpath(Path(path).expanduser().absolute()))
    existing = next(parent for parent in (target, *target.parents) if parent.exists())
    target = existing.resolve() / target.relative_to(existing)  # links resolved; the rest may not exist yet
    best, kind = "", None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == Path(point) or Path(point) in target.parents) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _write_parquet(dataset: ray.data.Dataset, path: Path) -> None:
    """One Parquet file, in the rows' order, written as the batches arrive."""
    import pyarrow.parquet as pq

    writer = None
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            if writer is None:
                writer = pq.ParquetWriter(str(path), batch.schema)
            writer.write_table(batch.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


@contextlib.contextmanager
def _job_context() -> Iterator[None]:
    """Rows in their order, and an actor's error raised as itself (not as Ray's "UDF failed")."""
    from ray.data import DataContext

    context = DataContext.get_current()
    kept = context.execution_options.preserve_order, context.raise_original_map_exception
    context.execution_options.preserve_order = context.raise_original_map_exception = True
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.raise_original_map_exception = kept


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError('Running on Ray needs Ray Data: pip install "coevol-hf[ray]"') from None
    return ray
