"""The paper's one-pass pipelines and the standalone pairwise judge, through `ds.map` over HTTP."""

from __future__ import annotations

import json

import pytest
from conftest import alpaca_rows, mt_bench_conversations
from datasets import Dataset
from datasets.fingerprint import Hasher
from tgi_server import Call, TGIServer, default_script, prefer_longer

from coevol_hf import CoEvol, ConfigError, PairwiseJudge

NEW_ANSWER = "A fresh answer written from the instruction alone."


def script(call: Call) -> str:
    """The default script; the from-scratch editor (no answer to revise) writes NEW_ANSWER."""
    if call.role == "editor" and "Answer under review:" not in call.task:
        return NEW_ANSWER
    return default_script(call)


@pytest.fixture
def scripted(server: TGIServer) -> TGIServer:
    server.script = script
    return server


def run(server: TGIServer, rows: list[dict], pipeline: str) -> Dataset:
    return Dataset.from_list(rows).map(CoEvol(endpoint=server.url, pipeline=pipeline), batched=True)


def test_edit_only_writes_from_the_instruction(scripted: TGIServer) -> None:
    rows = alpaca_rows(2)
    out = run(scripted, rows, "edit")
    assert scripted.roles() == ["editor", "editor"]
    for call, row in zip(scripted.calls, rows):
        assert row["instruction"] in call.task and row["output"] not in call.task
    assert out["output"] == [NEW_ANSWER, NEW_ANSWER]
    assert out["coevol_original"] == [[r["output"]] for r in rows] and out["coevol_rounds"] == [[1], [1]]
    trace = json.loads(out[0]["coevol_trace"])
    assert trace["pipeline"] == "edit" and trace["turns"][0]["rounds"][0]["verdicts"] is None


def test_blind_advisor_sees_only_the_instruction(scripted: TGIServer) -> None:
    row = alpaca_rows(1)[0]
    out = run(scripted, [row], "advise_edit_blind")
    advisor, editor = scripted.calls
    assert (advisor.role, editor.role) == ("advisor", "editor")
    assert row["instruction"] in advisor.task and row["output"] not in advisor.task
    assert editor.response_under_review() == row["output"] and "- Add an example." in editor.task
    assert out[0]["output"] == row["output"] + " [edited]"


def test_advisor_with_the_response_and_no_debate(scripted: TGIServer) -> None:
    row = alpaca_rows(1)[0]
    out = run(scripted, [row], "advise_edit")
    advisor, editor = scripted.calls
    assert (advisor.role, editor.role) == ("advisor", "editor")
    assert advisor.response_under_review() == row["output"] and "Review in favour" not in advisor.task
    assert "- Be more precise." in editor.task and "- A fourth one to drop." not in editor.task
    assert out[0]["output"] == row["output"] + " [edited]"


def test_debate_advise_edit_is_one_pass_without_judge(scripted: TGIServer) -> None:
    row = alpaca_rows(1)[0]
    out = run(scripted, [row], "debate_advise_edit")
    roles = scripted.roles()
    assert sorted(roles[:2]) == ["advocate", "critic"] and sorted(roles[2:4]) == ["advocate_rebuttal", "critic_rebuttal"]
    assert roles[4:] == ["advisor", "editor"]
    advisor = scripted.calls[4]
    assert "advocate review of:" in advisor.task and "critic_rebuttal review of: the other review" in advisor.task
    assert out[0]["output"] == row["output"] + " [edited]"
    assert json.loads(out[0]["coevol_trace"])["pipeline"] == "debate_advise_edit"


def test_pipelines_refine_every_turn_of_a_conversation(scripted: TGIServer) -> None:
    row = mt_bench_conversations()[0]
    out = run(scripted, [row], "advise_edit")
    assert scripted.roles() == ["advisor", "editor", "advisor", "editor"]
    assert "Earlier in the conversation:" in scripted.calls[2].task and " [edited]" in scripted.calls[2].task
    assert out[0]["coevol_rounds"] == [1, 1]


def test_unknown_pipeline_is_refused() -> None:
    with pytest.raises(ConfigError, match="pipeline must be one of .*'advise_edit_blind'"):
        CoEvol(pipeline="debate_only")


def test_pipeline_changes_the_fingerprint() -> None:
    assert Hasher.hash(CoEvol(model="m", pipeline="edit")) != Hasher.hash(CoEvol(model="m"))


# -- the pairwise judge --------------------------------------------------------------------------


def reference_pairs() -> list[dict]:
    """MT-Bench first turns with GPT-4's reference answer as `a` and its first half as `b`."""
    pairs = []
    for row in mt_bench_conversations()[:4]:
        question, reference = row["conversations"][0]["value"], row["conversations"][1]["value"]
        pairs.append({"instruction": question, "a": reference, "b": reference[: len(reference) // 2]})
    return pairs


def test_pairwise_judge_asks_both_orders_and_merges(server: TGIServer) -> None:
    server.script = lambda call: prefer_longer(call)
    pairs = reference_pairs()
    out = Dataset.from_list(pairs).map(PairwiseJudge(a="a", b="b", endpoint=server.url), batched=True)

    assert out["judge_winner"] == ["a"] * 4 and out["judge_error"] == [None] * 4
    assert out["judge_scores"] == [{"a": 2.0, "b": 0.0}] * 4
    for pair in pairs:
        orders = {c.answers() for c in server.calls if pair["instruction"] in c.task}
        assert orders == {(pair["a"], pair["b"]), (pair["b"], pair["a"])}
    verdicts = json.loads(out[0]["judge_verdicts"])
    assert verdicts["a_first"]["scores"] == {"old": 1.0, "new": 0.0} and verdicts["model"] == "test-org/test-model@0123abcd"
    assert out["a"] == [p["a"] for p in pairs]  # the data is untouched
    # How the verdicts were made: the run (as a refinement's trace records it), calls, cut-offs.
    assert verdicts["a_first"]["cut_off"] is False and verdicts["b_first"]["cut_off"] is False
    assert verdicts["usage"]["calls"] == 2 and verdicts["usage"]["prompt_tokens"] > 0
    run = verdicts["run"]
    assert run["model"] == "test-org/test-model@0123abcd" and run["options"]["a"] == "a" and run["options"]["judge_mode"] == "compare"
    assert run["implementation"].startswith("coevol-hf ") and run["prompts_sha256"]


def test_pairwise_judge_position_bias_is_a_tie(server: TGIServer) -> None:
    server.script = lambda call: "A\nThe first one."
    out = Dataset.from_list(reference_pairs()[:2]).map(PairwiseJudge(a="a", b="b", endpoint=server.url, judge_mode="compare"), batched=True)
    assert out["judge_winner"] == ["tie", "tie"]


def test_pairwise_judge_audits_a_refinement(server: TGIServer) -> None:
    rows = alpaca_rows(3)
    refined = Dataset.from_list(rows).map(CoEvol(endpoint=server.url, max_rounds=1), batched=True)
    refined = refined.map(lambda row: {"original": row["coevol_original"][0]})
    server.reset()
    audited = refined.map(PairwiseJudge(a="original", b="output", endpoint=server.url), batched=True)
    # The same judge asked the same question: the refinement's verdicts come back from the request cache.
    assert audited["judge_winner"] == ["b"] * 3 and server.calls == []
    server.script = lambda call: "8 3\nA is fuller." if len(call.answers()[0]) > len(call.answers()[1]) else "3 8\nB is fuller."
    rescored = refined.map(PairwiseJudge(a="original", b="output", endpoint=server.url, judge_mode="score"), batched=True)
    assert server.roles() == ["judge"] * 6 and all(s["b"] > s["a"] for s in rescored["judge_scores"])


def test_pairwise_judge_records_bad_rows(server: TGIServer) -> None:
    pairs = reference_pairs()[:2] + [{"instruction": "Say hi.", "a": "Hi!", "b": None}]
    out = Dataset.from_list(pairs).map(PairwiseJudge(a="a", b="b", endpoint=server.url), batched=True)
    assert out["judge_error"][2] == "input: column 'b' must be a non-empty string, got NoneType None"
    assert out["judge_winner"][2] is None and out["judge_winner"][:2] == ["a", "a"]


def test_pairwise_judge_refuses_options_it_cannot_use() -> None:
    with pytest.raises(ConfigError, match=r"does not take \['max_rounds'\]"):
        PairwiseJudge(a="x", b="y", max_rounds=2)
    with pytest.raises(ConfigError, match="same column"):
        PairwiseJudge(a="x", b="x")


def test_pairwise_judge_fingerprint_names_its_columns() -> None:
    first, again = PairwiseJudge(a="x", b="y", model="m"), PairwiseJudge(a="x", b="y", model="m")
    assert Hasher.hash(first) == Hasher.hash(again) != Hasher.hash(PairwiseJudge(a="y", b="x", model="m"))
