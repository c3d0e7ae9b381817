"""CoEvol end to end through `ds.map`, against the scripted TGI server over real HTTP."""

from __future__ import annotations

import asyncio
import collections
import json
import os

import pytest
from conftest import alpaca_rows, mt_bench_conversations
from datasets import Dataset
from tgi_server import PERSONA_ROLES, Call, Error, TGIServer, default_script

from coevol_hf import CoEvol, ConfigError, EndpointError, InputFormatError, Trace, coevol_refine
from coevol_hf.stats import compute_stats, format_stats


def judge_with(verdict):
    """The default script, with the judge's answer replaced."""

    def script(call: Call):
        return verdict(call) if call.role == "judge" else default_script(call)

    return script


def refine(server: TGIServer, rows: list[dict], **options) -> Dataset:
    return Dataset.from_list(rows).map(CoEvol(endpoint=server.url, **options), batched=True)


def only_trace(row: dict) -> dict:
    return json.loads(row["coevol_trace"])


def test_accepted_edits_chain_until_max_rounds(server: TGIServer) -> None:
    rows = alpaca_rows(2)
    out = refine(server, rows, max_rounds=2)

    for original, row in zip(rows, out):
        assert row["output"] == original["output"] + " [edited] [edited]"
        assert row["coevol_original"] == [original["output"]]
        assert row["coevol_rounds"] == [2]
        assert row["coevol_error"] is None
        assert row["coevol_model"] == "test-org/test-model@0123abcd"
        rounds = only_trace(row)["turns"][0]["rounds"]
        assert [r["accepted"] for r in rounds] == [True, True]
        assert rounds[1]["debate"]["advocate_review"].endswith(original["output"] + " [edited]")
        assert rounds[0]["scores"] == {"old": 0.0, "new": 2.0}
        assert rounds[0]["suggestions"] == ["Add an example.", "Be more precise.", "Mention the main caveat."]
    assert len(server.calls) == 2 * 2 * 8


def test_duplicate_rows_in_one_batch_pay_for_their_calls_once(server: TGIServer) -> None:
    # Real instruction data repeats rows; at temperature 0 their calls are the same requests.
    first, second = alpaca_rows(2)
    transform = CoEvol(endpoint=server.url, max_rounds=1)
    out = Dataset.from_list([first, second, first]).map(transform, batched=True)
    assert out[0]["output"] == out[2]["output"] == first["output"] + " [edited]"
    assert out[0]["coevol_trace"] == out[2]["coevol_trace"] and out[1]["output"] == second["output"] + " [edited]"
    assert len(server.calls) == 2 * 8 and transform.cache_hits == 8


def test_rejected_edit_keeps_the_original(server: TGIServer) -> None:
    server.script = judge_with(lambda call: "B" if call.answers()[0].endswith("[edited]") else "A")
    rows = alpaca_rows(2)
    out = refine(server, rows)

    assert out["output"] == [r["output"] for r in rows]
    assert out["coevol_rounds"] == [[0], [0]]
    rounds = only_trace(out[0])["turns"][0]["rounds"]
    assert len(rounds) == 1 and rounds[0]["stop"] == "not_better"
    assert rounds[0]["scores"] == {"old": 2.0, "new": 0.0}
    assert len(server.calls) == 2 * 8


def test_tie_is_not_an_improvement(server: TGIServer) -> None:
    server.script = judge_with(lambda call: "Tie. Both answers are equally good.")
    out = refine(server, alpaca_rows(1))

    rounds = only_trace(out[0])["turns"][0]["rounds"]
    assert rounds[0]["scores"] == {"old": 1.0, "new": 1.0}
    assert rounds[0]["accepted"] is False and out[0]["coevol_rounds"] == [0]


def test_position_bias_cancels_out(server: TGIServer) -> None:
    server.script = judge_with(lambda call: "A")  # always the first answer shown
    out = refine(server, alpaca_rows(1))

    rounds = only_trace(out[0])["turns"][0]["rounds"]
    assert rounds[0]["verdicts"]["old_first"]["scores"] == {"old": 1.0, "new": 0.0}
    assert rounds[0]["verdicts"]["new_first"]["scores"] == {"old": 0.0, "new": 1.0}
    assert out[0]["coevol_rounds"] == [0]


def test_score_mode_averages_both_orders(server: TGIServer) -> None:
    def scores(call: Call) -> str:
        a, b = call.answers()
        return "6 9\nB is better." if b.endswith("[edited]") else "9 7\nA is better."

    server.script = judge_with(scores)
    out = refine(server, alpaca_rows(1), judge_mode="score", max_rounds=1)

    round_ = only_trace(out[0])["turns"][0]["rounds"][0]
    assert round_["scores"] == {"old": 6.5, "new": 9.0}  # old: (6 + 7) / 2, new: (9 + 9) / 2
    assert round_["accepted"] is True and out[0]["coevol_rounds"] == [1]
    judge_tasks = [c.task for c in server.calls if c.role == "judge"]
    assert all("Rate each answer from 1 to 10" in t for t in judge_tasks)


def test_unreadable_verdicts_stop_refinement(server: TGIServer) -> None:
    server.script = judge_with(lambda call: "Both have merits, hard to say which one.")
    rows = alpaca_rows(1)
    out = refine(server, rows, max_rounds=3)

    round_ = only_trace(out[0])["turns"][0]["rounds"]
    assert len(round_) == 1 and round_[0]["stop"] == "unreadable_verdicts" and round_[0]["scores"] is None
    assert out[0]["output"] == rows[0]["output"]


def test_one_readable_verdict_decides(server: TGIServer) -> None:
    server.script = judge_with(lambda call: "B" if call.answers()[1].endswith("[edited]") else "I refuse to judge.")
    out = refine(server, alpaca_rows(1), max_rounds=1)

    round_ = only_trace(out[0])["turns"][0]["rounds"][0]
    assert round_["verdicts"]["new_first"]["scores"] is None
    assert round_["scores"] == {"old": 0.0, "new": 1.0} and round_["accepted"] is True


def test_calls_of_a_round_see_the_right_context(server: TGIServer) -> None:
    row = alpaca_rows(1)[0]
    refine(server, [row], max_rounds=1)

    by_role = {}
    for call in server.calls:
        by_role.setdefault(call.role, []).append(call)
    advocate, critic = by_role["advocate"][0], by_role["critic"][0]
    assert row["instruction"] in advocate.task and row["input"] in advocate.task and row["output"] in advocate.task
    stage1 = {"advocate": default_script(advocate), "critic": default_script(critic)}

    # Stage 2: each debater keeps its own turn and is shown the other's stage-1 review.
    for me, other in (("advocate", "critic"), ("critic", "advocate")):
        rebuttal = by_role[f"{me}_rebuttal"][0]
        assert rebuttal.messages[:2] == (advocate if me == "advocate" else critic).messages
        assert rebuttal.messages[2] == {"role": "assistant", "content": stage1[me]}
        assert stage1[other] in rebuttal.messages[3]["content"]

    advisor = by_role["advisor"][0].task
    for text in (*stage1.values(), default_script(by_role["advocate_rebuttal"][0]), row["output"]):
        assert text in advisor
    editor = by_role["editor"][0].task
    assert "- Add an example.\n- Be more precise.\n- Mention the main caveat." in editor
    assert "A fourth one" not in editor

    first, second = (c.answers() for c in by_role["judge"])
    edit = row["output"] + " [edited]"
    assert {first, second} == {(row["output"], edit), (edit, row["output"])}
    assert all(c.body["response_format"]["type"] == "json" for c in by_role["judge"])
    assert all("response_format" not in c.body for c in server.calls if c.role != "judge")


def test_the_calls_of_a_round_open_with_what_they_share(server: TGIServer) -> None:
    """Servers reuse the KV cache of a byte-identical prompt prefix, so what the calls of a row
    share comes first and each role's persona after it; the judge is not told which answer is old."""
    row = alpaca_rows(1)[0]
    refine(server, [row], max_rounds=1)
    opening = {call.role: call.messages[0]["content"] + "\n" + call.messages[1]["content"] for call in server.calls}
    assert len(opening) == 7  # advocate, critic, both rebuttals, advisor, editor, judge

    reviewers = os.path.commonprefix([text for role, text in opening.items() if role != "judge"])
    for text in (row["instruction"], row["input"], row["output"]):
        assert text in reviewers
    assert not any(persona in reviewers for persona in PERSONA_ROLES)

    everyone = os.path.commonprefix(list(opening.values()))
    assert row["instruction"] in everyone and row["input"] in everyone and row["output"] not in everyone
    judges = [call.messages[1]["content"] for call in server.calls if call.role == "judge"]
    assert next(p for p, role in PERSONA_ROLES.items() if role == "judge") in os.path.commonprefix(judges)
    assert not any("Answer under review" in j for j in judges)


def test_with_an_unbounded_prefix_cache_most_prompt_text_is_reused_and_the_summary_says_so() -> None:
    # The test server's cache keeps every prefix it has seen, counted in characters, and its
    # scripted answers are short: a check of the layout and the accounting, not of a real
    # server (benchmarks/prefix_cache.py measures llama.cpp: about a third).
    rows = alpaca_rows(4)
    with TGIServer(prefix_cache=True) as server:
        out = refine(server, rows, max_rounds=2)
    usage = [only_trace(row)["usage"] for row in out]
    prompt, cached = sum(u["prompt_tokens"] for u in usage), sum(u["cached_tokens"] for u in usage)
    assert cached >= 0.5 * prompt, f"{cached} of {prompt} prompt tokens from the cache"
    summary = format_stats(compute_stats(out))
    assert f"tokens: {prompt} prompt ({cached / prompt:.0%} from the server's prefix cache)" in summary


def test_stages_run_in_the_declared_order(server: TGIServer) -> None:
    refine(server, alpaca_rows(1), max_rounds=1)
    roles = server.roles()
    assert sorted(roles[:2]) == ["advocate", "critic"]
    assert sorted(roles[2:4]) == ["advocate_rebuttal", "critic_rebuttal"]
    assert roles[4:] == ["advisor", "editor", "judge", "judge"]


def test_sampling_options_reach_the_server(server: TGIServer) -> None:
    refine(server, alpaca_rows(1), max_rounds=1, temperature=0.7, max_new_tokens=321, seed=42)
    body = server.calls[0].body
    assert body["model"] == "tgi"  # TGI would take any other value as a LoRA adapter id
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.7, 321, 42)


def test_generate_route_renders_the_chat_template() -> None:
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    with TGIServer() as server:
        out = refine(server, alpaca_rows(1), max_rounds=1, api="generate", chat_template=template)
        assert {c.path for c in server.calls} == {"/generate"}
        first = server.calls[0].body
        assert first["inputs"].startswith("<|system|>") and first["inputs"].endswith("<|assistant|>")
        assert first["parameters"]["do_sample"] is False and "temperature" not in first["parameters"]
        judge = next(c for c in server.calls if c.role == "judge")
        assert judge.body["parameters"]["grammar"]["type"] == "json"
        assert out[0]["coevol_rounds"] == [1]


def test_a_chat_template_that_refuses_a_system_message_stops_the_run_before_any_call() -> None:
    # Gemma's template, for one: every coevol-hf call opens with a system message.
    template = "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    with TGIServer() as server:
        with pytest.raises(ConfigError, match="chat_template cannot render the conversations coevol-hf sends .*System role not supported"):
            refine(server, alpaca_rows(2), max_rounds=1, api="generate", chat_template=template)
        assert server.calls == []


def test_messages_api_server_gets_openai_structured_output() -> None:
    with TGIServer(kind="vllm") as server:
        out = refine(server, alpaca_rows(1), max_rounds=1)
        judge = next(c for c in server.calls if c.role == "judge")
        assert judge.body["model"] == "test-org/test-model"
        assert judge.body["response_format"]["type"] == "json_schema"
        assert judge.body["response_format"]["json_schema"]["schema"]["required"] == ["better", "reason"]
        assert out[0]["coevol_model"] == "test-org/test-model"


def test_multi_turn_rows_refine_every_assistant_turn_in_order(server: TGIServer) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a prime."},
                {"role": "assistant", "content": "Seven."},
                {"role": "user", "content": "And another?"},
                {"role": "assistant", "content": "Eleven."},
            ]
        }
    ]
    out = refine(server, rows, max_rounds=1)

    assert [m["content"] for m in out[0]["messages"]] == ["Be brief.", "Name a prime.", "Seven. [edited]", "And another?", "Eleven. [edited]"]
    assert out[0]["coevol_original"] == ["Seven.", "Eleven."]
    assert out[0]["coevol_rounds"] == [1, 1]
    second_turn = [c for c in server.calls if c.role == "advocate"][1].task
    assert "System: Be brief." in second_turn and "Assistant: Seven. [edited]" in second_turn
    assert "Instruction:\nAnd another?" in second_turn


def test_bad_rows_are_recorded_and_others_refined(server: TGIServer) -> None:
    rows = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"conversations": [{"from": "gpt", "value": "I speak first"}, {"from": "human", "value": "?"}]},
        {"conversations": [{"from": "human", "value": "Only a question"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": None}]},
        {"conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Goodbye!"}]},
    ]
    out = refine(server, rows, max_rounds=1)

    assert len(out) == 5
    assert out[0]["conversations"][1]["value"] == "Hello! [edited]"
    assert out[4]["conversations"][1]["value"] == "Goodbye! [edited]"
    assert out[1]["coevol_error"].startswith("input: ") and "must follow a user turn" in out[1]["coevol_error"]
    assert "no assistant turn" in out[2]["coevol_error"]
    assert "must be a string" in out[3]["coevol_error"]
    for i in (1, 2, 3):
        assert out[i]["conversations"] == rows[i]["conversations"]
        assert out[i]["coevol_rounds"] == [] and out[i]["coevol_trace"] is None
    assert [out[i]["coevol_error"] for i in (0, 4)] == [None, None]


def test_server_error_fails_only_its_row(server: TGIServer) -> None:
    def script(call: Call):
        if "TOO LONG" in call.task:
            return Error(422, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 1000 `max_new_tokens`", "validation")
        return default_script(call)

    server.script = script
    rows = alpaca_rows(3)
    rows[1]["instruction"] = "TOO LONG " + rows[1]["instruction"]
    out = refine(server, rows, max_rounds=1)

    assert out[1]["coevol_error"].startswith("validation: HTTP 422: Input validation error: `inputs` tokens")
    assert out[1]["output"] == rows[1]["output"] and out[1]["coevol_original"] == [rows[1]["output"]]
    assert out[0]["coevol_error"] is None and out[2]["coevol_error"] is None
    assert out["instruction"] == [r["instruction"] for r in rows]


def test_a_call_failing_in_a_later_round_keeps_the_edits_already_accepted(server: TGIServer) -> None:
    # The judge's prompt holds both answers, so it is the call most likely to outgrow the
    # server's input limit, after earlier rounds already made the answer longer.
    too_long = Error(422, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 3100 `inputs` tokens and 1000 `max_new_tokens`", "validation")

    def script(call: Call):
        if call.role == "judge" and any(answer.endswith("[edited] [edited]") for answer in call.answers()):
            return too_long
        return default_script(call)

    server.script = script
    rows = alpaca_rows(2)
    out = refine(server, rows, max_rounds=3)

    for row, original in zip(out, rows):
        assert row["coevol_error"].startswith("validation: HTTP 422: Input validation error")
        assert row["output"] == original["output"] + " [edited]"  # round 1's edit, judged better, stands
        assert row["coevol_original"] == [original["output"]] and row["coevol_rounds"] == [1]
        trace = Trace.from_json(row["coevol_trace"])
        (turn,) = trace.turns
        assert [r.accepted for r in turn.rounds] == [True] and turn.final == row["output"]
        assert trace.usage.calls == 8 + 6  # round 2 paid for its debate, advice and edit
    # The summary counts what these rows did: improved, with their calls, and their errors.
    stats = compute_stats(out)
    assert (stats.rows_improved, stats.llm_calls, stats.errors_by_kind) == (2, 2 * 14, {"validation": 2})
    assert stats.rounds_histogram == {1: 2} and stats.judged_rounds == 2
    # A failure before any round is done leaves the row as it was, without a trace.
    server.script = lambda call: too_long
    (failed,) = refine(server, rows[:1], max_rounds=3, seed=1)
    assert failed["output"] == rows[0]["output"] and failed["coevol_trace"] is None and failed["coevol_rounds"] == []


def test_a_conversation_keeps_the_turns_refined_before_a_call_failed(server: TGIServer) -> None:
    row = mt_bench_conversations()[0]
    second_question = row["conversations"][2]["value"]

    def script(call: Call):
        if second_question in call.task and call.role == "advisor":
            return Error(422, "Input validation error: `inputs` must have less than 4096 tokens", "validation")
        return default_script(call)

    server.script = script
    (out,) = refine(server, [row], max_rounds=1)
    assert out["coevol_error"].startswith("validation:")
    turns = out["conversations"]
    assert turns[1]["value"] == row["conversations"][1]["value"] + " [edited]"
    assert turns[3]["value"] == row["conversations"][3]["value"]
    assert out["coevol_rounds"] == [1] and len(Trace.from_json(out["coevol_trace"]).turns) == 1


def test_non_json_error_body_is_recorded_after_bounded_retries(server: TGIServer) -> None:
    server.script = lambda call: Error(502, "", "", body="<html><body>502 Bad Gateway</body></html>")
    out = refine(server, alpaca_rows(1), max_retries=2, retry_backoff=0.01)
    assert out[0]["coevol_error"] == "server: HTTP 502: <html><body>502 Bad Gateway</body></html>"
    # A call is tried three times (one try, two retries); then the row stops and its other call is cancelled.
    tries = collections.Counter(c.key for c in server.calls)
    assert max(tries.values()) == 3 and len(tries) == 2 and sum(tries.values()) <= 6


def test_first_batch_of_errors_does_not_fix_column_types(server: TGIServer) -> None:
    rows = [{"instruction": "x", "output": ""}] * 2 + alpaca_rows(2)
    out = Dataset.from_list(rows).map(CoEvol(endpoint=server.url, max_rounds=1), batched=True, batch_size=2)
    assert out["coevol_error"][:2] == ["input: column 'output' must be a non-empty string, got str ''"] * 2
    assert out["coevol_error"][2:] == [None, None]
    assert out.features["coevol_rounds"].feature.dtype == "int32"


def test_no_usable_columns_fails_before_any_request(server: TGIServer) -> None:
    ds = Dataset.from_list([{"prompt": "a", "completion": "b"}])
    with pytest.raises(InputFormatError, match=r"Accepted: Alpaca .* ShareGPT .* messages"):
        ds.map(CoEvol(endpoint=server.url), batched=True)
    # The fingerprint names the served model: one free GET /info, and no LLM call.
    assert server.calls == [] and server.metadata_requests == ["/info"]


def test_pinned_model_needs_no_request_to_fail_on_bad_columns(server: TGIServer) -> None:
    ds = Dataset.from_list([{"prompt": "a", "completion": "b"}])
    with pytest.raises(InputFormatError):
        ds.map(CoEvol(endpoint=server.url, model="test-org/test-model"), batched=True)
    assert server.calls == [] and server.metadata_requests == []


def test_column_mapping_reads_other_names(server: TGIServer) -> None:
    ds = Dataset.from_list([{"prompt": "Say hi", "completion": "hi"}])
    out = ds.map(CoEvol(endpoint=server.url, max_rounds=1, columns={"instruction": "prompt", "output": "completion"}), batched=True)
    assert out[0]["completion"] == "hi [edited]" and out[0]["prompt"] == "Say hi"


def test_unreachable_endpoint_fails_before_rows() -> None:
    with TGIServer() as server:
        url = server.url
    with pytest.raises(EndpointError, match="Cannot reach http://127.0.0.1:.*Start the server"):
        Dataset.from_list(alpaca_rows(1)).map(CoEvol(endpoint=url), batched=True)


def test_not_an_llm_server_fails_before_rows(server: TGIServer) -> None:
    with pytest.raises(EndpointError, match="does not look like an LLM server"):
        Dataset.from_list(alpaca_rows(1)).map(CoEvol(endpoint=server.url + "/not-an-llm"), batched=True)
    assert server.calls == []


def test_model_pin_is_checked_against_the_server(server: TGIServer) -> None:
    with pytest.raises(ConfigError, match="serves 'test-org/test-model@0123abcd'"):
        refine(server, alpaca_rows(1), model="other/model")


def test_coevol_refine_reads_the_endpoint_from_the_environment(server: TGIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COEVOL_ENDPOINT", server.url)
    out = Dataset.from_list(alpaca_rows(1)).map(coevol_refine, batched=True, fn_kwargs={"max_rounds": 1})
    assert out[0]["coevol_rounds"] == [1]
    assert len(server.calls) == 8


def test_fn_kwargs_format_overrides_the_operators_own(server: TGIServer) -> None:
    refine = CoEvol(endpoint=server.url, max_rounds=1, format="sharegpt", columns={"output": "completion"})
    rows = [{"instruction": r["instruction"], "input": r["input"], "completion": r["output"]} for r in alpaca_rows(1)]
    with pytest.raises(InputFormatError, match="format='sharegpt' needs column"):
        Dataset.from_list(rows).map(refine, batched=True)
    out = Dataset.from_list(rows).map(refine, batched=True, fn_kwargs={"format": "auto"})
    assert out[0]["coevol_error"] is None and out[0]["completion"] == rows[0]["completion"] + " [edited]"
    assert json.loads(out[0]["coevol_trace"])["run"]["options"]["format"] == "auto"


def test_hf_token_is_not_sent_to_a_foreign_server(server: TGIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_do_not_leak")
    refine(server, alpaca_rows(1), max_rounds=1)
    assert server.calls and all("Authorization" not in c.headers for c in server.calls)


def test_explicit_token_is_sent(server: TGIServer) -> None:
    refine(server, alpaca_rows(1), max_rounds=1, token="tgi-api-key")
    assert {c.headers.get("Authorization") for c in server.calls} == {"Bearer tgi-api-key"}


def test_works_inside_a_running_event_loop(server: TGIServer) -> None:
    """As in a notebook, whose thread already runs an event loop."""

    async def notebook_cell():
        return Dataset.from_list(alpaca_rows(2)).map(CoEvol(endpoint=server.url, max_rounds=1), batched=True)

    out = asyncio.run(notebook_cell())
    assert out["coevol_rounds"] == [[1], [1]]


def test_rows_of_a_batch_are_refined_concurrently() -> None:
    with TGIServer(delay=0.05) as server:
        refine(server, alpaca_rows(16), max_rounds=1, max_concurrency=64)
    # Each row has two independent calls per debate stage: 16 rows overlap only if rows run together.
    assert server.peak_in_flight > 16, server.peak_in_flight


def test_concurrency_bound_is_respected() -> None:
    with TGIServer(delay=0.02) as server:
        refine(server, alpaca_rows(12), max_rounds=1, max_concurrency=3)
    assert server.peak_in_flight == 3


def test_each_turn_sees_context_turns_earlier_exchanges(server: TGIServer) -> None:
    exchanges = [(f"Question {n}?", f"Answer {n}.") for n in range(1, 5)]
    row = {"messages": [m for q, a in exchanges for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]}
    for context_turns, seen_by_the_last in ((2, ["Question 2?", "Question 3?"]), (0, [])):
        server.calls.clear()
        refine(server, [row], max_rounds=1, context_turns=context_turns)
        last = [call for call in server.calls if call.role == "editor" and "Instruction:\nQuestion 4?" in call.task]
        assert len(last) == 1
        assert [q for q, _ in exchanges if f"User: {q}" in last[0].task] == seen_by_the_last, context_turns


def test_one_operator_mapped_with_different_fn_kwargs_runs_each(server: TGIServer) -> None:
    refiner = CoEvol(endpoint=server.url)
    rows = alpaca_rows(1)
    # The judge prefers the edit, so every round is accepted and max_rounds decides the rounds run.
    one = Dataset.from_list(rows).map(refiner, batched=True, fn_kwargs={"max_rounds": 1})
    two = Dataset.from_list(rows).map(refiner, batched=True, fn_kwargs={"max_rounds": 2})
    assert one["coevol_rounds"] == [[1]] and two["coevol_rounds"] == [[2]]


def test_a_proxy_in_the_environment_is_never_used_for_loopback_nor_netrc_read(server: TGIServer, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    out = refine(server, alpaca_rows(1), max_rounds=1)
    assert out["coevol_error"] == [None]
    assert all("authorization" not in {k.lower() for k in call.headers} for call in server.calls)
