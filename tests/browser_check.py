"""Headless Chromium over the DevTools protocol: open a page, read its console errors and the
URLs it requested, evaluate script in it, take a screenshot, and tell a blank PNG from a drawn one.

Uses Debian's `chromium` and aiohttp (a test dependency already): no browser-driver package.
Also a script, to time a report in the browser:

    python tests/browser_check.py coevol-demo/report.html
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

# Without the background-networking flags Chromium calls Google's hosts on start.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
INSTALL_HINT = "apt-get update && apt-get install -y chromium (.ci/run does it when it runs as root)"


def chromium() -> str | None:
    """The Chromium executable, or None where it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one tab: `async with Browser() as browser: await browser.open(url)`."""

    def __init__(self, executable: str | None = None, *, width: int = 1200, height: int = 900) -> None:
        self.executable = executable or chromium()
        if self.executable is None:
            raise FileNotFoundError(f"Chromium is not installed: {INSTALL_HINT}")
        self.width, self.height = width, height
        self.console_errors: list[str] = []
        self.requested: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._loaded = asyncio.Event()

    async def __aenter__(self) -> "Browser":
        self._profile = Path(tempfile.mkdtemp(prefix="coevol-chromium-"))
        self._process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes too can be stopped as one group
        )
        port = await self._port(self._profile / "DevToolsActivePort")
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as answer:
            tab = next(target for target in await answer.json() if target["type"] == "page")
        self._socket = await self._http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._reader.cancel()
        await self._socket.close()
        await self._http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        for _ in range(50):  # a helper process may still be writing to the profile as it exits
            try:
                shutil.rmtree(self._profile)
                return
            except FileNotFoundError:
                return
            except OSError:
                await asyncio.sleep(0.1)
        shutil.rmtree(self._profile)

    async def _port(self, announced: Path, timeout: float = 60) -> int:
        """Chromium writes the port it chose in the profile once it listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if announced.is_file() and announced.read_text().strip():
                return int(announced.read_text().splitlines()[0])
            if self._process.poll() is not None:
                raise RuntimeError(f"Chromium exited with code {self._process.returncode} before listening")
            await asyncio.sleep(0.1)
        raise TimeoutError("Chromium did not open its DevTools port")

    async def _read(self) -> None:
        async for message in self._socket:
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"])
                if "error" in data:
                    future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            else:
                self._event(data["method"], data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.console_errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.console_errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            self.requested.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self._loaded.set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        self._pending[number] = asyncio.get_running_loop().create_future()
        await self._socket.send_json({"id": number, "method": method, "params": params})
        return await asyncio.wait_for(self._pending[number], 120)

    async def open(self, url: str, timeout: float = 120) -> None:
        self._loaded.clear()
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of an expression in the page (a promise is awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self) -> bytes:
        """The visible part of the page as PNG bytes."""
        return base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"])


def png_colours(png: bytes) -> int:
    """How many distinct colours an 8-bit RGB or RGBA, non-interlaced PNG has (1 for a blank page)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks: dict[bytes, list[bytes]] = {}
    offset = 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        chunks.setdefault(png[offset + 4 : offset + 8], []).append(png[offset + 8 : offset + 8 + length])
        offset += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, "only 8-bit RGB(A), non-interlaced"
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, previous, channels)
        colours.update(bytes(line[x : x + channels]) for x in range(0, stride, channels))
        previous = line
    return len(colours)


def _unfilter(kind: int, line: bytearray, previous: bytearray, step: int) -> None:
    """Undo one scanline's PNG filter in place (PNG spec, section 9)."""
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, previous))
        return
    for x in range(len(line)):
        left = line[x - step] if x >= step else 0
        up = previous[x]
        if kind == 1:
            line[x] = (line[x] + left) & 0xFF
        elif kind == 3:
            line[x] = (line[x] + (left + up) // 2) & 0xFF
        else:
            corner = previous[x - step] if x >= step else 0
            guess = left + up - corner
            nearest = min((abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner))[2]
            line[x] = (line[x] + nearest) & 0xFF


async def _time(path: Path) -> None:
    async with Browser() as browser:
        started = time.perf_counter()
        await browser.open(path.resolve().as_uri())
        rendered = await browser.evaluate("document.body.dataset.renderedMs")
        wall = time.perf_counter() - started
        shown = await browser.evaluate("document.querySelectorAll('article.row').length")
        total = await browser.evaluate("ROWS.length")
        print(
            f"{path}: {path.stat().st_size / 1e6:.1f} MB; rendered {rendered} ms after navigation start "
            f"(load event after {wall * 1000:.0f} ms); {shown} of {total} rows on the first page; "
            f"console errors: {browser.console_errors or 'none'}"
        )


if __name__ == "__main__":
    asyncio.run(_time(Path(sys.argv[1])))
