"""The HTTP/1.1 client, over real sockets on 127.0.0.1: servers that write scripted bytes, a
forwarding proxy, and the scripted TGI server behind TLS.

What is checked is what a run relies on: every way an answer may be framed reads the same body,
connections are kept alive and a stale one costs no failed call, an answer that is not HTTP is
an error of its own, and proxies and TLS carry calls without showing a token to the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import dataclasses
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from test_client_session import call, outcomes, session_of
from tgi_server import TGIServer

from coevol_hf.client.http import Failure, Http, Response, proxy_for
from coevol_hf.client.pool import Outcome
from coevol_hf.errors import ConfigError, EndpointError

ANSWER = b'{"text": "hello"}'


@dataclasses.dataclass
class Reply:
    """What a raw server writes for one request: `parts` one after another (a pause between
    them, so each arrives on its own), then, with `close`, the end of the connection (with
    `reset`, a TCP reset instead of an orderly end)."""

    parts: list[bytes]
    close: bool = False
    reset: bool = False


def with_length(body: bytes = ANSWER, *, extra: bytes = b"") -> Reply:
    return Reply([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body + extra])


@dataclasses.dataclass
class Received:
    connection: int
    head: str


class SocketServer:
    """A TCP server on 127.0.0.1 run by its own thread and event loop; `_serve` handles a connection."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _stop(self) -> None:
        self._server.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class RawServer(SocketServer):
    """An HTTP server that answers each request with the bytes `script` gives (`None`: close the
    connection without answering). It records every request and connection."""

    def __init__(self, script: Callable[[Received], Reply | None]) -> None:
        super().__init__()
        self.script = script
        self.received: list[Received] = []
        self.connections = 0
        self.open_connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        number = self.connections
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")), 0)
                await reader.readexactly(length)
                received = Received(number, head)
                self.received.append(received)
                reply = self.script(received)
                if reply is None:
                    break
                for part in reply.parts:
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.02)
                if reply.reset:
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                if reply.close or reply.reset:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.open_connections -= 1


def requests(url: str, count: int = 1, *, cap: int = 1 << 20, timeout: float = 5.0, pause: float = 0.0, proxy: str | None = None) -> list[Response | Failure]:
    """`count` GETs of `url`, one after another on one `Http`, each a `Response` or a `Failure`."""

    async def main() -> list[Response | Failure]:
        http, results = Http(timeout), []
        try:
            for _ in range(count):
                try:
                    results.append(await http.request("GET", url + "/info", {"accept": "application/json"}, cap=cap, proxy=proxy))
                except Failure as failure:
                    results.append(failure)
                await asyncio.sleep(pause)
        finally:
            await http.aclose()
        return results

    return asyncio.run(main())


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


FRAMINGS = {
    "length, in one piece": with_length(),
    "length, a byte at a time": Reply(byte_by_byte(with_length().parts[0])),
    "chunks with an extension and a trailer": Reply(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"5;name=value\r\n", b'{"tex', b"\r\nc\r\n", b't": "hello"}\r\n', b"0\r\nX-Checksum: 1\r\n\r\n"]
    ),
    "chunks, a byte at a time": Reply(byte_by_byte(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n{"text": "hello"}\r\n0\r\n\r\n')),
    "HTTP/1.0, up to the connection's end": Reply([b"HTTP/1.0 200 OK\r\n\r\n", ANSWER], close=True),
    "after an interim 100 Continue": Reply([b"HTTP/1.1 100 Continue\r\n\r\n", with_length().parts[0]]),
    "after 103 Early Hints": Reply([b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", with_length().parts[0]]),
    "Transfer-Encoding: identity, up to the connection's end": Reply([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", ANSWER], close=True),
}


@pytest.mark.parametrize("framing", FRAMINGS, ids=list(FRAMINGS))
def test_every_framing_of_an_answer_reads_the_same_body(framing: str) -> None:
    with RawServer(lambda received: FRAMINGS[framing]) as server:
        (response,) = requests(server.url)
    assert isinstance(response, Response), response
    assert (response.status, response.body) == (200, ANSWER)


def test_headers_are_read_by_lower_case_name_and_repeated_ones_joined() -> None:
    reply = Reply([b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nVia: a\r\nVia: b\r\nContent-Length: 0\r\n\r\n"])
    with RawServer(lambda received: reply) as server:
        (response,) = requests(server.url)
    assert (response.status, response.body, response.headers["retry-after"], response.headers["via"]) == (429, b"", "3", "a, b")


def test_one_connection_carries_every_call_in_turn() -> None:
    with RawServer(lambda received: with_length()) as server:
        responses = requests(server.url, 3)
    assert [r.body for r in responses] == [ANSWER] * 3
    assert server.connections == 1
    assert server.received[0].head.startswith("GET /info HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "accept: application/json\r\n" in server.received[0].head
    # Some firewalls refuse a request without a User-Agent; nothing here decompresses an answer.
    assert "User-Agent: coevol-hf/" in server.received[0].head and "Accept-Encoding: identity\r\n" in server.received[0].head


def test_a_connection_the_server_closed_while_idle_costs_no_failed_call() -> None:
    # The server closes the first connection as the second request arrives on it, unanswered: the
    # request goes again, once, on a new connection. A server closing idle connections does this.
    with RawServer(lambda received: with_length() if received.connection > 1 or received is server.received[0] else None) as server:
        responses = requests(server.url, 2)
    assert [r.body for r in responses] == [ANSWER, ANSWER]
    assert [(r.connection, r.head.split()[1]) for r in server.received] == [(1, "/info"), (1, "/info"), (2, "/info")]


def test_a_connection_closed_after_each_answer_is_not_used_again() -> None:
    with RawServer(lambda received: dataclasses.replace(with_length(), close=True)) as server:
        responses = requests(server.url, 3, pause=0.1)
    assert [r.body for r in responses] == [ANSWER] * 3
    assert server.connections == 3


def test_a_server_that_never_answers_fails_the_call_after_one_new_connection() -> None:
    with RawServer(lambda received: with_length() if received is server.received[0] else None) as server:
        first, second = requests(server.url, 2)
    assert first.body == ANSWER
    assert (second.kind, second.outcome) == ("connection", Outcome.LOST)
    assert "closed it without answering" in str(second)
    assert len(server.received) == 3  # the first call; the second on the kept connection, then once on a new one


def test_a_request_the_server_held_then_dropped_is_not_sent_again() -> None:
    # Dropped after longer than a stale connection's end takes: the server may have begun on it.
    def script(received: Received) -> Reply | None:
        if received is server.received[0]:
            return with_length()
        time.sleep(1.5)  # the server's own loop: nothing else is served meanwhile
        return None

    with RawServer(script) as server:
        first, second = requests(server.url, 2)
    assert first.body == ANSWER
    assert (second.kind, second.outcome, len(server.received)) == ("connection", Outcome.LOST, 2)


def test_a_server_hanging_up_on_every_new_connection_fails_each_call_at_once() -> None:
    # As a container's port proxy does while the server behind it starts: not a slow answer.
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                listener.accept()[0].close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        failures = requests(f"http://127.0.0.1:{listener.getsockname()[1]}", 10, timeout=2.0)
    finally:
        listener.close()
    # Ended before the request went out (refused: nothing was sent), or just after it (lost);
    # never a wait for a connection or an answer.
    refused = ("connection", Outcome.REFUSED, "the server ended the connection before the request was sent")
    for failure in failures:
        lost = (failure.kind, failure.outcome) == ("connection", Outcome.LOST) and failure.args[0].startswith("the connection failed (")
        assert (failure.kind, failure.outcome, failure.args[0]) == refused or lost, failure


def test_a_reset_before_the_end_of_an_answer_framed_by_the_end_is_no_answer() -> None:
    reply = Reply([b"HTTP/1.0 200 OK\r\n\r\n", b'{"text": "The answer is 4'], reset=True)
    with RawServer(lambda received: reply) as server:
        (failure,) = requests(server.url)
    assert isinstance(failure, Failure) and (failure.kind, failure.outcome) == ("connection", Outcome.LOST)


def test_an_answer_with_both_a_length_and_chunks_retires_its_connection() -> None:
    reply = Reply([b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n11\r\n{"text": "hello"}\r\n0\r\n\r\n'])
    with RawServer(lambda received: reply) as server:
        responses = requests(server.url, 2)
    assert [r.body for r in responses] == [ANSWER, ANSWER]
    assert server.connections == 2


def test_each_event_loop_closes_its_own_connections() -> None:
    # Two loops, in two threads, take turns on one Http; each closes what it opened.
    http = Http(5.0)
    loops = [asyncio.new_event_loop() for _ in range(2)]
    threads = [threading.Thread(target=loop.run_forever, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()

    def on(loop: asyncio.AbstractEventLoop, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, loop).result(10)

    with RawServer(lambda received: with_length()) as server:
        for _ in range(3):
            for loop in loops:
                assert on(loop, http.request("GET", server.url + "/info", {}, cap=1024)).body == ANSWER
        assert server.connections == 2  # one per loop, each kept alive across the turns
        for loop in loops:
            on(loop, http.aclose())
        time.sleep(0.2)
        assert server.open_connections == 0
    for loop in loops:
        loop.call_soon_threadsafe(loop.stop)


def test_an_answer_exactly_as_large_as_the_cap_is_read() -> None:
    with RawServer(lambda received: with_length(b"x" * 4096)) as server:
        (response,) = requests(server.url, cap=4096)
    assert response.body == b"x" * 4096


RETIRING = {
    "bytes after the answer": with_length(extra=b"HTTP/1.1 200 OK\r\n"),
    "bytes after a chunked answer's trailer": Reply([b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n{"text": "hello"}\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n']),
    "Connection: close, before the server has closed": Reply([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 17\r\n\r\n" + ANSWER]),
}


@pytest.mark.parametrize("reply", RETIRING, ids=list(RETIRING))
def test_a_connection_left_out_of_step_or_closing_is_not_used_again(reply: str) -> None:
    with RawServer(lambda received: RETIRING[reply]) as server:
        responses = requests(server.url, 2)
    assert [r.body for r in responses] == [ANSWER, ANSWER]
    assert server.connections == 2


BROKEN = {
    "not HTTP": (Reply([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"]), "bad_response", Outcome.ERROR, "not HTTP/1.1: it starts 'SSH-2.0-OpenSSH_9.6'"),
    "a bad chunk size": (Reply([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x11\r\n"]), "bad_response", Outcome.ERROR, "a chunk's size reads b'0x11'"),
    "a bad length": (Reply([b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"]), "bad_response", Outcome.ERROR, "its Content-Length is '-5'"),
    "cut short": (Reply([b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"text\""], close=True), "connection", Outcome.LOST, "closed it mid-answer"),
    "larger than the cap": (with_length(b"x" * 5000), "bad_response", Outcome.ERROR, "larger than 4 KiB"),
    # Refused by its head: no byte of the body is sent, so waiting for it would end at the deadline.
    "a length larger than the cap, unsent": (Reply([b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"]), "bad_response", Outcome.ERROR, "larger than 4 KiB"),
    "a length of 5,000 digits": (Reply([b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"]), "bad_response", Outcome.ERROR, "larger than 4 KiB"),
    "a header with a space before its colon": (Reply([b"HTTP/1.1 200 OK\r\nContent-Length : 17\r\n\r\n" + ANSWER]), "bad_response", Outcome.ERROR, "a header line reads 'Content-Length : 17'"),
    "a chunk without its CRLF": (Reply([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"]), "bad_response", Outcome.ERROR, "a chunk does not end with CRLF"),
    "an endless chunk-size line": (Reply([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000]), "bad_response", Outcome.ERROR, "a chunk's size line has no end"),
    "an empty chunk-size line": (Reply([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n"]), "bad_response", Outcome.ERROR, "a chunk's size reads b''"),
    "an endless head": (Reply([b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000]), "bad_response", Outcome.ERROR, "no end of its head in 64 KiB"),
    "a four-digit status": (Reply([b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"]), "bad_response", Outcome.ERROR, "it starts 'HTTP/1.1 2000 OK'"),
    "an HTTP/2 status line": (Reply([b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n"]), "bad_response", Outcome.ERROR, "it starts 'HTTP/2 200'"),
    "a length in superscript digits": (Reply([b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n"]), "bad_response", Outcome.ERROR, "its Content-Length is '\xb2'"),
    "chunks larger than the cap": (Reply([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + [b"400\r\n" + b"x" * 1024 + b"\r\n"] * 5), "bad_response", Outcome.ERROR, "larger than 4 KiB"),
}


@pytest.mark.parametrize("broken", BROKEN, ids=list(BROKEN))
def test_an_answer_that_breaks_http_fails_the_call_with_what_broke(broken: str) -> None:
    reply, kind, outcome, text = BROKEN[broken]
    with RawServer(lambda received: reply) as server:
        (failure,) = requests(server.url, cap=4096)
    assert isinstance(failure, Failure), failure
    assert (failure.kind, failure.outcome) == (kind, outcome)
    assert text in str(failure)


# -- TLS and proxies -------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context whose self-signed certificate names 127.0.0.1 and tgi.test, trusted
    through `SSL_CERT_FILE` as a private CA would be."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=tgi.test"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:tgi.test"],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_calls_over_https_to_a_certificate_trusted_by_ssl_cert_file(certificate: ssl.SSLContext, tmp_path: Path) -> None:
    with TGIServer(ssl_context=certificate) as server:
        session = session_of(server.url, tmp_path, token="sekret")
        assert session.server().model_id == "test-org/test-model"
        assert call(session, "Hello?").text
    assert [c.headers.get("Authorization") for c in server.calls] == ["Bearer sekret"]


class ForwardingProxy(SocketServer):
    """An HTTP proxy that sends every request, and every CONNECT tunnel, to one upstream port on
    127.0.0.1 (whatever host was asked for: no name is ever resolved). It records what it was
    sent in clear, and answers 407 to the requests and tunnels `refuse` picks by their head."""

    def __init__(self, upstream_port: int, *, refuse: Callable[[str], bool] = lambda head: False) -> None:
        super().__init__()
        self.upstream_port, self.refuse = upstream_port, refuse
        self.heads: list[str] = []
        self.clear_bytes = bytearray()  # everything the client sent that the proxy could read

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()
            return
        self.heads.append(head.decode("latin-1"))
        tunnel = head.startswith(b"CONNECT ")
        if self.refuse(head.decode("latin-1")):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        if tunnel:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            self.clear_bytes += head
            up_writer.write(head)
        await asyncio.gather(self._pipe(reader, up_writer, record=not tunnel), self._pipe(up_reader, writer, record=False))

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, record: bool) -> None:
        try:
            while data := await source.read(65536):
                if record:
                    self.clear_bytes += data
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        sink.close()


def use_proxy(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("HTTPS_PROXY", proxy)


def test_calls_to_a_plain_http_endpoint_go_through_the_proxy_with_its_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TGIServer() as server, ForwardingProxy(int(server.url.rsplit(":", 1)[1])) as proxy:
        use_proxy(monkeypatch, f"http://someone:p%40ss@127.0.0.1:{proxy.port}")
        endpoint = "http://tgi.test:" + server.url.rsplit(":", 1)[1]
        session = session_of(endpoint, tmp_path)
        assert session.server().model_id == "test-org/test-model"
        assert call(session, "Hello?").text
    credentials = base64.b64encode(b"someone:p@ss").decode()
    assert proxy.heads[0].startswith(f"GET {endpoint}/info HTTP/1.1\r\nHost: tgi.test:")
    assert all(f"Proxy-Authorization: Basic {credentials}\r\n" in head for head in proxy.heads)
    assert f"POST {endpoint}/v1/chat/completions HTTP/1.1".encode() in proxy.clear_bytes
    assert len(server.calls) == 1


def test_calls_to_an_https_endpoint_go_through_a_proxy_tunnel_that_never_sees_the_token(
    certificate: ssl.SSLContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TGIServer(ssl_context=certificate) as server, ForwardingProxy(int(server.url.rsplit(":", 1)[1])) as proxy:
        use_proxy(monkeypatch, f"http://someone:secret@127.0.0.1:{proxy.port}")
        port = server.url.rsplit(":", 1)[1]
        session = session_of(f"https://tgi.test:{port}", tmp_path, token="sekret-endpoint-token")
        assert session.server().model_id == "test-org/test-model"
        assert call(session, "Hello?").text
    credentials = base64.b64encode(b"someone:secret").decode()
    assert proxy.heads and all(head.startswith(f"CONNECT tgi.test:{port} HTTP/1.1\r\n") for head in proxy.heads)
    assert all(f"Proxy-Authorization: Basic {credentials}\r\n" in head for head in proxy.heads)
    assert b"sekret-endpoint-token" not in proxy.clear_bytes and "sekret-endpoint-token" not in "".join(proxy.heads)
    assert [c.headers.get("Authorization") for c in server.calls] == ["Bearer sekret-endpoint-token"]
    assert all("Proxy-Authorization" not in c.headers for c in server.calls)


def test_a_proxy_refusing_the_tunnel_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ForwardingProxy(9, refuse=lambda head: True) as proxy:
        use_proxy(monkeypatch, f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(EndpointError, match=rf"the proxy 127.0.0.1:{proxy.port} refused a tunnel to tgi.test:443 \(HTTP 407\)"):
            session_of("https://tgi.test", tmp_path).server()


def test_a_proxy_asking_for_credentials_stops_the_run_with_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TGIServer() as server, ForwardingProxy(int(server.url.rsplit(":", 1)[1]), refuse=lambda head: head.startswith("POST")) as proxy:
        use_proxy(monkeypatch, f"http://127.0.0.1:{proxy.port}")
        session = session_of("http://tgi.test:" + server.url.rsplit(":", 1)[1], tmp_path, max_retries=0)
        session.server()  # its GETs go through
        results = outcomes(session, [f"call {i}" for i in range(5)])
    assert [type(r).__name__ for r in results] == ["RowError", "RowError", "EndpointError"]
    assert "the last 3 calls all failed with proxy: HTTP 407" in str(results[-1])
    assert "Check the credentials in HTTP_PROXY / HTTPS_PROXY, or add the endpoint's host to NO_PROXY." in str(results[-1])
    assert server.calls == []


def test_a_probe_through_a_proxy_asking_for_credentials_says_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ForwardingProxy(9, refuse=lambda head: True) as proxy:
        use_proxy(monkeypatch, f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(EndpointError, match=r"^http://tgi.test/info: the proxy answered 407 \(Proxy Authentication Required\)\. Check the credentials"):
            session_of("http://tgi.test", tmp_path).server()


def test_the_tunnels_certificate_is_checked_against_the_endpoints_name(certificate: ssl.SSLContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The certificate names tgi.test and 127.0.0.1, the proxy's address, but not other.test.
    with TGIServer(ssl_context=certificate) as server, ForwardingProxy(int(server.url.rsplit(":", 1)[1])) as proxy:
        use_proxy(monkeypatch, f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(EndpointError, match=r"the TLS handshake failed \(SSLCertVerificationError: .*Hostname mismatch"):
            session_of("https://other.test:" + server.url.rsplit(":", 1)[1], tmp_path).server()
        assert server.probes == []


def test_a_proxy_that_never_answers_the_tunnel_request_is_a_connection_failure() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()

    try:
        (failure,) = requests("https://tgi.test", timeout=2.0, proxy=f"http://127.0.0.1:{listener.getsockname()[1]}")
    finally:
        for sock in (*held, listener):
            sock.close()
    assert (failure.kind, failure.outcome, str(failure)) == ("connection", Outcome.REFUSED, "connection: no connection within 1 s")


def test_no_proxy_keeps_its_hosts_off_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    use_proxy(monkeypatch, "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "tgi.test,.internal")
    assert [proxy_for(url) for url in ("https://tgi.test", "http://gpu.internal:8080", "https://other.test")] == [None, None, "http://127.0.0.1:3128"]


def test_a_server_requiring_a_client_certificate_is_a_tls_failure(certificate: ssl.SSLContext, tmp_path: Path) -> None:
    # TLS 1.3 refuses a missing client certificate after the client's side of the handshake,
    # when the client may already have sent its request.
    certificate.verify_mode = ssl.CERT_REQUIRED
    certificate.load_verify_locations(os.environ["SSL_CERT_FILE"])
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse_without_certificate() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                tls = certificate.wrap_socket(listener.accept()[0], server_side=True, do_handshake_on_connect=False)
                with contextlib.suppress(ssl.SSLError):
                    tls.do_handshake()  # sends the alert
                connection = socket.socket(fileno=tls.detach())
                connection.shutdown(socket.SHUT_WR)  # what the client sent is drained first: no reset
                connection.settimeout(5)
                while connection.recv(65536):
                    pass
                connection.close()

    threading.Thread(target=refuse_without_certificate, daemon=True).start()
    try:
        with pytest.raises(EndpointError, match=r"the TLS handshake failed \(SSLError: .*CERTIFICATE_REQUIRED") as caught:
            session_of(f"https://127.0.0.1:{listener.getsockname()[1]}", tmp_path).server()
    finally:
        listener.close()
    assert "Start the server" not in str(caught.value)


def test_closing_leaves_no_tls_connection_open(certificate: ssl.SSLContext) -> None:
    with TGIServer(ssl_context=certificate) as server:
        port = int(server.url.rsplit(":", 1)[1])

        async def main() -> None:
            http = Http(5.0)
            for _ in range(2):
                assert (await http.request("GET", server.url + "/info", {}, cap=1 << 20)).status == 200
            await http.aclose()

        asyncio.run(main())
        assert established_to(port) == 0  # the sockets closed with the loop, not later by the garbage collector


def established_to(port: int) -> int:
    """This machine's TCP connections to `port` that are open (Linux's /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[2].endswith(f":{port:04X}") and line.split()[3] == "01")


@pytest.mark.parametrize("proxy", ["socks5://127.0.0.1:1080", "https://127.0.0.1:3128", "http://127.0.0.1:99999", "http://someone:secret@:3128"])
def test_a_proxy_that_is_not_plain_http_is_refused_before_any_request(proxy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_proxy(monkeypatch, proxy)
    with pytest.raises(ConfigError, match=r"The proxy set by HTTPS_PROXY \(.*\) is not an http://host:port address") as caught:
        session_of("https://tgi.test", tmp_path).server()
    assert "secret" not in str(caught.value)
