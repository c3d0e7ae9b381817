"""The client session on its own, over real HTTP to the scripted server on 127.0.0.1.

Each test drives a `ClientSession` (its options made as `CoEvol` makes them) with asyncio the way the
operator does: `server()` from a plain thread, then calls on an event loop. What is checked is
what can be trusted: which model answered, what was cut off, which secrets went where, and that
a bad server ends a call or a run with one clear error instead of hanging or crashing it.
"""

from __future__ import annotations

import asyncio
import pickle
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from tgi_server import CHAT_TEMPLATE, Answer, Call, Error, TGIServer, Trickle

from coevol_hf.cache import RequestCache, request_key
from coevol_hf.client.http import Failure, Http
from coevol_hf.client.pool import Outcome
from coevol_hf.client.server import Target, auth_headers, probe
from coevol_hf.client.session import ClientSession
from coevol_hf.client.tgi import RequestFormat
from coevol_hf.errors import ConfigError, EndpointError, RowError
from coevol_hf.options import CoEvolOptions, Sampling



def session_of(url: str | tuple[str, ...], tmp_path: Path, *, sampling: Sampling | None = None, **connection: Any) -> ClientSession:
    endpoints = [url] if isinstance(url, str) else list(url)
    options = {"retry_backoff": 0.01, "max_retries": 2, "cache_dir": str(tmp_path / "request-cache"), **connection}
    return ClientSession(CoEvolOptions(endpoint=endpoints, **options).connection(), sampling or sampling_of())


def sampling_of(**options: Any) -> Sampling:
    """The sampling options `CoEvol(**options)` sends (the defaults, checked, are the options')."""
    return CoEvolOptions(**options).sampling


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def drive(session: ClientSession, work: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    """Run `work(session)` on a fresh event loop, closing the session's connections after it."""

    async def main() -> Any:
        try:
            return await work(session)
        finally:
            await session.aclose()

    return asyncio.run(main())


def call(session: ClientSession, text: str, **kwargs: Any) -> Any:
    return drive(session, lambda s: s(ask(text), **kwargs))


def outcomes(session: ClientSession, texts: list[str]) -> list[Any]:
    """Each call's reply or `RowError`, one call after another, up to an `EndpointError` (which ends a run)."""

    async def work(s: ClientSession) -> list[Any]:
        results = []
        for text in texts:
            try:
                results.append(await s(ask(text)))
            except RowError as err:
                results.append(err)
            except EndpointError as err:
                results.append(err)
                break
        return results

    return drive(session, work)


# -- model identity ------------------------------------------------------------------------------


def test_a_server_restarted_with_another_model_gets_new_calls_after_a_refresh(tmp_path: Path) -> None:
    with TGIServer(lambda c: "old answer") as server:
        session = session_of(server.url, tmp_path)
        assert session.server().identity == "test-org/test-model@0123abcd"
        assert call(session, "Say hi.").text == "old answer"
        server.restart(model_id="other-org/other-model", model_sha="99ff", script=lambda c: "new answer")

        assert session.server().identity == "test-org/test-model@0123abcd"  # asked once, until refreshed
        assert session.server(refresh=True).identity == "other-org/other-model@99ff"
        assert call(session, "Say hi.").text == "new answer"  # another model: another cache key
        assert len(server.calls) == 2 and session.cache_hits == 0


@pytest.mark.parametrize("kind", ["tgi", "vllm"])
def test_an_answer_from_another_model_stops_the_run_and_is_not_cached(tmp_path: Path, kind: str) -> None:
    with TGIServer(lambda c: "answer", kind=kind) as server:
        session = session_of(server.url, tmp_path, sampling=sampling_of(model="test-org/test-model"))
        session.server()
        assert call(session, "First.").text == "answer"
        server.restart(model_id="other-org/other-model")  # as in a notebook: same URL, no new probe

        with pytest.raises(EndpointError, match=rf"{server.url} now answers as 'other-org/other-model', not 'test-org/test-model'"):
            call(session, "Second.")
        server.restart(model_id="test-org/test-model")
        fresh = session_of(server.url, tmp_path)
        assert call(fresh, "Second.").text == "answer"
        assert fresh.cache_hits == 0 and [c.task for c in server.calls] == ["First.", "Second.", "Second."]


def test_a_listing_of_several_models_needs_model(tmp_path: Path) -> None:
    with TGIServer(lambda c: "from " + c.body["model"], kind="vllm", other_models=("org/lora-a", "org/lora-b")) as server:
        with pytest.raises(ConfigError, match=r"serves several models \('test-org/test-model', 'org/lora-a', 'org/lora-b'\): pass model="):
            session_of(server.url, tmp_path).server()
        with pytest.raises(ConfigError, match=r"model='org/lora-c' was asked for, but .* serves 'test-org/test-model', 'org/lora-a', 'org/lora-b'"):
            session_of(server.url, tmp_path, sampling=sampling_of(model="org/lora-c")).server()

        chosen = session_of(server.url, tmp_path, sampling=sampling_of(model="org/lora-b"))
        assert chosen.server().identity == "org/lora-b"
        assert call(chosen, "Hi.").text == "from org/lora-b"
        assert server.calls[-1].body["model"] == "org/lora-b"


def test_model_revision_enters_the_identity_of_a_server_that_reports_none(tmp_path: Path) -> None:
    with TGIServer(lambda c: "answer", kind="vllm") as server:
        plain = session_of(server.url, tmp_path)
        assert plain.server().identity == "test-org/test-model"
        call(plain, "Hi.")
        revised = session_of(server.url, tmp_path, sampling=sampling_of(model_revision="v2"))
        assert revised.server().identity == "test-org/test-model@v2"
        call(revised, "Hi.")
        assert revised.cache_hits == 0 and len(server.calls) == 2  # another revision, another key


def test_an_inference_endpoints_model_needs_a_name_before_any_call(tmp_path: Path) -> None:
    # Every Inference Endpoint reports "/repository" and no revision: as an identity it would let
    # two endpoints serving different models share cached answers and datasets results.
    with TGIServer(model_id="/repository", model_sha=None) as endpoint:
        with pytest.raises(ConfigError, match=r"serves its model from /repository and reports no revision.*pass model_revision="):
            session_of(endpoint.url, tmp_path).server()
        named = session_of(endpoint.url, tmp_path, sampling=sampling_of(model_revision="org/llama@main")).server()
        assert named.identity == "/repository@org/llama@main" and endpoint.calls == []


def test_model_revision_must_match_what_tgi_reports(tmp_path: Path) -> None:
    with TGIServer() as server:
        assert session_of(server.url, tmp_path, sampling=sampling_of(model_revision="0123")).server().identity == "test-org/test-model@0123abcd"
        with pytest.raises(ConfigError, match="model_revision='fedcba98' was asked for, but .* serves 'test-org/test-model@0123abcd'"):
            session_of(server.url, tmp_path, sampling=sampling_of(model_revision="fedcba98")).server()


# -- what an answer says -------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "generate"])
def test_cut_off_answers_are_marked_and_cached_as_such(tmp_path: Path, api: str) -> None:
    def script(c: Call) -> Answer:
        return Answer("half an ans", "length", cached_tokens=7) if "long" in c.task else Answer("done.", "stop" if api == "chat" else "eos_token")

    sampling = sampling_of(api=api, chat_template=CHAT_TEMPLATE if api == "generate" else None)
    with TGIServer(script) as server:
        first = session_of(server.url, tmp_path, sampling=sampling)
        cut, whole = outcomes(first, ["Write something long.", "Write something short."])
        again = session_of(server.url, tmp_path, sampling=sampling)
        cached = call(again, "Write something long.")
        assert len(server.calls) == 2 and again.cache_hits == 1
    assert (cut.text, cut.cut_off, whole.cut_off) == ("half an ans", True, False)
    assert cut.cached_tokens == (7 if api == "chat" else 0)  # TGI's /generate does not say
    assert cached == cut


def test_a_lone_surrogate_is_repaired_before_it_reaches_the_cache_or_the_next_request(tmp_path: Path) -> None:
    def script(c: Call) -> str | Error:
        if c.task == "Bad error.":
            return Error(422, "Input validation error: \ud83d", "validation")
        return "smile \ud83d please" if c.task == "Smile." else "echo: " + c.task

    with TGIServer(script) as server:
        session = session_of(server.url, tmp_path)
        reply, echoed, error = outcomes(session, ["Smile.", "placeholder", "Bad error."])
        follow_up = call(session_of(server.url, tmp_path), reply.text)
        again = session_of(server.url, tmp_path)
        assert call(again, "Smile.") == reply and again.cache_hits == 1  # written to the cache, read back
    assert reply.text == "smile \ufffd please" and follow_up.text == "echo: smile \ufffd please"
    assert isinstance(error, RowError) and str(error) == "validation: HTTP 422: Input validation error: \ufffd"
    assert echoed.text == "echo: placeholder"


def test_an_entry_cached_before_cut_off_was_recorded_is_asked_again(tmp_path: Path) -> None:
    with TGIServer(lambda c: Answer("fresh", "length")) as server:
        session = session_of(server.url, tmp_path)
        server_info = session.server()
        body = RequestFormat(sampling_of(), server_info).encode(ask("Hi."))
        old = RequestCache(tmp_path / "request-cache")
        old.put(request_key(server_info.identity, "/v1/chat/completions", body), {"text": "stale", "prompt_tokens": 1, "completion_tokens": 1})
        old.close()
        reply = call(session, "Hi.")
        assert (reply.text, reply.cut_off, session.cache_hits, len(server.calls)) == ("fresh", True, 0, 1)


def test_answers_of_one_loop_turn_are_written_together_and_readable_before(tmp_path: Path) -> None:
    def on_disk() -> int:
        if not (tmp_path / "requests.sqlite").exists():
            return 0
        with sqlite3.connect(tmp_path / "requests.sqlite") as db:
            return db.execute("SELECT count(*) FROM answers").fetchone()[0]

    async def scenario() -> list[int]:
        cache = RequestCache(tmp_path)
        cache.put(b"a", {"text": "one"})
        cache.put(b"b", {"text": "two"})
        seen = [on_disk()]
        assert cache.get(b"a") == {"text": "one"}  # read back before it is written
        await asyncio.sleep(0)  # the turn ends: both are written, in one transaction
        seen.append(on_disk())
        cache.put(b"c", {"text": "three"})
        cache.close()  # closing writes what is kept
        return [*seen, on_disk()]

    assert asyncio.run(scenario()) == [0, 2, 3]


def test_the_cache_skips_a_value_no_file_can_hold(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = RequestCache(tmp_path)
    cache.put(b"key", {"text": "\ud83d"})
    assert cache.get(b"key") is None and "Not caching an answer that cannot be stored" in caplog.text


def test_an_oversized_answer_is_refused_unread_and_not_asked_again(tmp_path: Path) -> None:
    with TGIServer(lambda c: "x" * (2 << 20)) as server:
        session = session_of(server.url, tmp_path, sampling=sampling_of(max_new_tokens=10))
        with pytest.raises(RowError, match=r"bad_response: the answer is larger than 1026 KiB; refused unread"):
            call(session, "Ramble.")
        assert len(server.calls) == 1


def test_an_oversized_answer_without_a_length_is_cut_off_while_read(tmp_path: Path) -> None:
    # Chunked: no Content-Length to refuse it by, so the cap must act on the bytes as they come.
    with TGIServer(lambda c: Trickle("x" * (2 << 20), interval=0, chunk=64 << 10, chunked=True)) as server:
        session = session_of(server.url, tmp_path, sampling=sampling_of(max_new_tokens=10))
        with pytest.raises(RowError, match=r"bad_response: the answer is larger than 1026 KiB; refused unread"):
            call(session, "Ramble.")
        assert len(server.calls) == 1


def test_a_trickling_server_cannot_hold_a_call_past_its_timeout(tmp_path: Path) -> None:
    # A byte every 0.25 s: each read succeeds well within the timeout; the whole body (~360 bytes) takes ~90 s.
    with TGIServer(lambda c: Trickle("an answer sent one byte at a time", interval=0.25)) as server:
        session = session_of(server.url, tmp_path, timeout=1.0, max_retries=0)
        session.server()
        started = time.monotonic()
        with pytest.raises(RowError, match=r"timeout: no complete answer within 1 s"):
            call(session, "Hello?")
        # The only proof that the call ended at its deadline and not with the body. The bound is 30
        # times the timeout, so a slow machine cannot cross it; a per-read timeout would take ~90 s.
        assert time.monotonic() - started < 30


def test_a_server_that_never_accepts_the_connection_is_a_connection_failure_not_a_timeout() -> None:
    # A listener whose backlog is full drops new connection attempts, as a blackholed replica does:
    # the pool must see a refused endpoint (taken out of rotation), not a slow answer.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.2)

    async def post() -> Failure:
        http = Http(1.0)
        try:
            await http.request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", {}, body=b"{}", cap=1024)
        except Failure as failure:
            return failure
        finally:
            await http.aclose()

    try:
        failure = asyncio.run(post())
    finally:
        for sock in (*fillers, listener):
            sock.close()
    assert (failure.kind, failure.outcome, str(failure)) == ("connection", Outcome.REFUSED, "connection: no connection within 0.5 s")


def test_a_tgi_server_not_ready_yet_is_never_taken_for_another_kind_of_server(tmp_path: Path) -> None:
    # A gateway's 502 page before TGI is up: falling back to /v1/models would probe TGI as an
    # OpenAI-style server (no revision, and its model name sent as a LoRA adapter id).
    with TGIServer() as server:
        server.info_error = Error(502, "", "", body="<html><h1>502 Bad Gateway</h1></html>")
        session = session_of(server.url, tmp_path)
        with pytest.raises(EndpointError, match=r"/info answered 502: the server is not ready"):
            session.server()
        assert server.metadata_requests == ["/info"]
        server.info_error = None
        assert (session.server().kind, session.server().identity) == ("tgi", "test-org/test-model@0123abcd")


def test_a_tgi_reached_only_through_its_openai_routes_is_probed_by_its_model(tmp_path: Path) -> None:
    # A gateway that exposes TGI's OpenAI-compatible routes but not /info: TGI's /v1/models
    # answers its one model as an object, not a list.
    with TGIServer() as server:
        server.info_error = Error(404, "Not Found", "not_found")
        found = session_of(server.url, tmp_path).server()
        assert (found.kind, found.model_id) == ("openai", "test-org/test-model")
        assert server.metadata_requests == ["/info", "/v1/models"]


@pytest.mark.parametrize(("model_id", "warned"), [("/home/alice/{}/acme-ft.Q4_K_M.gguf", True), ("acme/public-ft-{}", False), ("/repository", False)])
def test_a_model_named_by_a_local_path_is_warned_about(model_id: str, warned: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_id = model_id.format(tmp_path.name)  # a name of its own: each is warned about once per process
    with TGIServer(kind="vllm", model_id=model_id) as server:
        assert session_of(server.url, tmp_path).server().model_id == model_id
    warnings = [r.getMessage() for r in caplog.records if "names its model by a local path" in r.getMessage()]
    assert bool(warnings) is warned
    if warned:
        assert "a push publishes it. Start the server with a public name (vLLM --served-model-name, llama.cpp --alias)." in warnings[0]


def test_max_new_tokens_the_server_cannot_fit_is_refused_before_any_call(tmp_path: Path) -> None:
    with TGIServer() as server:  # its /info allows 4096 tokens per request
        session = session_of(server.url, tmp_path, sampling=sampling_of(max_new_tokens=4096))
        with pytest.raises(ConfigError, match=r"max_new_tokens=4096 leaves no room for a prompt: .* allows 4096 tokens per request"):
            session.server()
        assert session_of(server.url, tmp_path, sampling=sampling_of(max_new_tokens=4000)).server().max_total_tokens == 4096
        assert server.calls == []


# -- identical calls at the same time -------------------------------------------------------------


def test_identical_calls_in_flight_together_are_sent_once(tmp_path: Path) -> None:
    with TGIServer(lambda c: "shared answer", delay=0.2) as server:
        session = session_of(server.url, tmp_path)

        async def work(s: ClientSession) -> list[Any]:
            return await asyncio.gather(s(ask("Same question.")), s(ask("Same question.")), s(ask("Another question.")))

        replies = drive(session, work)
        assert [r.text for r in replies] == ["shared answer"] * 3
        assert len(server.calls) == 2 and (session.cache_misses, session.cache_hits) == (2, 1)


def test_a_cancelled_caller_never_takes_the_answer_from_the_others(tmp_path: Path) -> None:
    with TGIServer(lambda c: "shared answer") as server:
        session = session_of(server.url, tmp_path)

        async def asked_twice(s: ClientSession, question: str, cancel: int) -> tuple[str, int]:
            """Two identical calls while the server holds its answers; one of them is cancelled."""
            server.hold()
            calls = [asyncio.ensure_future(s(ask(question))) for _ in range(2)]
            before = len(server.calls)
            while len(server.calls) == before:
                await asyncio.sleep(0.01)
            calls[cancel].cancel()
            await asyncio.sleep(0.1)
            server.release()
            return (await calls[1 - cancel]).text, len(server.calls) - before

        async def work(s: ClientSession) -> list[Any]:
            waiter_cancelled = await asked_twice(s, "First question.", cancel=1)
            sender_cancelled = await asked_twice(s, "Second question.", cancel=0)
            server.hold()
            lone = asyncio.ensure_future(s(ask("Asked alone.")))
            while server.calls[-1].messages[-1]["content"] != "Asked alone.":
                await asyncio.sleep(0.01)
            sent = s.calls_sent
            lone.cancel()
            await asyncio.sleep(0.2)
            return [waiter_cancelled, sender_cancelled, s.calls_sent - sent]

        waiter_cancelled, sender_cancelled, stopped = drive(session, work)
        server.release()
        assert waiter_cancelled == ("shared answer", 1)  # the request went on for the other caller
        assert sender_cancelled == ("shared answer", 2)  # its request stopped; the other sent its own
        assert stopped == 1  # the lone call's request ended while the server still held its answer


# -- faults that end a run -----------------------------------------------------------------------


def test_unauthorized_on_every_call_stops_after_three_in_a_row(tmp_path: Path) -> None:
    with TGIServer(lambda c: Error(401, "Unauthorized", "unauthorized")) as server:
        results = outcomes(session_of(server.url, tmp_path), ["a", "b", "c", "d"])
        assert len(server.calls) == 3
    assert [type(r) for r in results] == [RowError, RowError, EndpointError] and str(results[0]) == "unauthorized: HTTP 401: Unauthorized"
    assert str(results[2]).startswith("Stopping: the last 3 calls all failed with unauthorized: HTTP 401: Unauthorized. Check token=")
    assert "request cache" in str(results[2])


def test_a_success_in_between_is_not_a_run_of_failures(tmp_path: Path) -> None:
    with TGIServer(lambda c: "fine" if c.task == "ok" else Error(404, "Not Found", "not_found")) as server:
        results = outcomes(session_of(server.url, tmp_path), ["a", "b", "ok", "c", "d"])
    assert [type(r).__name__ for r in results] == ["RowError", "RowError", "Reply", "RowError", "RowError"]


def test_a_redirect_at_start_is_a_clear_error_and_is_not_followed(tmp_path: Path) -> None:
    with TGIServer() as moved, TGIServer() as elsewhere:
        moved.redirect = elsewhere.url
        with pytest.raises(EndpointError, match=rf"{moved.url}/info redirects \(301\) to '{elsewhere.url}/info': point endpoint= at the final address"):
            session_of(moved.url, tmp_path).server()
        assert moved.requests == ["GET /info"] and elsewhere.requests == []


def test_a_redirect_on_calls_is_never_followed_and_stops_the_run(tmp_path: Path) -> None:
    with TGIServer() as moved, TGIServer() as elsewhere:
        session = session_of(moved.url, tmp_path)
        session.server()
        moved.redirect = elsewhere.url
        results = outcomes(session, ["a", "b", "c", "d"])
        assert moved.requests == ["GET /info"] + ["POST /v1/chat/completions"] * 3
        assert elsewhere.requests == []  # a followed 301 would be a GET there
    assert str(results[0]) == f"redirect: HTTP 301 to '{elsewhere.url}/v1/chat/completions': point endpoint= at the final address"
    assert len(results) == 3 and isinstance(results[2], EndpointError) and "Point endpoint= at the address it redirects to" in str(results[2])


@pytest.mark.parametrize("advertised", [0, -3, 2.5, "many", True, None])
def test_a_bad_advertised_concurrency_is_ignored(tmp_path: Path, advertised: Any) -> None:
    with TGIServer(lambda c: "ok", delay=0.05, max_concurrent_requests=advertised) as server:
        session = session_of(server.url, tmp_path, max_concurrency=4)
        assert session.server().max_concurrent_requests is None
        replies = drive(session, lambda s: asyncio.wait_for(asyncio.gather(*(s(ask(f"n{i}")) for i in range(12))), 10))
        assert [r.text for r in replies] == ["ok"] * 12 and server.peak_in_flight == 4


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True])
def test_a_bad_max_concurrency_is_refused(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigError, match="max_concurrency must be an integer >= 1"):
        session_of("http://127.0.0.1:9", tmp_path, max_concurrency=bad)


def test_https_to_a_plain_http_server_names_the_tls_failure(tmp_path: Path) -> None:
    with TGIServer() as server:
        url = server.url.replace("http://", "https://")
        with pytest.raises(EndpointError, match=rf"{url}: the TLS handshake failed \(SSLError: .*WRONG_VERSION_NUMBER") as caught:
            session_of(url, tmp_path).server()
    assert "Start the server" not in str(caught.value)
    assert isinstance(caught.value.__cause__.__cause__, ssl.SSLError)  # shown by --debug


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_an_untrusted_certificate_names_the_tls_failure(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with TGIServer(ssl_context=context) as server:
        with pytest.raises(EndpointError, match=r"the TLS handshake failed \(SSLCertVerificationError: .*CERTIFICATE_VERIFY_FAILED.*SSL_CERT_FILE"):
            session_of(server.url, tmp_path).server()
        assert server.probes == []


def test_every_endpoint_down_at_start_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match=r"Cannot reach http://127.0.0.1:9: cannot connect \(ConnectionRefusedError"):
        session_of("http://127.0.0.1:9", tmp_path).server()


# -- secrets -------------------------------------------------------------------------------------


SAVED = "hf_saved_token_value"


@pytest.mark.parametrize(
    "url, sent",
    [
        ("https://router.huggingface.co", SAVED),
        ("https://api-inference.huggingface.co/models/x", SAVED),
        ("https://huggingface.co", SAVED),
        ("http://router.huggingface.co", None),  # plain http: never
        ("https://someone-demo.hf.space", None),  # runs its owner's code
        ("https://abc123.us-east-1.aws.endpoints.huggingface.cloud", None),  # someone's endpoint
        ("https://evilhuggingface.co", None),
        ("https://huggingface.co.example.com", None),
        ("http://10.0.0.5:8080", None),
        ("http://127.0.0.1:8080", None),
        ("http://localhost:8080", None),
    ],
)
def test_the_saved_token_goes_only_to_hugging_face_api_hosts_over_https(monkeypatch: pytest.MonkeyPatch, url: str, sent: str | None) -> None:
    monkeypatch.setenv("HF_TOKEN", SAVED)
    assert auth_headers(url, None) == ({"authorization": f"Bearer {sent}"} if sent else {})


def test_a_saved_token_no_header_can_carry_is_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_tok€n")
    with pytest.raises(ConfigError, match=r"^The saved Hugging Face token holds .* non-ASCII character: log in again") as caught:
        auth_headers("https://router.huggingface.co/v1", None)
    assert "hf_tok" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["https://someone-demo.hf.space", "https://abc.endpoints.huggingface.cloud", "https://tgi.example.com", "http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost:80"],
)
def test_a_given_token_goes_to_its_endpoint_over_https_or_loopback(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("HF_TOKEN", SAVED)
    assert auth_headers(url, "given") == {"authorization": "Bearer given"}


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080", "http://tgi.internal", "http://router.huggingface.co", "http://tgi.localhost:8080"])
def test_a_given_token_never_crosses_the_network_in_clear_text(url: str) -> None:
    with pytest.raises(ConfigError, match=rf"token= would travel in clear text to {url}"):
        auth_headers(url, "given")


def test_no_saved_token_reaches_a_loopback_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SAVED)
    with TGIServer(lambda c: "ok") as server:
        session = session_of(server.url, tmp_path)
        session.server()
        call(session, "Hi.")
        received = [headers for _, headers in server.probes] + [c.headers for c in server.calls]
    assert len(received) == 2 and all("authorization" not in {k.lower() for k in h} for h in received)


def test_a_given_token_reaches_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SAVED)
    with TGIServer(lambda c: "ok") as server:
        session = session_of(server.url, tmp_path, token="sekret")
        session.server()
        call(session, "Hi.")
        received = [headers for _, headers in server.probes] + [c.headers for c in server.calls]
    assert [{k.lower(): v for k, v in h.items()}["authorization"] for h in received] == ["Bearer sekret"] * 2


def test_hub_offline_mode_keeps_hugging_face_hosts_out_without_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoNetwork:
        async def request(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no request may be sent")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EndpointError, match="HF_HUB_OFFLINE=1 forbids contacting Hugging Face"):
        asyncio.run(probe(NoNetwork(), Target.of("https://router.huggingface.co", None), sampling_of()))


def test_a_pickled_session_keeps_what_was_probed_and_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SAVED)
    with TGIServer(lambda c: "ok") as server:
        session = session_of(server.url, tmp_path)
        session.server()
        call(session, "Hi.")
        session._target_map()
        blob = pickle.dumps(session)
        copy = pickle.loads(blob)
        assert copy.server().identity == "test-org/test-model@0123abcd" and len(server.probes) == 1
        assert call(copy, "Hi.").text == "ok" and copy.cache_hits == 1
    hub = session_of("https://router.huggingface.co", tmp_path)
    hub._target_map()  # headers with the saved token, made in this process only
    assert SAVED.encode() not in pickle.dumps(hub)


def test_counters_count_requests_hits_and_misses(tmp_path: Path) -> None:
    attempts = iter([Error(500, "boom", "server"), "one", "two"])
    with TGIServer(lambda c: next(attempts)) as server:
        session = session_of(server.url, tmp_path)
        outcomes(session, ["a", "b", "a"])
        assert (session.calls_sent, session.cache_hits, session.cache_misses) == (3, 1, 2)
        assert len(server.calls) == 3


def test_a_retry_after_is_capped_and_read_in_both_forms() -> None:
    # A server asking for a day's wait would stall its row for a day; an unreadable one is ignored.
    from coevol_hf.client.http import Response
    from coevol_hf.client.tgi import _retry_after

    def after(value: str) -> float | None:
        return _retry_after(Response(429, {"retry-after": value}, b""))

    assert after("2") == 2.0 and after("86400") == 300.0 and after("nan") is None and after("soon") is None
    assert after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: retry now
