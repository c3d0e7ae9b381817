"""Finding out what is behind an endpoint: TGI (`/info`) or another Messages API server (`/v1/models`).

The answer decides the request shape (TGI takes `model: "tgi"` and its own structured-output
form) and names the served model, which is part of the fingerprint and of every row's output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal
from urllib.parse import urlparse

import httpx2
from huggingface_hub import get_token
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import get_session

from ..errors import EndpointError

ServerKind = Literal["tgi", "openai"]

# Hosts where the user's Hugging Face token is the expected credential.
_HF_HOST_SUFFIXES = (".huggingface.co", ".hf.space", ".huggingface.cloud")
_PROBE_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    kind: ServerKind
    model_id: str
    model_sha: str | None = None
    version: str | None = None
    max_concurrent_requests: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None

    @property
    def identity(self) -> str:
        """`model_id@revision` when the server says its revision, else the model id."""
        return f"{self.model_id}@{self.model_sha}" if self.model_sha else self.model_id

    @property
    def request_model(self) -> str:
        """The `model` field to send: TGI reads anything but "tgi" as a LoRA adapter id."""
        return "tgi" if self.kind == "tgi" else self.model_id


def request_headers(endpoint: str, token: str | None) -> dict[str, str]:
    """Headers that send a token only where it belongs.

    The locally saved `HF_TOKEN` goes only to Hugging Face hosts (huggingface_hub's inference
    client would send it to any URL); any other server gets the token the user passed, or none.
    """
    if token is None and _is_hf_host(endpoint):
        token = get_token()
    return {"authorization": f"Bearer {token}"} if token else {}


def probe_server(endpoint: str, token: str | None, timeout: float = _PROBE_TIMEOUT) -> ServerInfo:
    """Ask the endpoint what it serves; raise `EndpointError` with a way out if nothing answers."""
    headers = request_headers(endpoint, token)
    info = _get_json(endpoint, "/info", headers, timeout)
    if isinstance(info, dict) and isinstance(info.get("model_id"), str):
        return ServerInfo(
            kind="tgi",
            model_id=info["model_id"],
            model_sha=info.get("model_sha"),
            version=info.get("version"),
            max_concurrent_requests=info.get("max_concurrent_requests"),
            max_input_tokens=info.get("max_input_tokens"),
            max_total_tokens=info.get("max_total_tokens"),
        )
    models = _get_json(endpoint, "/v1/models", headers, timeout)
    data = models.get("data") if isinstance(models, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict) and isinstance(data[0].get("id"), str):
        return ServerInfo(kind="openai", model_id=data[0]["id"])
    raise EndpointError(
        f"{endpoint} does not look like an LLM server: neither GET /info (TGI) nor GET /v1/models "
        "(Messages API servers such as vLLM or llama.cpp) named a model. Check the URL."
    )


def check_health(endpoint: str, token: str | None, timeout: float = _PROBE_TIMEOUT) -> None:
    """Raise `EndpointError` unless GET /health says the server can generate.

    TGI answers 200 only after a one-token generation succeeds, else 503; vLLM and llama.cpp
    have the route too. A server without it (404) is judged by its other answers.
    """
    response = _get(endpoint, "/health", request_headers(endpoint, token), timeout)
    if response.status_code not in (200, 404):
        raise EndpointError(f"{endpoint}/health answered {response.status_code}")


def _get(endpoint: str, route: str, headers: dict[str, str], timeout: float) -> httpx2.Response:
    try:
        return get_session().get(endpoint + route, headers=headers, timeout=timeout)
    except OfflineModeIsEnabled:
        raise EndpointError(
            "HF_HUB_OFFLINE=1 makes huggingface_hub, whose HTTP client coevol-hf uses, refuse every URL, "
            f"{endpoint} included. Unset it for this run (HF_DATASETS_OFFLINE=1 keeps datasets offline)."
        ) from None
    except httpx2.TransportError as err:
        raise EndpointError(
            f"Cannot reach {endpoint} ({type(err).__name__}). Start the server, or point "
            "COEVOL_ENDPOINT / endpoint= at a running one."
        ) from None


def _get_json(endpoint: str, route: str, headers: dict[str, str], timeout: float) -> Any:
    response = _get(endpoint, route, headers, timeout)
    if response.status_code == 401:
        raise EndpointError(f"{endpoint}{route} answered 401 Unauthorized: pass token= for this endpoint.")
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _is_hf_host(endpoint: str) -> bool:
    host = (urlparse(endpoint).hostname or "").lower()
    return host == "huggingface.co" or host.endswith(_HF_HOST_SUFFIXES)
