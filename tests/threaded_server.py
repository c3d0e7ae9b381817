"""An aiohttp app served on 127.0.0.1 by its own thread and event loop, for the test servers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web


class ThreadedServer:
    """Use as `with Server() as server:`; `server.url` is set once it listens."""

    def __init__(self) -> None:
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

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        self.url = f"http://127.0.0.1:{self._site._server.sockets[0].getsockname()[1]}"
