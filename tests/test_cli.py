"""The `coevol-hf` command against the in-process TGI server: files written, flags, messages."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import alpaca_rows
from hub_server import HubServer
from tgi_server import Call, Error, TGIServer, default_script

from coevol_hf.cli import MANIFEST_FILE, _command, _split_name, main
from coevol_hf.options import CoEvolOptions, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
SECRET = "hf_cli_test_secret_0123456789"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Three real Self-Instruct rows in a local file."""
    path = tmp_path / "seed_tasks.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(3)))
    return path


def refine(source: Path | str, output: Path, server: TGIServer, *extra: str) -> int:
    return main(["refine", str(source), "-o", str(output), "--endpoint", server.url, "--max-rounds", "1", *extra])


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def last_error(capsys: pytest.CaptureFixture) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    return line


# -- what the published files say about the run -------------------------------------------------


def test_published_files_name_no_path_endpoint_or_token(server: TGIServer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COEVOL_TOKEN", SECRET)
    output = tmp_path / "refined"
    assert refine(source, output, server, "--cache-dir", str(tmp_path / "request-cache"), "--jsonl") == 0
    assert all(call.headers["Authorization"] == f"Bearer {SECRET}" for call in server.calls)  # $COEVOL_TOKEN was used

    config = json.loads((output / "coevol_config.json").read_text())
    assert config["source"] == "seed_tasks.jsonl"
    assert config["command"] == "coevol-hf refine seed_tasks.jsonl -o refined --endpoint URL --max-rounds 1 --cache-dir request-cache --jsonl"
    for name in ("coevol_config.json", "README.md", "data.jsonl"):
        text = (output / name).read_text()
        assert str(tmp_path) not in text and server.url not in text and SECRET not in text, name
    assert "# coevol-hf refine seed_tasks.jsonl -o refined --endpoint URL" in (output / "README.md").read_text()


def test_recorded_command_redacts_tokens_by_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_environment_secret")
    source = tmp_path / "data" / "train.jsonl"
    source.parent.mkdir()
    source.write_text("{}\n")
    argv = [
        "refine", str(source), "-o/home/me/out", "--output=/srv/x/y",
        "--endpoint", "http://gpu-box.internal:8080,https://abc.us-east-1.aws.endpoints.huggingface.cloud,https://router.huggingface.co/v1?key=hf_environment_secret",
        "--token=hf_flag_secret", "--chat-template", "/etc/templates/chatml.jinja", "--prompts=../p.json",
        "--token", "hf_flag_secret", "--license", "hf_flag_secret", "--pretty-name", "hf_environment_secret",
    ]
    args = argparse.Namespace(argv=argv, input=str(source), token="hf_flag_secret")
    assert _command(args) == (
        "coevol-hf refine train.jsonl -oout --output=y "
        "--endpoint 'URL,URL,https://router.huggingface.co/v1?key=***' "
        "--chat-template chatml.jinja --prompts=p.json --license '***' --pretty-name '***'"
    )
    hub_id = argparse.Namespace(argv=["refine", "tatsu-lab/alpaca", "-o", "out"], input="tatsu-lab/alpaca", token=None)
    assert _command(hub_id) == "coevol-hf refine tatsu-lab/alpaca -o out"


@pytest.mark.parametrize(
    ("argv", "ray", "recorded"),
    [
        (["--ray", "ray://10.0.0.5:10001", "-o", "out"], "ray://10.0.0.5:10001", "--ray URL -o out"),
        (["--ray=ray://head.internal:10001", "-o", "out"], "ray://head.internal:10001", "--ray=URL -o out"),
        (["--ray", "-o", "out"], "local", "--ray -o out"),
        (["-o", "out", "--ray"], "local", "-o out --ray"),
        (["--ray", "auto", "-o", "out"], "auto", "--ray auto -o out"),
        (["--ray", "ray://10.0.0.5:10001", "--ray", "-o", "out"], "local", "--ray URL --ray -o out"),
        (["--ray", "ray://secret-head:10001", "--ray", "ray://other:1"], "ray://other:1", "--ray URL --ray URL"),
    ],
)
def test_recorded_command_hides_a_ray_cluster_address(argv: list[str], ray: str, recorded: str) -> None:
    args = argparse.Namespace(argv=["refine", "data.jsonl", *argv], input="data.jsonl", token=None, ray=ray)
    assert _command(args) == f"coevol-hf refine data.jsonl {recorded}"


@pytest.mark.parametrize("command", [["refine", "data.jsonl", "-o", "out"], ["push", "out", "me/data"]])
def test_abbreviated_flags_are_refused(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--tok", SECRET])
    assert exit_.value.code == 2 and "unrecognized arguments: --tok" in capsys.readouterr().err


# -- the output folder ----------------------------------------------------------------------------


def test_a_folder_with_a_users_file_is_refused_before_any_call(server: TGIServer, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "mydata"
    output.mkdir()
    (output / "README.md").write_text("# My own notes\n")
    (output / "notes.txt").write_text("mine")
    before = digests(output)
    assert refine(source, output, server) == 1
    assert last_error(capsys) == (
        f"coevol-hf refine: {output} holds files coevol-hf did not write (README.md, notes.txt): give a new or empty folder, or pass --overwrite."
    )
    assert digests(output) == before and server.calls == []

    assert refine(source, output, server, "--overwrite") == 0
    assert (output / "notes.txt").read_text() == "mine"  # replaced: only the files coevol-hf writes
    assert (output / "README.md").read_text().startswith("---\n")


def test_the_input_file_is_never_overwritten(server: TGIServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(2)))
    before = digests(folder)
    assert refine(folder / "data.jsonl", folder, server, "--jsonl", "--overwrite") == 1
    assert last_error(capsys) == f"coevol-hf refine: {folder / 'data.jsonl'} is the input: writing the output into {folder} would replace it; give another folder."
    assert digests(folder) == before and server.calls == []


def test_a_folder_coevol_hf_wrote_is_rewritten_and_earlier_files_go(server: TGIServer, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "out"
    assert refine(source, output, server, "--jsonl") == 0
    assert sorted(p.name for p in output.iterdir()) == [MANIFEST_FILE, "README.md", "coevol_config.json", "data.jsonl", "data.parquet", "report.html"]
    assert refine(source, output, server, "--judge-mode", "score") == 0  # no --jsonl: the earlier data.jsonl is removed
    assert sorted(p.name for p in output.iterdir()) == [MANIFEST_FILE, "README.md", "coevol_config.json", "data.parquet", "report.html"]
    assert json.loads((output / "coevol_config.json").read_text())["options"]["judge_mode"] == "score"

    (output / "README.md").write_text((output / "README.md").read_text() + "\nMy note.\n")  # the user edits the card
    capsys.readouterr()
    assert refine(source, output, server) == 1
    assert "holds files coevol-hf did not write (README.md)" in last_error(capsys)
    assert main(["card", str(output)]) == 1
    assert last_error(capsys) == f"coevol-hf card: {output} holds files coevol-hf did not write (README.md): pass --overwrite to replace them."
    assert main(["card", str(output), "--overwrite"]) == 0 and "My note." not in (output / "README.md").read_text()
    assert refine(source, output, server) == 0  # the card command recorded the card it wrote


def test_an_interrupted_write_leaves_the_folder_to_coevol_hf(server: TGIServer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "out"
    import datasets

    def killed(self: datasets.Dataset, path: str) -> None:
        Path(path).write_bytes(b"half a parquet file")
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.Dataset, "to_parquet", killed)
    assert refine(source, output, server) == 130
    monkeypatch.undo()
    assert refine(source, output, server) == 0 and pq.read_table(output / "data.parquet").num_rows == 3


# -- the input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nope.jsonl", "data/train.parquet", "./train", "a/b/c"])
def test_a_missing_local_file_fails_at_once(name: str, server: TGIServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["refine", name, "-o", str(tmp_path / "out"), "--endpoint", server.url]) == 1
    assert last_error(capsys) == f"coevol-hf refine: no such file: {name}"
    assert not (tmp_path / "out").exists() and server.calls == []


def test_a_missing_file_never_asks_the_hub_but_a_hub_id_does(tmp_path: Path) -> None:
    def run(name: str, hub: HubServer) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
        env.pop("HF_DATASETS_OFFLINE")
        command = [sys.executable, "-m", "coevol_hf.cli", "refine", name, "-o", str(tmp_path / "out"), "--endpoint", "http://127.0.0.1:9"]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    with HubServer() as hub:
        result = run("nope.jsonl", hub)
        assert result.returncode == 1 and result.stderr.strip() == "coevol-hf refine: no such file: nope.jsonl"
        # Every Hub request goes to HF_ENDPOINT: none at all means it failed without a lookup.
        assert hub.requests == [] and not (tmp_path / "out").exists()
        result = run("someone/nope", hub)
        assert result.returncode == 1 and any("/datasets/someone/nope/" in r for r in hub.requests)  # a Hub id is looked up on the Hub


def test_a_hub_dataset_split_is_refined_and_its_card_lends_the_licence(server: TGIServer, tmp_path: Path) -> None:
    train, test = alpaca_rows(6)[:4], alpaca_rows(6)[4:]
    with HubServer() as hub:
        hub.create(
            "org/seed-tasks",
            {
                "README.md": b"---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# Seed tasks\n",
                "train.jsonl": "".join(json.dumps(row) + "\n" for row in train).encode(),
                "test.jsonl": "".join(json.dumps(row) + "\n" for row in test).encode(),
            },
        )
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        env.pop("HF_DATASETS_OFFLINE")
        command = [
            sys.executable, "-m", "coevol_hf.cli", "refine", "org/seed-tasks", "--split", "train[:3]", "--limit", "2",
            "-o", str(tmp_path / "out"), "--endpoint", server.url, "--max-rounds", "1",
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
    output = tmp_path / "out"
    rows = pq.read_table(output / "data.parquet").to_pylist()
    assert [row["instruction"] for row in rows] == [row["instruction"] for row in train[:2]]
    assert [row["coevol_original"] for row in rows] == [[row["output"]] for row in train[:2]]
    assert [row["coevol_error"] for row in rows] == [None, None] and len(server.calls) == 2 * 8
    config = json.loads((output / "coevol_config.json").read_text())
    assert (config["source"], config["split"]) == ("org/seed-tasks", "train[:3]")
    assert config["command"] == "coevol-hf refine org/seed-tasks --split 'train[:3]' --limit 2 -o out --endpoint URL --max-rounds 1"
    card = (output / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---\n", 2)[1])
    assert metadata["license"] == "apache-2.0" and metadata["source_datasets"] == ["org/seed-tasks"]
    assert "Source: [org/seed-tasks](https://huggingface.co/datasets/org/seed-tasks)" in card


# -- caches: datasets' and the request cache ------------------------------------------------------


def test_a_cached_rerun_says_it_made_no_call(server: TGIServer, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert refine(source, tmp_path / "first", server) == 0
    printed = capsys.readouterr().out
    assert "LLM calls: 24 (request cache: 0 hits, 24 misses; HTTP requests sent: 24, retries included)" in printed
    assert "datasets cache" not in printed
    server.reset()
    assert refine(source, tmp_path / "second", server) == 0
    printed = capsys.readouterr().out
    assert "LLM calls: 24\n" in printed and "request cache:" not in printed
    assert "result loaded from the datasets cache: no LLM call was made; the 24 above are the calls recorded in the data" in printed
    assert server.calls == [] and server.metadata_requests == ["/info"]


def test_a_cached_rerun_with_model_needs_no_server(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # --model names what must answer, so hashing asks nothing; the run's record comes from the rows.
    with TGIServer() as server:
        assert refine(source, tmp_path / "first", server, "--model", "test-org/test-model") == 0
    capsys.readouterr()
    assert refine(source, tmp_path / "second", server, "--model", "test-org/test-model") == 0  # the server is gone
    assert "result loaded from the datasets cache: no LLM call was made" in capsys.readouterr().out
    first, second = (json.loads((tmp_path / name / "coevol_config.json").read_text()) for name in ("first", "second"))
    assert {**second, "command": None} == {**first, "command": None}  # the commands differ in -o only
    assert second["model"] == "test-org/test-model@0123abcd" and second["server"] == first["server"]


def test_a_run_that_sends_nothing_is_not_taken_for_a_cached_one(server: TGIServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    unusable = tmp_path / "empty_outputs.jsonl"
    unusable.write_text("".join(json.dumps({**row, "output": ""}) + "\n" for row in alpaca_rows(2)))
    assert refine(unusable, tmp_path / "out", server) == 0
    printed = capsys.readouterr().out
    assert "LLM calls: 0 (request cache: 0 hits, 0 misses; HTTP requests sent: 0, retries included)" in printed
    assert "datasets cache" not in printed and "errors: input: 2" in printed


def test_retry_errors_sends_only_the_failed_rows_calls(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    failing = alpaca_rows(3)[1]["instruction"]

    def of_failing_row(call: Call) -> bool:
        return any(failing in message["content"] for message in call.messages)

    def script(call: Call) -> str | Error:
        if call.role == "editor" and of_failing_row(call):
            return Error(422, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096", "validation")
        return default_script(call)

    with TGIServer(script) as server:
        assert refine(source, tmp_path / "out", server) == 0
        assert "errors: validation: 1" in capsys.readouterr().out
        rows = pq.read_table(tmp_path / "out" / "data.parquet").to_pylist()
        assert [row["coevol_error"] is None for row in rows] == [True, False, True]

        server.script = default_script  # the server heals
        server.reset()
        assert refine(source, tmp_path / "out", server) == 0  # the datasets cache keeps the error
        assert "rows with a coevol_error: 1; --retry-errors asks again for their calls only" in capsys.readouterr().out
        assert server.calls == []

        assert refine(source, tmp_path / "out", server, "--retry-errors") == 0
        printed = capsys.readouterr().out
        retried = list(server.calls)

    assert retried and all(of_failing_row(call) for call in retried)
    assert sorted(call.role for call in retried) == ["editor", "judge", "judge"]  # what the 422 had cut short
    assert "LLM calls: 24 (request cache: 21 hits, 3 misses; HTTP requests sent: 3, retries included)" in printed
    rows = pq.read_table(tmp_path / "out" / "data.parquet").to_pylist()
    assert [row["coevol_error"] for row in rows] == [None, None, None]
    assert json.loads(rows[1]["coevol_trace"])["usage"]["calls"] == 8


def test_in_python_load_from_cache_file_false_retries_only_the_failed_rows(source: Path, tmp_path: Path) -> None:
    """The README's way: `ds.map(CoEvol(...), batched=True, load_from_cache_file=False)`."""
    from datasets import load_dataset

    from coevol_hf import CoEvol

    failing = alpaca_rows(3)[2]["instruction"]

    def script(call: Call) -> str | Error:
        if call.role == "judge" and failing in call.task:
            return Error(503, "Model is overloaded", "overloaded")  # retried, then recorded
        return default_script(call)

    dataset = load_dataset("json", data_files=str(source), split="train")
    with TGIServer(script) as server:
        first = dataset.map(CoEvol(endpoint=server.url, max_rounds=1, max_retries=1, retry_backoff=0.01), batched=True)
        assert [error is None for error in first["coevol_error"]] == [True, True, False]
        server.script = default_script
        server.reset()
        assert dataset.map(CoEvol(endpoint=server.url, max_rounds=1), batched=True)["coevol_error"][2] is not None
        assert server.calls == []
        again = dataset.map(CoEvol(endpoint=server.url, max_rounds=1), batched=True, load_from_cache_file=False)
    assert again["coevol_error"] == [None, None, None]
    assert sorted(call.role for call in server.calls) == ["judge", "judge"] and all(failing in call.task for call in server.calls)


def test_retry_errors_needs_the_request_cache(server: TGIServer, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert refine(source, tmp_path / "out", server, "--retry-errors", "--no-request-cache") == 1
    assert last_error(capsys) == (
        "coevol-hf refine: --retry-errors relies on the request cache to answer the rows that succeeded: drop --no-request-cache."
    )


# -- options: one definition ----------------------------------------------------------------------


def test_generated_flags_reach_the_server(server: TGIServer, tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["instruction"], "completion": r["output"]}) + "\n" for r in alpaca_rows(2)))
    argv = ["--columns", "instruction=prompt,output=completion", "--no-structured-judge", "--judge-mode", "score", "--temperature", "0.5", "--seed", "7"]
    assert refine(data, tmp_path / "out", server, *argv) == 0
    judge = [call for call in server.calls if call.role == "judge"]
    assert judge and not any("response_format" in call.body for call in judge)
    assert {(call.body["temperature"], call.body["seed"]) for call in server.calls} == {(0.5, 7)}
    rows = pq.read_table(tmp_path / "out" / "data.parquet").to_pylist()
    assert [row["coevol_error"] for row in rows] == [None, None]
    assert [row["coevol_original"] for row in rows] == [[r["output"]] for r in alpaca_rows(2)]  # read from --columns
    options = json.loads((tmp_path / "out" / "coevol_config.json").read_text())["options"]
    assert options["judge_mode"] == "score" and options["structured_judge"] is False


def test_a_flag_naming_a_missing_file_is_one_line(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["refine", str(source), "-o", str(tmp_path / "out"), "--prompts", str(tmp_path / "prompts.json")]) == 1
    assert last_error(capsys) == f"coevol-hf refine: cannot read {tmp_path / 'prompts.json'}: No such file or directory"


def test_a_flag_value_that_cannot_be_read_says_what_is_wrong(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """argparse alone would print only "invalid _key_values value"."""
    with pytest.raises(SystemExit) as exit_:
        main(["refine", str(source), "-o", str(tmp_path / "out"), "--columns", "instruction"])
    assert exit_.value.code == 2
    assert last_error(capsys) == (
        "coevol-hf refine: error: argument --columns: expected ROLE=NAME pairs separated by commas "
        "(instruction=prompt,output=completion), not 'instruction'"
    )
    prompts = tmp_path / "prompts.json"
    prompts.write_text("{'editor_task': 'x'}")
    with pytest.raises(SystemExit):
        main(["refine", str(source), "-o", str(tmp_path / "out"), "--prompts", str(prompts)])
    assert last_error(capsys).startswith(f"coevol-hf refine: error: argument --prompts: {prompts} is not valid JSON (Expecting property name")


def test_input_without_rows_is_refused_before_any_call(server: TGIServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert refine(empty, tmp_path / "out", server) == 1
    assert last_error(capsys) == f"coevol-hf refine: {empty} is empty: nothing to refine."
    with pytest.raises(SystemExit):
        refine(empty, tmp_path / "out", server, "--limit", "0")
    assert last_error(capsys) == "coevol-hf refine: error: argument --limit: expected a whole number of rows, at least 1, not '0'"
    for flag, what in (("--batch-size", "rows"), ("--num-proc", "processes"), ("--ray-actors", "actors")):
        with pytest.raises(SystemExit):
            refine(empty, tmp_path / "out", server, flag, "0")
        assert last_error(capsys) == f"coevol-hf refine: error: argument {flag}: expected a whole number of {what}, at least 1, not '0'"
    assert server.calls == [] and not (tmp_path / "out").exists()


def test_a_malformed_file_is_one_error_line_before_any_call(server: TGIServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "outp\n')
    assert refine(broken, tmp_path / "out", server) == 1  # returned: nothing raised out of main
    assert last_error(capsys).startswith(f"coevol-hf refine: {broken} cannot be read as json: JSON parse error")
    assert server.calls == [] and not (tmp_path / "out").exists()


def test_split_names_a_hub_datasets_split_only(server: TGIServer, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert refine(source, tmp_path / "out", server, "--split", "validation") == 1
    assert last_error(capsys) == (
        f"coevol-hf refine: --split names a split of a Hub dataset; {source} is a local file, read whole: drop --split (--limit N takes its first N rows)."
    )
    assert server.calls == []
    # A slice or a sum of a Hub dataset's splits is written and pushed under a name the Hub accepts.
    assert [_split_name(spec) for spec in ("train", "train[:100]", "test[10%:]", "train+test", "dev.v2")] == ["train", "train", "test", "train", "dev.v2"]


def test_local_and_endpoint_exclude_each_other(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["refine", str(source), "-o", str(tmp_path / "out"), "--local", "--endpoint", "http://127.0.0.1:9"]) == 1
    assert last_error(capsys) == "coevol-hf refine: --local starts its own server: drop --endpoint, or --local."


def test_readme_option_table_is_the_generated_one() -> None:
    assert markdown_table(CoEvolOptions) in README.read_text(encoding="utf-8")


# -- the examples, on the samples shipped with them ----------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "script, arguments, printed",
    [
        ("refine_alpaca.py", ["data/self_instruct_sample.jsonl", "{out}"], "6 of 6 responses improved; errors: 0"),
        ("refine_sharegpt.py", ["data/mt_bench_sample.json", "{out}.jsonl", "--endpoint", "{url}"], "[2, 2] None"),
        ("remote_tgi.py", ["{url}", "data/self_instruct_sample.jsonl", "{out}"], "served model: test-org/test-model@0123abcd"),
    ],
)
def test_examples_run_on_their_samples(script: str, arguments: list[str], printed: str, server: TGIServer, tmp_path: Path) -> None:
    argv = [a.format(out=tmp_path / "refined", url=server.url) for a in arguments]
    env = {**os.environ, "COEVOL_ENDPOINT": server.url, "COEVOL_TOKEN": "example-token"}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *argv], cwd=EXAMPLES, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert printed in result.stdout and server.calls


def test_the_inference_endpoint_example_names_the_weights(tmp_path: Path) -> None:
    # An Inference Endpoint's TGI: the model mounted at /repository, no revision.
    with TGIServer(model_id="/repository", model_sha=None) as endpoint:
        env = {**os.environ, "COEVOL_TOKEN": "example-token"}
        argv = [endpoint.url, "data/self_instruct_sample.jsonl", str(tmp_path / "refined"), "meta-llama/Llama-3.1-8B-Instruct@main"]
        result = subprocess.run([sys.executable, str(EXAMPLES / "remote_tgi.py"), *argv], cwd=EXAMPLES, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "served model: /repository@meta-llama/Llama-3.1-8B-Instruct@main" in result.stdout and endpoint.calls


def test_demo_refines_its_sample_into_a_folder_it_owns(server: TGIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The demo's wiring, with the TGI test server standing in for the local model."""
    import coevol_hf.local

    class StandIn:
        url = server.url

        def __enter__(self) -> StandIn:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(coevol_hf.local, "LocalServer", StandIn)
    output = tmp_path / "coevol-demo"
    assert main(["demo", "-o", str(output)]) == 0
    out = capsys.readouterr().out
    # It ends with one row's story: the accepted edit (the test server's judge prefers the longer answer).
    assert f"report: {output / 'report.html'}" in out and "kept: the edit won in both orders" in out
    assert out.rstrip().endswith("LLM calls for this row: 16")
    config = json.loads((output / "coevol_config.json").read_text())
    assert config["source"] == "self_instruct_sample.jsonl" and config["license"] == "apache-2.0"
    assert config["command"] == "coevol-hf refine self_instruct_sample.jsonl --output coevol-demo --judge-mode compare --max-rounds 2 --max-new-tokens 160 --jsonl --license apache-2.0"
    assert main(["demo", "-o", str(output)]) == 0  # its own folder: written again
    (output / "mine.txt").write_text("mine")
    assert main(["demo", "-o", str(output)]) == 1


def test_report_command_writes_the_page(server: TGIServer, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "out"
    assert refine(source, output, server) == 0
    assert f"report: {output / 'report.html'}" in capsys.readouterr().out
    (output / "report.html").unlink()
    assert main(["report", str(output)]) == 0
    assert f"report: {output / 'report.html'}" in capsys.readouterr().out
    assert 'id="coevol-rows"' in (output / "report.html").read_text()
