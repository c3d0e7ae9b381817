"""One process's connection to the replicas of one model.

The session owns what every call of a run shares: what the endpoints serve (probed once, and
again on `server(refresh=True)`), the HTTP client with its pool, the request cache and the
counters. It pickles as its options and what was probed, never as a socket.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ConfigError, EndpointError
from ..options import Connection, Sampling
from ..protocol import Reply
from .server import ServerInfo, probe_server
from .tgi import EndpointClient


class ClientSession:
    """Calls for one run: `await session(messages, schema=...)` returns a `Reply`."""

    def __init__(self, connection: Connection, sampling: Sampling) -> None:
        self.connection = connection
        self.sampling = sampling
        self._server: ServerInfo | None = None
        self._probed: dict[str, ServerInfo | None] = {}
        self._client: EndpointClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"connection": self.connection, "sampling": self.sampling, "server": self._server, "probed": self._probed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["connection"], state["sampling"])
        self._server, self._probed = state["server"], state["probed"]

    def server(self, *, refresh: bool = False) -> ServerInfo:
        """What the endpoints serve: every endpoint that answers must serve the same model.

        One that does not answer is left out for now and probed again during the run.
        """
        if self._server is not None and not refresh:
            return self._server
        probed: dict[str, ServerInfo | None] = {}
        errors: list[EndpointError] = []
        for endpoint in self.connection.endpoints:
            try:
                probed[endpoint] = probe_server(endpoint, self.connection.token)
            except EndpointError as err:
                probed[endpoint] = None
                errors.append(err)
        answered = {url: info for url, info in probed.items() if info is not None}
        if not answered:
            raise errors[0] if len(errors) == 1 else EndpointError("No endpoint answers: " + " | ".join(map(str, errors)))
        if len({(info.identity, info.kind) for info in answered.values()}) > 1:
            listing = ", ".join(f"{url} serves {info.identity!r} ({info.kind})" for url, info in answered.items())
            raise ConfigError(f"The endpoints must be replicas of one model and server kind: {listing}.")
        server = next(iter(answered.values()))
        model = self.sampling.model
        if model is not None and model not in (server.model_id, server.identity):
            raise ConfigError(
                f"model={model!r} was asked for, but {', '.join(answered)} "
                f"{'serves' if len(answered) == 1 else 'serve'} {server.identity!r}. Point endpoint= at the right server or change model=."
            )
        self._server, self._probed = server, probed
        return server

    async def __call__(self, messages: Sequence[dict[str, str]], *, schema: dict | None = None) -> Reply:
        if self._client is None:
            self._client = EndpointClient(self.connection, self.sampling, self.server(), self._probed)
        return await self._client(messages, schema=schema)

    @property
    def calls_sent(self) -> int:
        return self._client.calls_made if self._client is not None else 0

    @property
    def cache_hits(self) -> int:
        return self._client.cache_hits if self._client is not None else 0

    @property
    def cache_misses(self) -> int:
        return self._client.cache_misses if self._client is not None else 0

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
