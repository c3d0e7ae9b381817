"""Every exception coevol-hf raises, in one tree.

Errors that stop a run before any money is spent derive from `ConfigError`; errors about the
server from `EndpointError`. A single row that cannot be refined does not stop the run: its
reason is written to the row's `coevol_error` column (see `RowError`), unless `on_error="raise"`.
"""

from __future__ import annotations


class CoEvolError(Exception):
    """Base class of every coevol-hf error."""


class ConfigError(CoEvolError, ValueError):
    """An option, a prompt template or a column mapping is not usable."""


class InputFormatError(ConfigError):
    """The dataset has no columns coevol-hf knows how to refine."""


class EndpointError(CoEvolError, ConnectionError):
    """The endpoint cannot be reached, or does not speak an LLM protocol we know."""


class PublishError(CoEvolError):
    """The Hub refused or interrupted a push; the local data is never touched."""


class RowError(CoEvolError):
    """Why one row could not be refined: recorded in `coevol_error`, or raised with `on_error="raise"`.

    `kind` is a short stable label ("input", "validation", "server", ...) that summaries group by.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"

    def __reduce__(self) -> tuple:
        # Rebuilt from its two arguments when a num_proc worker sends it back (on_error="raise").
        return type(self), (self.kind, self.args[0])
