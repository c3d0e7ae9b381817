"""Talking to LLM servers: the client session, what an endpoint serves, what it may be sent."""

from .server import ServerInfo, auth_headers
from .session import ClientSession

__all__ = ["ClientSession", "ServerInfo", "auth_headers"]
