"""The operators on Ray Data: a local Ray instance (2 CPUs, 127.0.0.1 only) and the TGI test server.

One Ray instance for the module (starting one takes seconds). Every request cache is given as
`cache_dir=` a tmp folder: Ray's workers keep the environment of `ray.init`, not a test's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

if importlib.util.find_spec("ray") is None:
    pytest.skip('Ray is not installed: pip install -e ".[ray]" (or ".[test]") to run these tests', allow_module_level=True)

from conftest import alpaca_rows, sharegpt_rows
from datasets import Dataset, load_dataset
from tgi_server import TGIServer

from coevol_hf import CoEvol, ConfigError, PairwiseJudge
from coevol_hf.errors import RowError
from coevol_hf.card import build_card, split_stats
from coevol_hf.ray import check_local_disk, connect, map_on_ray, refine_on_ray

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def flags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the test and Ray's workers both see, for `DiesAfterItsBatch`."""
    return tmp_path_factory.mktemp("ray-flags")


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory, flags: Path) -> Any:
    """A local Ray; its workers can import this module (for `DiesAfterItsBatch`) and find `flags`."""
    import_path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", import_path)
        env.setenv("COEVOL_TEST_FLAGS", str(flags))
        env.setenv("HF_HOME", str(tmp_path_factory.mktemp("ray-hf-home")))
        connect(num_cpus=2, log_to_driver=False)
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture
def ordered(ray_local: Any) -> Any:
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    kept, options.preserve_order = options.preserve_order, True
    yield
    options.preserve_order = kept


def plain(value: Any) -> Any:
    """Python values from the numpy arrays and scalars Ray hands back in rows."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if type(value).__module__ == "numpy":
        return plain(value.tolist())
    return value


def with_ids(rows: list[dict]) -> list[dict]:
    return [{**row, "row": i} for i, row in enumerate(rows)]


def on_datasets(operator: Any, rows: list[dict]) -> list[dict]:
    return Dataset.from_list(rows).map(operator, batched=True).to_list()


def test_local_ray_listens_on_loopback_only(ray_local: Any) -> None:
    assert [node["NodeManagerAddress"] for node in ray_local.nodes()] == ["127.0.0.1"]


@pytest.mark.parametrize("batch_format", ["default", "pandas"])
def test_map_batches_gives_the_rows_of_the_datasets_run(ray_local: Any, ordered: Any, server: TGIServer, tmp_path: Path, batch_format: str) -> None:
    rows = with_ids(sharegpt_rows()[:3])
    rows.append({"id": "bad", "conversations": [{"from": "gpt", "value": "An answer to nothing."}], "row": 3})  # a bad row: coevol_error
    options = {"endpoint": server.url, "max_rounds": 1}
    expected = on_datasets(CoEvol(**options, cache_dir=str(tmp_path / "datasets")), rows)

    refined = ray_local.data.from_items(rows).map_batches(
        CoEvol, fn_constructor_kwargs={**options, "cache_dir": str(tmp_path / "ray")}, concurrency=2, batch_size=2, batch_format=batch_format
    )
    got = [plain(row) for row in refined.take_all()]
    assert [row["row"] for row in got] == [0, 1, 2, 3]  # none lost, duplicated or moved
    assert got == expected
    assert got[3]["coevol_error"].startswith("input: ") and got[0]["conversations"][1]["value"].endswith(" [edited]")


def test_pairwise_judge_on_ray(ray_local: Any, ordered: Any, server: TGIServer, tmp_path: Path) -> None:
    rows = with_ids(alpaca_rows(4))
    for row in rows:
        row["refined"] = row["output"] + " And more."
    rows[3]["refined"] = None  # no answer to judge: judge_error
    options = {"a": "output", "b": "refined", "endpoint": server.url}
    expected = on_datasets(PairwiseJudge(**options, cache_dir=str(tmp_path / "datasets")), rows)
    assert expected[3]["judge_scores"] == {"a": None, "b": None}  # datasets reads a null struct back as a dict of nulls
    expected[3]["judge_scores"] = None

    refined = ray_local.data.from_items(rows).map_batches(PairwiseJudge, fn_constructor_kwargs={**options, "cache_dir": str(tmp_path / "ray")}, concurrency=2, batch_size=2)
    got = [plain(row) for row in refined.take_all()]
    assert got == expected
    assert [row["judge_winner"] for row in got] == ["b", "b", "b", None] and got[3]["judge_error"]


def test_refine_on_ray_gives_the_datasets_rows_typed_and_counted(ray_local: Any, server: TGIServer, tmp_path: Path) -> None:
    rows = with_ids(alpaca_rows(7))
    rows[6]["output"] = None  # the only error, in the last batch: its column is all null in the others
    expected = on_datasets(CoEvol(endpoint=server.url, max_rounds=1, cache_dir=str(tmp_path / "datasets")), rows)
    server.reset()

    refiner = CoEvol(endpoint=server.url, max_rounds=1, cache_dir=str(tmp_path / "ray"))
    run = refine_on_ray(Dataset.from_list(rows), refiner, concurrency=2, batch_size=2)
    assert run.dataset.to_list() == expected  # the same rows, in the same order
    assert run.calls == (6 * 8, 0, 6 * 8) and len(server.calls) == 6 * 8
    assert run.dataset.features["coevol_error"].dtype == "string"
    stats = split_stats({"train": run.dataset})
    assert (stats.rows, stats.rows_improved, stats.errors_by_kind) == (7, 6, {"input": 1})
    assert "CoEvol" in str(build_card({"train": run.dataset}, refiner.run_config(), stats=stats))

    # Ray's own Parquet output, one file per block, loads with datasets; every call is a cache hit.
    server.reset()
    from ray.data import from_items

    map_on_ray(from_items(rows), refiner, concurrency=2, batch_size=2).write_parquet(str(tmp_path / "parquet"))
    loaded = load_dataset("parquet", data_files=str(tmp_path / "parquet" / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded.to_list(), key=lambda row: row["row"]) == expected
    assert server.calls == []


def test_the_endpoint_is_read_where_the_job_starts(ray_local: Any, server: TGIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's workers keep the environment of ray.init: without the driver's COEVOL_ENDPOINT they
    # would call 127.0.0.1:8080, where nothing answers (on a cluster: whatever that node runs).
    monkeypatch.setenv("COEVOL_ENDPOINT", server.url)
    run = refine_on_ray(Dataset.from_list(alpaca_rows(2)), CoEvol(max_rounds=1, cache_dir=str(tmp_path / "cache")), concurrency=2, batch_size=1)
    assert run.dataset["coevol_error"] == [None, None] and len(server.calls) == 2 * 8


def test_an_actors_error_reaches_the_caller_as_itself(ray_local: Any, server: TGIServer, tmp_path: Path) -> None:
    rows = alpaca_rows(3)
    rows[2]["output"] = ""
    refiner = CoEvol(endpoint=server.url, max_rounds=1, on_error="raise", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(RowError) as raised:
        refine_on_ray(Dataset.from_list(rows), refiner, concurrency=1, batch_size=3)
    assert str(raised.value).startswith("input: column 'output' must be a non-empty string") and "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match=r"concurrency must be an integer >= 1, not 0"):
        refine_on_ray(Dataset.from_list(rows), refiner, concurrency=0)


def test_a_local_instance_is_new_even_where_ray_address_names_a_cluster(tmp_path: Path) -> None:
    # Ray would otherwise join the cluster RAY_ADDRESS (or a `ray start` here) names.
    code = "from coevol_hf.ray import connect\nimport ray\nconnect(num_cpus=1)\nprint([n['NodeManagerAddress'] for n in ray.nodes()])\nray.shutdown()"
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "['127.0.0.1']"


class DiesAfterItsBatch(CoEvol):
    """CoEvol whose first batch, in whichever actor gets it, ends the process once all its calls are answered."""

    def __call__(self, batch: Any, **overrides: Any) -> Any:
        out = super().__call__(batch, **overrides)
        flag = Path(os.environ["COEVOL_TEST_FLAGS"]) / "die"
        try:
            flag.rename(flag.with_name("died"))  # atomic: only one process takes it
        except FileNotFoundError:
            return out
        flag.with_name("answered-before-dying").write_text(str(self.calls_made))
        os._exit(1)


def test_a_killed_actor_repeats_no_answered_call(ray_local: Any, flags: Path, server: TGIServer, tmp_path: Path) -> None:
    rows = with_ids(alpaca_rows(8))
    (flags / "die").touch()
    refiner = DiesAfterItsBatch(endpoint=server.url, max_rounds=1, cache_dir=str(tmp_path / "cache"))
    run = refine_on_ray(Dataset.from_list(rows), refiner, concurrency=2, batch_size=2)

    assert (flags / "died").exists()
    assert int((flags / "answered-before-dying").read_text()) == 2 * 8  # the dead actor's batch was answered...
    keys = [call.key for call in server.calls]
    assert len(keys) == len(set(keys)) == 8 * 8  # ...and Ray's retry of it sent none of its calls again
    assert run.calls == (6 * 8, 2 * 8, 6 * 8)  # the retry's 16 calls came from the request cache
    with TGIServer() as clean:
        assert run.dataset.to_list() == on_datasets(CoEvol(endpoint=clean.url, max_rounds=1, cache_dir=str(tmp_path / "clean")), rows)


def test_request_cache_on_a_network_file_system_is_refused(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"filer:/export {tmp_path}/shared nfs4 rw 0 0\n"
        f"me@host:/data {tmp_path}/sshfs fuse.sshfs rw 0 0\n"
        f"tmpfs {tmp_path}/shared/local tmpfs rw 0 0\n"
    )
    for remote in ("shared/hf/coevol-hf", "sshfs/cache"):
        with pytest.raises(ConfigError, match=r"network file system \((nfs4|fuse.sshfs)\).*cache_dir="):
            check_local_disk(tmp_path / remote, str(mounts))
    check_local_disk(tmp_path / "shared" / "local" / "coevol-hf", str(mounts))  # a local mount inside the share
    check_local_disk(tmp_path / "elsewhere", str(mounts))


# -- batch shapes as Ray hands them over ------------------------------------------------------------


def _batch_to_block(batch: Any) -> pa.Table:
    """What Ray makes of a batch an operator returns (Ray's own conversion)."""
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(BlockAccessor.batch_to_block(batch)).to_arrow()


NUMPY_UNTYPED = pytest.mark.xfail(strict=True, reason="a dict of numpy arrays cannot carry Arrow types that datasets also accepts: an all-None block becomes Arrow null (use refine_on_ray)")


@pytest.mark.parametrize("batch_format", [pytest.param("numpy", marks=NUMPY_UNTYPED), "pandas"])
def test_returned_columns_keep_their_declared_types(server: TGIServer, tmp_path: Path, batch_format: str) -> None:
    table = pa.Table.from_pylist(alpaca_rows(2))
    batch = table.to_pandas() if batch_format == "pandas" else {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    refiner = CoEvol(endpoint=server.url, max_rounds=1, cache_dir=str(tmp_path / "cache"))
    schema = _batch_to_block(refiner(batch)).schema
    assert {name: schema.field(name).type for name in refiner.output_types()} == dict(refiner.output_types())


def test_a_dict_batch_may_hold_a_struct_column(server: TGIServer, tmp_path: Path) -> None:
    rows = [{**row, "meta": {"source": "self-instruct"}} for row in alpaca_rows(2)]
    out = CoEvol(endpoint=server.url, max_rounds=1, cache_dir=str(tmp_path / "cache"))({name: [row[name] for row in rows] for name in rows[0]})
    assert out["coevol_error"] == [None, None]


def test_the_command_line_runs_the_job_on_ray(ray_local: Any, server: TGIServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from coevol_hf.cli import main

    rows = alpaca_rows(3)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    argv = ["refine", str(source), "-o", str(out), "--endpoint", server.url, "--max-rounds", "1", "--cache-dir", str(tmp_path / "cache"), "--ray", "--ray-actors", "2", "--batch-size", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "rows: 3, improved: 3" in printed and "HTTP requests sent: 24" in printed
    refined = pq.read_table(out / "data.parquet").to_pylist()
    assert [row["output"] for row in refined] == [row["output"] + " [edited]" for row in rows]
    assert len(server.calls) == 24
