"""Shared fixtures: an isolated HF cache, the scripted TGI server, and sample rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"  # real public samples, sources in data/README.md


@pytest.fixture(autouse=True)
def isolated_hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HF cache and no saved token; datasets never goes online."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("COEVOL_ENDPOINT", raising=False)
    # Subprocesses (scripts, examples, the CLI) import the coevol_hf under test, not whichever one
    # the virtual environment has installed (another checkout sharing the venv).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(DATA.parents[1]), os.environ.get("PYTHONPATH")])))
    return home


@pytest.fixture
def server():
    from tgi_server import TGIServer

    with TGIServer() as running:
        yield running


def alpaca_rows(n: int = 3) -> list[dict]:
    """Real Self-Instruct seed tasks, flattened to Alpaca columns."""
    rows = []
    with open(DATA / "self_instruct_seed_tasks.jsonl") as f:
        for line in f:
            task = json.loads(line)
            instance = task["instances"][0]
            rows.append({"instruction": task["instruction"], "input": instance["input"], "output": instance["output"]})
            if len(rows) == n:
                break
    return rows


def mt_bench_conversations() -> list[dict]:
    """The 30 MT-Bench questions that have GPT-4 reference answers, as two-turn ShareGPT rows."""
    with open(DATA / "mt_bench_questions.jsonl") as f:
        questions = {q["question_id"]: q for q in map(json.loads, f)}
    rows = []
    with open(DATA / "mt_bench_reference_answers_gpt4.jsonl") as f:
        for answer in map(json.loads, f):
            question = questions[answer["question_id"]]
            turns = []
            for user, assistant in zip(question["turns"], answer["choices"][0]["turns"]):
                turns += [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]
            rows.append({"id": str(answer["question_id"]), "conversations": turns})
    return rows


def sharegpt_rows() -> list[dict]:
    with open(DATA / "fastchat_dummy_conversation.json") as f:
        return json.load(f)

