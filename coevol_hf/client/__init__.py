"""Talking to LLM servers: what an endpoint serves, and the calls themselves."""

from .server import ServerInfo, auth_headers, probe_server
from .tgi import EndpointClient

__all__ = ["EndpointClient", "ServerInfo", "auth_headers", "probe_server"]
