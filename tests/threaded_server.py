"""An aiohttp app served on 127.0.0.1 by its own thread and event loop, for the test servers."""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any

from aiohttp import web


class ThreadedServer:
    """Use as `with Server() as server:`; `server.url` is set once it listens."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context  # serve https with it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.url = ""

    def app(self) -> web.Application:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's loop from another thread, and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self.ssl_context)
        await self._site.start()
        scheme = "https" if self.ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._site._server.sockets[0].getsockname()[1]}"
