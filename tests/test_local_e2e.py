"""End to end on a real LLM: llama.cpp serving SmolLM2-135M-Instruct on this machine."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import alpaca_rows, mt_bench_conversations
from datasets import Dataset, load_dataset

from coevol_hf import CoEvol, ConfigError, PairwiseJudge
from coevol_hf.cli import main
from coevol_hf.local import MODEL_ID, LocalServer

pytest.importorskip("xllamacpp")

# Short generations keep the suite fast on 2 CPU cores; the path is the same as with 1000 tokens.
FAST = {"max_rounds": 1, "max_new_tokens": 48}


@pytest.fixture(scope="module")
def local_url():
    with LocalServer(parallel=4) as server:
        yield server.url


def test_refine_alpaca_rows_through_map(local_url: str) -> None:
    rows = alpaca_rows(3)
    out = Dataset.from_list(rows).map(CoEvol(endpoint=local_url, **FAST), batched=True)

    assert len(out) == 3 and out["instruction"] == [r["instruction"] for r in rows]
    assert out["coevol_error"] == [None, None, None]
    assert out["coevol_model"] == [MODEL_ID] * 3
    for row, original in zip(out, rows):
        assert row["coevol_original"] == [original["output"]]
        trace = json.loads(row["coevol_trace"])
        (round_,) = trace["turns"][0]["rounds"]
        assert all(text.strip() for text in round_["debate"].values())
        assert trace["usage"]["calls"] in (5, 6, 8)  # stops early without suggestions or change
        if round_["verdicts"]:
            # With the schema enforced by llama.cpp, the small model's verdicts are JSON.
            assert all(json.loads(v["text"])["better"] in ("A", "B", "tie") for v in round_["verdicts"].values())
        expected = round_["edit"] if round_["accepted"] else original["output"]
        assert row["output"] == expected


def test_the_real_judge_gives_readable_verdicts_in_both_orders(local_url: str) -> None:
    # The refinement tests above rarely reach the judge (48 new tokens cut most edits off):
    # the structured judge is checked here, on each answer against its own first half.
    rows = [{**r, "half": " ".join(r["output"].split()[: max(1, len(r["output"].split()) // 2)])} for r in alpaca_rows(3)]
    out = Dataset.from_list(rows).map(PairwiseJudge(a="output", b="half", endpoint=local_url, max_new_tokens=160), batched=True)
    assert out["judge_error"] == [None] * 3
    for row in out:
        verdicts = json.loads(row["judge_verdicts"])
        for order in ("a_first", "b_first"):
            # llama.cpp enforces the JSON schema, so even the 135M model's verdicts can be read.
            assert json.loads(verdicts[order]["text"])["better"] in ("A", "B", "tie")
            assert verdicts[order]["scores"] is not None
        assert row["judge_winner"] in ("a", "b", "tie")


def test_refine_multi_turn_conversation(local_url: str) -> None:
    row = mt_bench_conversations()[0]
    out = Dataset.from_list([row]).map(CoEvol(endpoint=local_url, **FAST), batched=True)
    assert out[0]["coevol_error"] is None
    assert len(out[0]["coevol_rounds"]) == 2
    assert [t["from"] for t in out[0]["conversations"]] == ["human", "gpt", "human", "gpt"]


def test_cli_refine_writes_data_and_card(local_url: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "alpaca.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(2)))
    output = tmp_path / "out"
    code = main(["refine", str(source), "-o", str(output), "--endpoint", local_url, "--max-rounds", "1", "--max-new-tokens", "48", "--jsonl", "--token", "sekret"])
    assert code == 0

    printed = capsys.readouterr().out
    assert "rows: 2, improved:" in printed and "LLM calls:" in printed and "wall time:" in printed
    data = load_dataset("parquet", data_files=str(output / "data.parquet"), split="train")
    assert len(data) == 2 and {"coevol_trace", "coevol_error", "coevol_model"} <= set(data.column_names)
    assert len((output / "data.jsonl").read_text().splitlines()) == 2
    card = (output / "README.md").read_text()
    assert card.startswith("---\n") and "- coevol" in card and "size_categories:\n- n<1K" in card
    assert f"Model: `{MODEL_ID}`" in card and "| `max_rounds` | `1` |" in card and "| `max_new_tokens` | `48` |" in card
    assert "| rows | 2 |" in card and "| rows improved |" in card
    config = json.loads((output / "coevol_config.json").read_text())
    assert config["model"] == MODEL_ID and config["options"]["max_new_tokens"] == 48
    assert "sekret" not in card and "sekret" not in json.dumps(config)


def test_local_server_refuses_non_loopback() -> None:
    with pytest.raises(ConfigError, match="only loopback"):
        LocalServer(host="0.0.0.0")


def test_the_local_server_grants_no_web_page_its_answers(local_url: str) -> None:
    # Any page open in the browser could otherwise call the model on 127.0.0.1 and read the reply.
    request = urllib.request.Request(f"{local_url}/v1/models", headers={"Origin": "http://page.example"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.headers.get("Access-Control-Allow-Origin", "") in ("", None)


def test_a_port_in_use_is_one_error_line(capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--parallel", "1"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"coevol-hf serve: The local server could not start on 127.0.0.1:{port} (is the port in use?): "
        "Failed to init server, please check the input params."
    )
    with pytest.raises(ConfigError, match=r"port must be from 0 \(any free port\) to 65535, not 70000"):
        LocalServer(port=70000)
    with pytest.raises(ConfigError, match=r"parallel must be an integer >= 1, not 0"):
        LocalServer(parallel=0)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "data.txt"
    source.write_text("hello")
    assert main(["refine", str(source), "-o", str(tmp_path / "out"), "--endpoint", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unsupported file type '.txt'" in err

    source = tmp_path / "data.jsonl"
    source.write_text(json.dumps(alpaca_rows(1)[0]) + "\n")
    assert main(["refine", str(source), "-o", str(tmp_path / "out"), "--endpoint", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("coevol-hf refine: Cannot reach http://127.0.0.1:9")


def test_cli_serve_prints_url_and_stops_on_ctrl_c() -> None:
    command = [sys.executable, "-m", "coevol_hf.cli", "serve", "--port", "0", "--parallel", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, f"no URL in {line!r}"
        with urllib.request.urlopen(f"{url.group()}/v1/models", timeout=30) as answer:
            models = json.load(answer)
        assert [m["id"] for m in models["data"]] == [MODEL_ID]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url.group()}/v1/models", timeout=5)
