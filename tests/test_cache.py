"""The Arrow fingerprint cache across processes: a re-run loads from cache and calls no LLM.

These tests turn the request cache off (`ARROW_ONLY`) so that a call the server did not get
proves the Arrow cache was reused, not that the request cache answered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import alpaca_rows
from tgi_server import TGIServer

RUNNER = Path(__file__).with_name("cache_run.py")
HASH_WARNING = "couldn't be hashed properly"
ARROW_ONLY = {"request_cache": False}


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(4)))
    return path


def run(data_file: Path, cache_dir: Path, env: dict | None = None, **options) -> list[dict]:
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(data_file), str(cache_dir), json.dumps(options)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert HASH_WARNING not in result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_second_run_loads_from_cache(server: TGIServer, data_file: Path, tmp_path: Path) -> None:
    first = run(data_file, tmp_path / "cache", endpoint=server.url, max_rounds=1, **ARROW_ONLY)
    assert len(server.calls) == 4 * 8
    server.reset()

    second = run(data_file, tmp_path / "cache", endpoint=server.url, max_rounds=1, **ARROW_ONLY)
    assert server.calls == []
    assert second == first


def test_pinned_model_rerun_makes_no_request_at_all(server: TGIServer, data_file: Path, tmp_path: Path) -> None:
    run(data_file, tmp_path / "cache", endpoint=server.url, model="test-org/test-model", max_rounds=1, **ARROW_ONLY)
    server.reset()
    run(data_file, tmp_path / "cache", endpoint=server.url, model="test-org/test-model", max_rounds=1, **ARROW_ONLY)
    assert server.calls == [] and server.metadata_requests == []


@pytest.mark.parametrize(
    "changed",
    [
        {"max_rounds": 2},
        {"judge_mode": "score"},
        {"temperature": 0.5},
        {"max_new_tokens": 77},
        {"seed": 7},
        {"structured_judge": False},
        {"prompts": {"editor_task": "Suggestions:\n{suggestions}\n\nRewrite it."}},
    ],
)
def test_options_that_change_outputs_change_the_fingerprint(server: TGIServer, data_file: Path, tmp_path: Path, changed: dict) -> None:
    run(data_file, tmp_path / "cache", endpoint=server.url, max_rounds=1, **ARROW_ONLY)
    server.reset()
    run(data_file, tmp_path / "cache", endpoint=server.url, **{"max_rounds": 1, **ARROW_ONLY, **changed})
    assert len(server.calls) >= 4 * 8


def test_connection_options_do_not_change_the_fingerprint(server: TGIServer, data_file: Path, tmp_path: Path) -> None:
    run(data_file, tmp_path / "cache", endpoint=server.url, max_rounds=1, **ARROW_ONLY)
    with TGIServer() as replica:  # another server of the same model
        run(data_file, tmp_path / "cache", endpoint=replica.url, max_rounds=1, max_concurrency=3, timeout=5, token="secret", **ARROW_ONLY)
        assert replica.calls == []


def test_another_served_model_changes_the_fingerprint(data_file: Path, tmp_path: Path) -> None:
    with TGIServer() as server:
        run(data_file, tmp_path / "cache", endpoint=server.url, max_rounds=1)
    with TGIServer(model_sha="fedcba98") as upgraded:  # same model id, new revision
        rows = run(data_file, tmp_path / "cache", endpoint=upgraded.url, max_rounds=1)
        assert len(upgraded.calls) == 4 * 8
        assert {r["coevol_model"] for r in rows} == {"test-org/test-model@fedcba98"}


def test_coevol_refine_with_fn_kwargs_and_environment(server: TGIServer, data_file: Path, tmp_path: Path) -> None:
    env = {"COEVOL_ENDPOINT": server.url}
    options = {"use_coevol_refine": True, "map": {"fn_kwargs": {"max_rounds": 1, **ARROW_ONLY}}}
    first = run(data_file, tmp_path / "cache", env=env, **options)
    assert all(r["coevol_rounds"] == [1] for r in first)
    server.reset()
    assert run(data_file, tmp_path / "cache", env=env, **options) == first
    assert server.calls == []


def test_num_proc_gives_the_same_rows_and_caches(server: TGIServer, data_file: Path, tmp_path: Path) -> None:
    single = run(data_file, tmp_path / "single", endpoint=server.url, max_rounds=1, **ARROW_ONLY)
    server.reset()
    parallel = run(data_file, tmp_path / "parallel", endpoint=server.url, max_rounds=1, map={"num_proc": 2, "batch_size": 2}, **ARROW_ONLY)
    assert parallel == single
    assert len(server.calls) == 4 * 8
    server.reset()
    run(data_file, tmp_path / "parallel", endpoint=server.url, max_rounds=1, map={"num_proc": 2, "batch_size": 2}, **ARROW_ONLY)
    assert server.calls == []
