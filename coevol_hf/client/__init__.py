"""Talking to LLM servers: what an endpoint serves, and the calls themselves."""

from .server import ServerInfo, probe_server, request_headers
from .tgi import EndpointClient

__all__ = ["EndpointClient", "ServerInfo", "probe_server", "request_headers"]
