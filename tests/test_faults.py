"""Long runs against unreliable servers: retries, back-pressure, several endpoints, the request cache.

Faults are injected by the scripted TGI server over real HTTP: 429 with and without
Retry-After, 500, 503, 424, garbage bodies, errors inside 200 answers, hangs, dying servers.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from conftest import alpaca_rows, mt_bench_conversations
from datasets import Dataset, load_from_disk
from tgi_server import CHAT_TEMPLATE, Call, Error, Hang, TGIServer, default_script

from coevol_hf import CoEvol, ConfigError, EndpointError, Trace
from coevol_hf.errors import RowError

FAST_RETRIES = {"retry_backoff": 0.01, "max_retries": 4}
RUNNER = Path(__file__).with_name("cache_run.py")


def refine(endpoint: str | list[str], rows: list[dict], **options) -> Dataset:
    return Dataset.from_list(rows).map(CoEvol(endpoint=endpoint, max_rounds=1, **options), batched=True)


def dies_after(server: TGIServer, answers: int):
    """The server's script, but the server dies when it is asked for answer number `answers`."""
    original, count = server.script, itertools.count(1)

    def script(call: Call):
        if next(count) == answers:
            threading.Thread(target=server.die).start()
        return original(call)

    return script


def clean_run(rows: list[dict], tmp_path: Path, **options) -> Dataset:
    with TGIServer() as clean:
        return refine(clean.url, rows, cache_dir=str(tmp_path / "clean-cache"), **options)


def fail_first_try(fault_for_call):
    """The default script, but each call's first try gets `fault_for_call(call)` (None: no fault)."""
    tries: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def script(call: Call):
        with lock:
            tries[call.key] += 1
            first = tries[call.key] == 1
        fault = fault_for_call(call) if first else None
        return fault if fault is not None else default_script(call)

    return script


TRANSIENT_FAULTS = [
    Error(429, "Model is overloaded", "overloaded", headers={"Retry-After": "0"}),
    Error(429, "Model is overloaded", "overloaded", headers={"Retry-After": "nan"}),  # asyncio would sleep forever
    Error(429, "Model is overloaded", "overloaded"),
    Error(500, "Request failed during generation: Server error: CUDA out of memory", "incomplete_generation"),
    Error(503, "", "", body="<html><body>503 Service Temporarily Unavailable</body></html>"),
    Error(200, "", "", body="<html>upstream proxy says hello</html>"),  # garbage with status 200
    Error(200, "", "", body="[" * 100_000),  # nested deeper than the JSON parser goes
    Error(200, "Request failed during generation: Server error: connection reset", "incomplete_generation"),  # error inside a 200
    Hang(1.5),  # longer than the timeout below
    None,
]


@pytest.mark.parametrize("api", ["chat", "generate"])
def test_transient_faults_give_the_same_output_as_a_clean_run(api: str, tmp_path: Path) -> None:
    # TGI's /generate route fails in the same ways and is retried by the same routine.
    options = {"api": "generate", "chat_template": CHAT_TEMPLATE} if api == "generate" else {}
    rows = alpaca_rows(8)
    rows[2]["instruction"] = "FAILS TO GENERATE " + rows[2]["instruction"]
    rows[5]["instruction"] = "FAILS IN STREAM " + rows[5]["instruction"]

    def fault(call: Call):
        if "FAILS TO GENERATE" in call.task and call.role == "editor":
            return Error(424, "Request failed during generation: Server error: CUDA error: device-side assert triggered", "generation")
        digest = int(hashlib.sha256(call.key.encode()).hexdigest(), 16)
        return TRANSIENT_FAULTS[digest % len(TRANSIENT_FAULTS)]

    first_try_faults = fail_first_try(fault)

    def script(call: Call):
        if "FAILS IN STREAM" in call.task and call.role == "advisor":
            return Error(200, "Input validation error: `inputs` must have less than 4096 tokens", "validation")
        return first_try_faults(call)

    with TGIServer(script) as faulty:
        out = refine(faulty.url, rows, timeout=0.5, **FAST_RETRIES, **options)
        retried = len(faulty.calls) - len({c.key for c in faulty.calls})
        assert {c.path for c in faulty.calls} == {"/v1/chat/completions" if api == "chat" else "/generate"}
    expected = clean_run(rows, tmp_path, **options)

    assert len(out) == len(rows) and out["instruction"] == [r["instruction"] for r in rows]
    assert retried > 20  # most calls really did fail once
    for i, (got, clean) in enumerate(zip(out, expected)):
        if i == 2:
            assert got["coevol_error"].startswith("generation: HTTP 424: Request failed during generation")
        elif i == 5:
            assert got["coevol_error"] == "validation: error in a 200 answer: Input validation error: `inputs` must have less than 4096 tokens"
        else:
            assert got == clean, f"row {i} differs from the clean run"
            continue
        assert got["output"] == rows[i]["output"] and got["coevol_original"] == [rows[i]["output"]]


def test_424_and_422_are_not_retried(server: TGIServer) -> None:
    server.script = lambda call: Error(424, "Request failed during generation: Server error: boom", "generation")
    out = refine(server.url, alpaca_rows(1), **FAST_RETRIES)
    assert out[0]["coevol_error"] == "generation: HTTP 424: Request failed during generation: Server error: boom"
    assert collections.Counter(c.key for c in server.calls).most_common(1)[0][1] == 1


def test_retry_after_is_honoured(server: TGIServer) -> None:
    server.script = fail_first_try(lambda call: Error(429, "Model is overloaded", "overloaded", headers={"Retry-After": "1"}))
    out = refine(server.url, alpaca_rows(1), **FAST_RETRIES)
    assert out[0]["coevol_error"] is None
    by_key = collections.defaultdict(list)
    for call in server.calls:
        by_key[call.key].append(call.received_at)
    gaps = [times[1] - times[0] for times in by_key.values()]
    assert len(gaps) == 8 and min(gaps) >= 0.95  # without Retry-After the backoff here is ~10 ms


def test_retries_are_bounded_and_the_row_keeps_its_content(server: TGIServer) -> None:
    rows = alpaca_rows(3)
    rows[1]["instruction"] = "POISON " + rows[1]["instruction"]
    server.script = lambda call: Error(500, "Request failed during generation: Server error: NaN", "incomplete_generation") if "POISON" in call.task else default_script(call)
    out = refine(server.url, rows, retry_backoff=0.01, max_retries=3)
    assert out["coevol_error"] == [None, "server: HTTP 500: Request failed during generation: Server error: NaN", None]
    assert out["output"][1] == rows[1]["output"]
    assert max(collections.Counter(c.key for c in server.calls).values()) == 4


def test_an_endpoint_failing_every_call_stops_the_run(server: TGIServer) -> None:
    server.script = lambda call: Error(503, "", "", body="Service Unavailable")
    server.healthy = False
    with pytest.raises(EndpointError, match=r"Every endpoint is down .* HTTP 503: Service Unavailable"):
        refine(server.url, alpaca_rows(4), retry_backoff=0.01, max_retries=3)


def test_hanging_request_times_out_and_is_retried(server: TGIServer) -> None:
    server.script = fail_first_try(lambda call: Hang(2.0) if call.role == "advisor" else None)
    out = refine(server.url, alpaca_rows(1), timeout=0.3, **FAST_RETRIES)
    assert out[0]["coevol_error"] is None and out[0]["coevol_rounds"] == [1]
    # Waiting out the hang would have given the first try's late answer and no second try.
    assert [c.role for c in server.calls].count("advisor") == 2
    (round_,) = Trace.from_json(out[0]["coevol_trace"]).turns[0].rounds
    assert list(round_.suggestions) == ["Add an example.", "Be more precise.", "Mention the main caveat."]


def test_never_more_in_flight_than_the_server_advertises() -> None:
    with TGIServer(delay=0.02, slots=4, max_concurrent_requests=4) as server:
        out = refine(server.url, alpaca_rows(8), max_concurrency=64)
    assert out["coevol_error"] == [None] * 8
    assert server.overloaded == 0 and server.peak_in_flight == 4


def test_429s_lower_the_concurrency_instead_of_hammering(tmp_path: Path) -> None:
    rows = alpaca_rows(8)
    # A server with 3 slots that advertises 128, as when other clients share it.
    with TGIServer(delay=0.05, slots=3) as server:
        out = refine(server.url, rows, max_concurrency=32, retry_backoff=0.05, max_retries=10)
        answered = len(server.calls) - server.overloaded
    assert out.to_list() == clean_run(rows, tmp_path).to_list()
    # 32 calls at once meet 3 slots: 29 refusals in the first wave, then the limit halves per
    # overload until it fits. Retrying each refusal at full concurrency would collect hundreds.
    assert answered == 8 * 8
    assert server.overloaded < 60, f"{server.overloaded} 429s for {answered} answers"


# -- several endpoints ---------------------------------------------------------------------------


def test_requests_spread_over_replicas_and_each_row_keeps_to_one(tmp_path: Path) -> None:
    # Rows hash to replicas by URL (a random port): 64 rows, so that an uneven split, which the
    # load bound must then even out, is rare enough not to decide the outcome.
    rows = alpaca_rows(64)
    with TGIServer(delay=0.02) as a, TGIServer(delay=0.02) as b:
        out = refine([a.url, b.url], rows)
        assert len(a.calls) > 20 and len(b.calls) > 20 and len(a.calls) + len(b.calls) == 64 * 8
        # Every call of a row opens with its instruction: count where each row's calls went.
        per_row = [collections.Counter(name for name, server in (("a", a), ("b", b)) for call in server.calls if row["instruction"] in call.messages[1]["content"]) for row in rows]
    assert all(sum(counts.values()) == 8 for counts in per_row)
    on_the_rows_replica = sum(max(counts.values()) for counts in per_row)
    assert on_the_rows_replica >= 0.85 * 64 * 8  # least-in-flight alone alternates: about half
    assert out.to_list() == clean_run(rows, tmp_path).to_list()


def test_endpoint_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with TGIServer(delay=0.02) as a, TGIServer(delay=0.02) as b:
        monkeypatch.setenv("COEVOL_ENDPOINT", f"{a.url}, {b.url}")
        from coevol_hf import coevol_refine

        out = Dataset.from_list(alpaca_rows(4)).map(coevol_refine, batched=True, fn_kwargs={"max_rounds": 1})
        assert out["coevol_error"] == [None] * 4 and a.calls and b.calls


def test_run_completes_on_the_replica_left_when_one_dies(tmp_path: Path) -> None:
    rows = alpaca_rows(8)
    with TGIServer(delay=0.02) as a, TGIServer(delay=0.02) as b:
        b.script = dies_after(b, 10)
        out = refine([a.url, b.url], rows, **FAST_RETRIES)
        assert b.dead and len(b.answered) < 14 and len(a.answered) > 8 * 8 - 14
    assert out.to_list() == clean_run(rows, tmp_path).to_list()


def test_a_retry_goes_to_the_replica_that_did_not_fail(tmp_path: Path) -> None:
    # b answers every call with a 500 while its /health says 200 (vLLM's /health only checks that
    # the process lives): the pool keeps it, so the retries of b's rows must go to a.
    rows = alpaca_rows(16)
    with TGIServer(delay=0.01) as a, TGIServer(delay=0.01) as b:
        b.script = lambda call: Error(500, "CUDA error: an illegal memory access was encountered", "generation")
        out = refine([a.url, b.url], rows, retry_backoff=0.01, max_retries=1)
        assert b.calls and out["coevol_error"] == [None] * len(rows)
        assert len(a.answered) == len(rows) * 8
    assert out.to_list() == clean_run(rows, tmp_path).to_list()


class OutAndBack:
    """A replica `b` that dies mid-run and comes back on the same port, `changes` applied (another
    `model_id`, say), while the other replica `a` holds its answers: so the run is still going when
    the pool checks `b` again. What the pool decides is read from its log, never from its state."""

    def __init__(self, a: TGIServer, b: TGIServer, caplog: pytest.LogCaptureFixture, *, after: int, verdict: str, **changes) -> None:
        self.a, self.b, self.caplog, self.verdict, self.changes = a, b, caplog, verdict, changes
        self.requests_before_restart: int | None = None
        self.requests_at_verdict: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run)
        original, count = b.script, itertools.count(1)

        def script(call: Call):
            if next(count) == after:
                self._thread.start()
            return original(call)

        b.script = script

    def _run(self) -> None:
        try:
            self.a.hold()
            self.b.die()
            self._wait_for_log(f"Taking {self.b.url} out of the rotation")
            logged = len(self.caplog.records)
            self.requests_before_restart = len(self.b.requests)
            self.b.restart(**self.changes)
            self._wait_for_log(self.verdict.format(url=self.b.url), since=logged)
            self.requests_at_verdict = len(self.b.requests)
        except BaseException as err:  # re-raised by `join`, in the test's thread
            self.error = err
        finally:
            self.a.release()

    def _wait_for_log(self, text: str, since: int = 0, deadline: float = 30.0) -> None:
        give_up = time.monotonic() + deadline
        while not any(text in record.getMessage() for record in self.caplog.records[since:]):
            assert time.monotonic() < give_up, f"the pool never logged {text!r}"
            time.sleep(0.01)

    def join(self) -> tuple[list[str], list[str]]:
        """The requests `b` received after it came back, and after the pool's verdict on it (calls
        sent to `b` before it was taken out may still arrive in between, on a slow machine)."""
        assert self._thread.ident is not None, "b was never asked for enough answers to die mid-run"
        self._thread.join(60)
        if self.error is not None:
            raise self.error
        return self.b.requests[self.requests_before_restart :], self.b.requests[self.requests_at_verdict :]


def test_a_replica_that_died_is_checked_again_and_gets_calls_when_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = alpaca_rows(8)
    with caplog.at_level(logging.INFO, logger="coevol_hf"), TGIServer(delay=0.02) as a, TGIServer(delay=0.02) as b:
        restart = OutAndBack(a, b, caplog, after=6, verdict="{url} is back in the rotation")
        out = refine([a.url, b.url], rows, **FAST_RETRIES)
        back, after_verdict = restart.join()
    assert "GET /health" in back and "GET /info" in back  # checked: healthy, and still the same model
    assert after_verdict.count("POST /v1/chat/completions") > 0  # back in the rotation: it gets calls again
    assert out.to_list() == clean_run(rows, tmp_path).to_list()


def test_a_replica_back_with_another_model_stays_out_and_the_run_completes_on_the_other(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = alpaca_rows(8)
    with caplog.at_level(logging.INFO, logger="coevol_hf"), TGIServer(delay=0.02) as a, TGIServer(delay=0.02) as b:
        verdict = "{url} is still out of the rotation: {url} now serves 'other-org/other-model@99ff', not 'test-org/test-model@0123abcd'"
        restart = OutAndBack(a, b, caplog, after=6, verdict=verdict, model_id="other-org/other-model", model_sha="99ff")
        out = refine([a.url, b.url], rows, **FAST_RETRIES)
        back, after_verdict = restart.join()
    assert "GET /info" in back  # it was checked...
    assert "POST /v1/chat/completions" not in after_verdict  # ...and, serving another model, never called again
    assert set(out["coevol_model"]) == {"test-org/test-model@0123abcd"}
    assert out.to_list() == clean_run(rows, tmp_path).to_list()


def test_a_server_restarted_with_another_model_is_asked_again_in_the_same_session(server: TGIServer) -> None:
    # A notebook: map, restart the server behind the same URL with another model, map again.
    rows = alpaca_rows(2)
    transform = CoEvol(endpoint=server.url, max_rounds=1)
    first = Dataset.from_list(rows).map(transform, batched=True)
    server.restart(model_id="other-org/other-model", model_sha="99ff")
    server.reset()
    second = Dataset.from_list(rows).map(transform, batched=True)
    assert set(first["coevol_model"]) == {"test-org/test-model@0123abcd"}
    assert set(second["coevol_model"]) == {"other-org/other-model@99ff"}
    assert len(server.calls) == 2 * 8  # nothing reused from the other model's answers


def test_a_probe_failing_while_datasets_hashes_never_lets_another_model_reuse_the_rows(server: TGIServer, tmp_path: Path) -> None:
    # The probe made for the fingerprint fails (a busy server), the one made by the map succeeds.
    Dataset.from_list(alpaca_rows(2)).save_to_disk(tmp_path / "source")
    models = []
    for model_id, model_sha in (("test-org/test-model", "0123abcd"), ("other-org/other-model", "99ff")):
        server.restart(model_id=model_id, model_sha=model_sha)
        server.reset()
        server.metadata_drops = 1  # the probe made for the fingerprint loses its connection
        refined = load_from_disk(str(tmp_path / "source")).map(CoEvol(endpoint=server.url, max_rounds=1), batched=True)
        models.append((set(refined["coevol_model"]), len(server.calls)))
    assert models == [({"test-org/test-model@0123abcd"}, 2 * 8), ({"other-org/other-model@99ff"}, 2 * 8)]


def test_unauthorized_calls_stop_the_run_with_one_error_and_keep_every_answer(tmp_path: Path) -> None:
    rows = alpaca_rows(4)
    answered, kept = itertools.count(1), set()

    def expiring_token(call: Call):
        if next(answered) > 12:
            return Error(401, "Unauthorized", "unauthorized")
        kept.add(call.key)
        return default_script(call)

    # One call at a time: with more, a row whose call fails cancels its sibling calls, and an
    # answer the client cancelled was never received, so it is not kept.
    with TGIServer(expiring_token, delay=0.01) as server:
        with pytest.raises(EndpointError, match=r"Stopping: the last 3 calls all failed with unauthorized: HTTP 401: Unauthorized\. Check token=.*request cache"):
            refine(server.url, rows, max_concurrency=1)
        server.script = default_script
        server.reset()
        out = refine(server.url, rows, max_concurrency=1)
        asked_again = {c.key for c in server.calls}
    assert len(kept) == 12 and not kept & asked_again and len(asked_again) == 4 * 8 - 12
    assert out.to_list() == clean_run(rows, tmp_path).to_list()


def test_replicas_must_serve_the_same_model() -> None:
    with TGIServer() as a, TGIServer(model_sha="fedcba98") as b:
        with pytest.raises(ConfigError, match="replicas of one model.*0123abcd.*fedcba98"):
            refine([a.url, b.url], alpaca_rows(1))
        assert a.calls == [] and b.calls == []


def test_all_endpoints_down_stops_the_run_and_keeps_every_answer(tmp_path: Path) -> None:
    rows = alpaca_rows(6)
    with TGIServer(delay=0.02) as a:
        a.script = dies_after(a, 20)
        with pytest.raises(EndpointError, match=rf"Every endpoint is down \({a.url}\).*request cache"):
            refine(a.url, rows, **FAST_RETRIES)
        answered_before = {c.key for c in a.answered}

    with TGIServer() as restarted:  # the same model, back on another port
        out = refine(restarted.url, rows, **FAST_RETRIES)
        asked_again = {c.key for c in restarted.calls}
    assert answered_before and not asked_again & answered_before
    assert len(asked_again) + len(answered_before) == 6 * 8
    assert out.to_list() == clean_run(rows, tmp_path).to_list()


# -- rows ----------------------------------------------------------------------------------------


def test_on_error_raise_stops_at_the_first_failure(server: TGIServer) -> None:
    rows = alpaca_rows(4)
    rows[1]["instruction"] = "TOO LONG " + rows[1]["instruction"]
    server.script = lambda call: Error(422, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096", "validation") if "TOO LONG" in call.task else default_script(call)
    with pytest.raises(RowError, match=r"validation: HTTP 422: Input validation error.*on_error='raise'.*TOO LONG"):
        refine(server.url, rows, on_error="raise")
    assert len(server.calls) < 4 * 8


def test_on_error_raise_under_num_proc_reaches_the_caller(server: TGIServer) -> None:
    # A worker sends the row's error back pickled; one that cannot be rebuilt hung the pool.
    rows = alpaca_rows(4)
    rows[3]["instruction"] = "TOO LONG " + rows[3]["instruction"]
    server.script = lambda call: Error(422, "Input validation error: `inputs` must have less than 4096 tokens", "validation") if "TOO LONG" in call.task else default_script(call)
    with pytest.raises(RowError, match=r"validation: HTTP 422: Input validation error.*on_error='raise'; the row starting 'TOO LONG "):
        Dataset.from_list(rows).map(CoEvol(endpoint=server.url, max_rounds=1, on_error="raise"), batched=True, batch_size=2, num_proc=2)


def test_on_error_raise_names_a_conversation_row_by_its_first_text(server: TGIServer) -> None:
    rows = mt_bench_conversations()[:2]
    for row in rows:  # a system prompt, the same in every row, names none of them
        row["conversations"].insert(0, {"from": "system", "value": "You are a helpful assistant."})
    rows[1]["conversations"][1]["value"] = "TOO LONG " + rows[1]["conversations"][1]["value"]
    server.script = lambda call: Error(422, "Input validation error", "validation") if "TOO LONG" in call.task else default_script(call)
    with pytest.raises(RowError, match=r"on_error='raise'; the row starting 'TOO LONG "):
        refine(server.url, rows, on_error="raise")


def test_on_error_raise_also_stops_on_a_bad_row(server: TGIServer) -> None:
    rows = alpaca_rows(2) + [{"instruction": "Say hi.", "input": "", "output": None}]
    with pytest.raises(RowError, match="input: column 'output' must be a non-empty string"):
        refine(server.url, rows, on_error="raise")


def test_on_error_must_be_known() -> None:
    with pytest.raises(ConfigError, match="on_error must be 'record'.*or 'raise'"):
        CoEvol(on_error="ignore")


# -- the request cache ---------------------------------------------------------------------------


def test_request_cache_answers_a_rerun_without_the_arrow_cache(server: TGIServer) -> None:
    rows = alpaca_rows(3)
    first = CoEvol(endpoint=server.url, max_rounds=1)
    out = Dataset.from_list(rows).map(first, batched=True)  # in memory: datasets caches nothing
    assert first.calls_made == 3 * 8 and first.cache_hits == 0
    server.reset()

    second = CoEvol(endpoint=server.url, max_rounds=1)
    again = Dataset.from_list(rows).map(second, batched=True)
    assert server.calls == [] and second.calls_made == 0 and second.cache_hits == 3 * 8
    assert again.to_list() == out.to_list()


def test_a_changed_option_reuses_the_calls_it_does_not_change(server: TGIServer) -> None:
    refine(server.url, alpaca_rows(2))
    server.reset()
    refine(server.url, alpaca_rows(2), judge_mode="score")
    assert [c.role for c in server.calls] == ["judge"] * 4  # debate, advice and edit come from the cache


def test_cache_keys_hold_no_secret_and_the_cache_can_be_moved(server: TGIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_saved_token_value")
    refine(server.url, alpaca_rows(2), token="sekret-endpoint-token", cache_dir=str(tmp_path / "moved"))
    database = tmp_path / "moved" / "requests.sqlite"
    assert database.is_file()
    for path in database.parent.iterdir():
        content = path.read_bytes()
        assert b"sekret-endpoint-token" not in content and b"hf_saved_token_value" not in content
    assert {c.headers.get("Authorization") for c in server.calls} == {"Bearer sekret-endpoint-token"}


def test_unreadable_cache_file_is_reported_and_bypassed(server: TGIServer, isolated_hf_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = isolated_hf_home / "coevol-hf" / "requests.sqlite"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"this is not a database, it was cut off mid-write" * 100)
    rows = alpaca_rows(2)
    with caplog.at_level(logging.WARNING, logger="coevol_hf"):
        out = refine(server.url, rows)
    assert "cannot be used" in caplog.text and str(database) in caplog.text
    assert out["coevol_error"] == [None, None] and len(server.calls) == 2 * 8


@pytest.mark.parametrize("damage", [b"\x78\x01garbage", zlib.compress(b'{"text": 5, "prompt_tokens": "x"}')])
def test_damaged_entries_are_asked_again(server: TGIServer, isolated_hf_home: Path, caplog: pytest.LogCaptureFixture, damage: bytes) -> None:
    rows = alpaca_rows(2)
    first = refine(server.url, rows)
    with sqlite3.connect(isolated_hf_home / "coevol-hf" / "requests.sqlite") as db:
        db.execute("UPDATE answers SET value = ?", (damage,))
    server.reset()
    with caplog.at_level(logging.WARNING, logger="coevol_hf"):
        again = refine(server.url, rows)
    assert len(server.calls) == 2 * 8 and again.to_list() == first.to_list()
    if damage.startswith(b"\x78\x01g"):
        assert "unreadable entry" in caplog.text


def run_script(data_file: Path, cache_dir: Path, **options) -> subprocess.Popen:
    command = [sys.executable, str(RUNNER), str(data_file), str(cache_dir), json.dumps(options)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def cached_answers_settle(server: TGIServer, database: Path, deadline: float = 60.0) -> set[str]:
    """The calls the server answered, once the client's request cache holds one entry for each
    (the server holds every later answer): polled, since the client writes them asynchronously."""
    give_up = time.monotonic() + deadline
    while True:
        answered = {c.key for c in server.answered}
        stored = 0
        if database.exists():
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                    stored = db.execute("SELECT count(*) FROM answers").fetchone()[0]
            except sqlite3.OperationalError:  # not created yet, or locked for a moment by the writer
                pass
        if stored == len(answered) and answered == {c.key for c in server.answered}:
            return answered
        assert time.monotonic() < give_up, f"the request cache holds {stored} answers of {len(answered)} sent"
        time.sleep(0.02)


def test_killed_run_repeats_no_answered_call(tmp_path: Path, isolated_hf_home: Path) -> None:
    data_file = tmp_path / "alpaca.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(6)))
    with TGIServer(delay=0.02) as server:
        first = run_script(data_file, tmp_path / "datasets-cache", endpoint=server.url, max_rounds=1, max_concurrency=4)
        while len(server.answered) < 20:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.01)
        server.hold()
        server.run(asyncio.sleep(0))  # the hold has taken effect: no answer is sent after this
        answered = cached_answers_settle(server, isolated_hf_home / "coevol-hf" / "requests.sqlite")
        first.send_signal(signal.SIGKILL)
        first.wait()
        server.release()
        server.reset()

        second = run_script(data_file, tmp_path / "datasets-cache", endpoint=server.url, max_rounds=1, max_concurrency=4)
        stdout, stderr = second.communicate(timeout=120)
        assert second.returncode == 0, stderr
        asked_again = [c.key for c in server.calls]
    assert len(answered) >= 20 and not set(asked_again) & answered
    assert len(asked_again) == 6 * 8 - len(answered)
    rows = json.loads(stdout.strip().splitlines()[-1])
    assert [r["coevol_error"] for r in rows] == [None] * 6 and [r["coevol_rounds"] for r in rows] == [[1]] * 6


def test_num_proc_workers_share_the_request_cache(server: TGIServer, tmp_path: Path) -> None:
    data_file = tmp_path / "alpaca.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(6)))
    options = {"endpoint": server.url, "max_rounds": 1, "map": {"num_proc": 2, "batch_size": 2, "load_from_cache_file": False}}
    for attempt in ("fill", "replay"):
        process = run_script(data_file, tmp_path / "datasets-cache", **options)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        if attempt == "fill":
            assert len(server.calls) == 6 * 8
            filled = stdout
            server.reset()
    assert server.calls == [] and stdout == filled


def test_cli_counts_cache_hits_and_misses(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from coevol_hf.cli import main

    source = tmp_path / "alpaca.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(2)))
    with TGIServer() as a, TGIServer() as b:
        args = ["refine", str(source), "--endpoint", f"{a.url},{b.url}", "--max-rounds", "1", "--retry-backoff", "0.01", "--cache-dir", str(tmp_path / "rc")]
        assert main([*args, "-o", str(tmp_path / "first")]) == 0
        assert "LLM calls: 16 (request cache: 0 hits, 16 misses; HTTP requests sent: 16, retries included)" in capsys.readouterr().out
        # Another judge mode is a new datasets fingerprint; only the judge calls are new requests.
        assert main([*args, "--judge-mode", "score", "-o", str(tmp_path / "second")]) == 0
        assert "LLM calls: 16 (request cache: 12 hits, 4 misses; HTTP requests sent: 4, retries included)" in capsys.readouterr().out


def test_an_endpoint_down_at_start_is_left_out(server: TGIServer) -> None:
    out = refine(["http://127.0.0.1:9", server.url], alpaca_rows(2))
    assert out["coevol_error"] == [None, None] and len(server.calls) == 2 * 8


def test_endpoint_urls_must_not_carry_credentials() -> None:
    with pytest.raises(ConfigError, match="credentials.*token="):
        CoEvol(endpoint="https://user:hunter2@tgi.example.com")


def test_hub_offline_mode_does_not_block_a_local_server(server: TGIServer, tmp_path: Path) -> None:
    # HF_HUB_OFFLINE=1 keeps coevol-hf off Hugging Face's hosts (tests/test_client_session.py), not off this machine.
    data_file = tmp_path / "alpaca.jsonl"
    data_file.write_text(json.dumps(alpaca_rows(1)[0]) + "\n")
    options = {"endpoint": server.url, "max_rounds": 1}
    command = [sys.executable, str(RUNNER), str(data_file), str(tmp_path / "datasets-cache"), json.dumps(options)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])[0]["coevol_error"] is None
    assert len(server.calls) == 8
