"""What is behind an endpoint, and what may be sent to it.

TGI answers `GET /info` (model id and revision, limits); other Messages API servers (vLLM,
SGLang, llama.cpp, Ollama, LiteLLM) answer `GET /v1/models`. The answer decides the request shape
(TGI takes `model: "tgi"` and its own structured-output form) and names the served model, which
is part of the fingerprint, of every request cache key and of every row's output.

Tokens: a token the user passes goes to the endpoints given with it, but never in clear text
over the network. The user's saved Hugging Face token goes only to Hugging Face's own API hosts
(`huggingface.co` and its subdomains) over https: a Space (`*.hf.space`) runs its owner's code,
and an Inference Endpoint (`*.endpoints.huggingface.cloud`) is someone's server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from ..errors import ConfigError, EndpointError
from ..options import Sampling, is_header_safe
from .http import Failure, Http, deadline, is_loopback, proxy_for

logger = logging.getLogger(__name__)
_WARNED_PATHS: set[str] = set()
_ENDPOINT_MOUNT = "/repository"  # where Inference Endpoints mount a model: TGI's model_id there, and nothing private

ServerKind = Literal["tgi", "openai"]
PROBE_TIMEOUT = 10.0
_PROBE_DEADLINE = deadline(PROBE_TIMEOUT)
_PROBE_CAP = 4 << 20  # a /v1/models listing of a large router fits many times over
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE
PROXY_HINT = "Check the credentials in HTTP_PROXY / HTTPS_PROXY, or add the endpoint's host to NO_PROXY."


def model_identity(model_id: str, revision: str | None) -> str:
    """What names a model in fingerprints, cache keys and rows: `model_id@revision` when a
    revision is known, else the model id."""
    return f"{model_id}@{revision}" if revision else model_id


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """What one endpoint serves. `model_sha` is TGI's revision, else the user's `model_revision`."""

    kind: ServerKind
    model_id: str
    model_sha: str | None = None
    version: str | None = None
    max_concurrent_requests: int | None = None
    max_total_tokens: int | None = None  # prompt and answer together, per request

    @property
    def identity(self) -> str:
        return model_identity(self.model_id, self.model_sha)

    @property
    def request_model(self) -> str:
        """The `model` field to send: TGI reads anything but "tgi" as a LoRA adapter id."""
        return "tgi" if self.kind == "tgi" else self.model_id


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one endpoint's requests go, with the headers it may get (never pickled: a token)."""

    url: str
    headers: Mapping[str, str] = dataclasses.field(repr=False)
    proxy: str | None = None

    @classmethod
    def of(cls, url: str, token: str | None) -> "Target":
        return cls(url, auth_headers(url, token), proxy_for(url))


def auth_headers(endpoint: str, token: str | None) -> dict[str, str]:
    """The `authorization` header this endpoint may get, by the rules in the module docstring.

    Raises `ConfigError` for a token that would cross the network in clear text.
    """
    parts = urlsplit(endpoint)
    if token is not None:
        if parts.scheme != "https" and not is_loopback(endpoint):
            raise ConfigError(
                f"token= would travel in clear text to {endpoint}: use an https:// address, or a loopback "
                "one (127.0.0.1) for a server on this machine."
            )
        return {"authorization": f"Bearer {token}"}
    if parts.scheme == "https" and is_hf_api_host(endpoint):
        from huggingface_hub import get_token

        saved = get_token()
        if saved and not is_header_safe(saved):
            raise ConfigError("The saved Hugging Face token holds a space, a line break, a control or non-ASCII character: log in again (`hf auth login`), or pass token=.")
        if saved:
            return {"authorization": f"Bearer {saved}"}
    return {}


def is_hf_api_host(endpoint: str) -> bool:
    """Hugging Face's own hosts (`router.huggingface.co`, `api-inference.huggingface.co`)."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return host == "huggingface.co" or host.endswith(".huggingface.co")


async def probe(http: Http, target: Target, sampling: Sampling) -> ServerInfo:
    """What the endpoint serves, with `sampling.model` / `model_revision` applied.

    Raises `EndpointError` if nothing usable answers, `ConfigError` if it does not serve the
    model asked for.
    """
    url = target.url
    if is_hf_api_host(url) and os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        raise EndpointError(f"HF_HUB_OFFLINE=1 forbids contacting Hugging Face, and {url} is one of its hosts. Unset it for this run.")
    info = await _get_json(http, target, "/info")
    if isinstance(info, dict) and isinstance(info.get("model_id"), str):
        server = ServerInfo(
            kind="tgi",
            model_id=info["model_id"],
            model_sha=info.get("model_sha") if isinstance(info.get("model_sha"), str) and info.get("model_sha") else None,
            version=info.get("version") if isinstance(info.get("version"), str) else None,
            max_concurrent_requests=_limit(info, "max_concurrent_requests", url),
            max_total_tokens=_limit(info, "max_total_tokens", url),
        )
        if server.max_total_tokens is not None and sampling.max_new_tokens >= server.max_total_tokens:
            # TGI refuses every such request (422): say so once, before any row is sent.
            raise ConfigError(
                f"max_new_tokens={sampling.max_new_tokens} leaves no room for a prompt: {url} allows {server.max_total_tokens} "
                "tokens per request, prompt and answer together (its --max-total-tokens). Pass a smaller max_new_tokens."
            )
        _warn_if_local_path(server.model_id, url)
        return _pin_tgi(server, sampling, url)
    listing = await _get_json(http, target, "/v1/models")
    # OpenAI's shape lists the models ({"data": [{"id": ...}]}); TGI's route gives its one model ({"id": ...}).
    data = listing.get("data", [listing]) if isinstance(listing, dict) else None
    ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]] if isinstance(data, list) else []
    if not ids:
        raise EndpointError(
            f"{url} does not look like an LLM server: neither GET /info (TGI) nor GET /v1/models "
            "(Messages API servers such as vLLM or llama.cpp) named a model. Check the URL."
        )
    if sampling.model is not None:
        if sampling.model not in ids:
            raise ConfigError(f"model={sampling.model!r} was asked for, but {url} serves {_listing(ids)}. Point endpoint= at the right server or change model=.")
        model_id = sampling.model
    elif len(ids) > 1:
        raise ConfigError(f"{url} serves several models ({_listing(ids)}): pass model= to say which one answers.")
    else:
        model_id = ids[0]
    _warn_if_local_path(model_id, url)
    # OpenAI-style servers report no revision: the identity is the id, plus the user's model_revision.
    return ServerInfo(kind="openai", model_id=model_id, model_sha=sampling.model_revision)


async def check_health(http: Http, target: Target) -> None:
    """Raise `EndpointError` unless GET /health says the server can generate.

    TGI answers 200 only after a one-token generation succeeds, else 503; vLLM and llama.cpp
    have the route too. A server without it (404) is judged by its other answers.
    """
    response = await _get(http, target, "/health")
    if response.status not in (200, 404):
        raise EndpointError(f"{target.url}/health answered {response.status}")


def _pin_tgi(server: ServerInfo, sampling: Sampling, url: str) -> ServerInfo:
    revision = sampling.model_revision
    if revision is not None:
        if server.model_sha is None:
            server = dataclasses.replace(server, model_sha=revision)
        elif not server.model_sha.startswith(revision):
            raise ConfigError(f"model_revision={revision!r} was asked for, but {url} serves {server.identity!r}.")
    elif server.model_id == _ENDPOINT_MOUNT and server.model_sha is None:
        # Every Inference Endpoint reports this: as an identity it would share cached answers and
        # `datasets` results between any two models served that way.
        raise ConfigError(
            f"{url} serves its model from {_ENDPOINT_MOUNT} and reports no revision, as every Inference Endpoint does, "
            "so nothing tells its model from another's: pass model_revision= (a name for these weights, such as "
            "'meta-llama/Llama-3.1-8B-Instruct@main'); it names the cached answers and the rows' model."
        )
    if sampling.model is not None and sampling.model not in (server.model_id, server.identity):
        raise ConfigError(f"model={sampling.model!r} was asked for, but {url} serves {server.identity!r}. Point endpoint= at the right server or change model=.")
    return server


async def _get(http: Http, target: Target, route: str) -> Any:
    try:
        return await http.request("GET", target.url + route, target.headers, cap=_PROBE_CAP, proxy=target.proxy, timeout=_PROBE_DEADLINE)
    except Failure as failure:
        if failure.kind == "tls":
            message = f"{target.url}: {failure.args[0]}. Check the scheme (https:// to a plain http server?) and the certificate (SSL_CERT_FILE names the CA bundle to trust instead of the system's: one holding the system's CAs and yours)."
        elif failure.kind == "timeout":
            message = f"{target.url}{route} gave {failure.args[0]}."
        elif failure.kind == "proxy":
            message = f"{target.url}: {failure.args[0]}. {PROXY_HINT}"
        elif failure.kind == "bad_response":
            message = f"{target.url}{route}: {failure.args[0]}. Is endpoint= the address of an LLM server?"
        else:
            message = f"Cannot reach {target.url}: {failure.args[0]}. Start the server, or point endpoint= (--endpoint, $COEVOL_ENDPOINT) at a running one."
        raise EndpointError(message) from failure


async def _get_json(http: Http, target: Target, route: str) -> Any:
    response = await _get(http, target, route)
    status = response.status
    if 300 <= status < 400:
        raise EndpointError(
            f"{target.url}{route} redirects ({status}) to {response.headers.get('location', 'nowhere')!r}: point endpoint= at the "
            "final address (coevol-hf follows no redirect: it would turn calls into GETs and could carry the token elsewhere)."
        )
    if status == 407:
        raise EndpointError(f"{target.url}{route}: the proxy answered 407 (Proxy Authentication Required). {PROXY_HINT}")
    if status in (401, 403):
        advice = (
            "the token sent was refused"
            if target.headers
            else "pass token= for this endpoint (no token was sent: the saved Hugging Face token goes only to Hugging Face's API hosts)"
        )
        raise EndpointError(f"{target.url}{route} answered {status}: {advice}.")
    if status in (429, 502, 503, 504):
        # Not "this is no TGI server": asking /v1/models instead would take TGI for another kind of server.
        raise EndpointError(f"{target.url}{route} answered {status}: the server is not ready. Run again when it answers.")
    if status != 200:
        return None
    try:
        return json.loads(response.body)
    except (ValueError, RecursionError):
        return None


def _warn_if_local_path(model_id: str, url: str) -> None:
    """Servers started on a folder name their model by its path, which every row then records."""
    if model_id in _WARNED_PATHS or model_id == _ENDPOINT_MOUNT:
        return
    if not (model_id.startswith(("/", "~", "./", "../", "\\")) or re.match(r"[A-Za-z]:[\\/]", model_id)):
        return
    _WARNED_PATHS.add(model_id)
    logger.warning(
        "%s names its model by a local path, %r: every row records it (coevol_model, coevol_trace), and a push "
        "publishes it. Start the server with a public name (vLLM --served-model-name, llama.cpp --alias).",
        url,
        model_id,
    )


def _limit(info: dict[str, Any], name: str, url: str) -> int | None:
    """A positive integer limit from /info; anything else is ignored (0 or "many" would hang the pool)."""
    value = info.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    logger.warning("%s/info gives %s=%r, not a positive integer: ignored.", url, name, value)
    return None


def _listing(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:10])
    return f"{shown} and {len(ids) - 10} more" if len(ids) > 10 else shown
