"""`CoEvol`: the map operator that refines the responses of a dataset, one row coroutine.

Everything it shares with other operators (options, batches, event loop, fingerprint, pickling,
`on_error`) lives in `operator.py`; the rounds themselves in `protocol.py`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pyarrow as pa

from .client.server import ServerInfo
from .client.session import ClientSession
from .errors import RowError
from .formats import REFINED, Format, read_row, write_row
from .operator import MapOperator, run_info_of
from .options import CoEvolOptions
from .protocol import Interrupted, RefinedConversation, refine_conversation
from .trace import Trace


class CoEvol(MapOperator):
    """Refine the responses of a dataset with CoEvol: `ds.map(CoEvol(endpoint=...), batched=True)`.

    Every option is a keyword (`coevol_hf.options.CoEvolOptions` lists them with their help).
    `endpoint` defaults to `COEVOL_ENDPOINT`, else `http://127.0.0.1:8080`; a list (or
    comma-separated string) names replicas of one model. Every answered call is kept in a
    request cache, so a crashed or killed run, started again, pays only for the calls it had
    not received.
    """

    options_type = CoEvolOptions
    options: CoEvolOptions

    def __init__(self, endpoint: str | Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(endpoint=endpoint, **options)

    def __repr__(self) -> str:
        shown = {name: value for name, value in self.options.output_options().items() if name not in ("prompts", "columns")}
        return f"CoEvol(endpoint={self.options.endpoint!r}, {', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def run_config(self) -> dict[str, Any]:
        """Everything needed to redo this run, every prompt template included (`coevol_config.json`)."""
        return {**self.run_info().to_dict(), "options": self.options.output_options()}

    # -- the operator -------------------------------------------------------------------------

    def output_types(self) -> Mapping[str, pa.DataType]:
        return {
            REFINED.original: pa.list_(pa.string()),
            REFINED.rounds: pa.list_(pa.int32()),
            REFINED.trace: pa.string(),
            REFINED.error: pa.string(),
            REFINED.model: pa.string(),
        }

    def read_columns(self, column_names: Sequence[str]) -> tuple[str, ...]:
        columns = self.options.columns
        fmt = columns.detect(column_names, self.options.format)
        return (*columns.source_columns(fmt), REFINED.original)

    def _format(self, row: Mapping[str, Any]) -> Format:
        return self.options.columns.detect([name for name in row if name != REFINED.original], self.options.format)

    async def process_row(self, row: Mapping[str, Any], session: ClientSession, server: ServerInfo) -> dict[str, Any]:
        fmt = self._format(row)
        conversation = read_row(fmt, row, self.options.columns)
        refined = await refine_conversation(conversation, self.options, session)
        return self._written(row, fmt, conversation.responses, refined, server, error=None)

    def failed_row(self, row: Mapping[str, Any], error: RowError, server: ServerInfo) -> dict[str, Any]:
        """The row as it was, and why; edits accepted before a call failed are kept, with their trace."""
        fmt = self._format(row)
        try:
            originals = read_row(fmt, row, self.options.columns).responses
        except RowError:
            originals = []
        if isinstance(error, Interrupted) and error.done.turns:
            return self._written(row, fmt, originals, error.done, server, error=error)
        target = self.options.columns.response_column(fmt)
        return {
            target: row.get(target),
            REFINED.original: _true_originals(row, originals),
            REFINED.rounds: [],
            REFINED.trace: None,
            REFINED.error: str(error),
            REFINED.model: server.identity,
        }

    def _written(self, row: Mapping[str, Any], fmt: Format, originals: list[str], refined: RefinedConversation, server: ServerInfo, *, error: RowError | None) -> dict[str, Any]:
        """The row with the turns `refined` did (the others as they were) and their record."""
        responses = refined.responses + originals[len(refined.turns) :]
        return {
            **write_row(fmt, row, self.options.columns, responses),
            REFINED.original: _true_originals(row, originals),
            REFINED.rounds: [turn.accepted_rounds for turn in refined.turns],
            REFINED.trace: Trace(run_info_of(self.options, server), refined.turns, refined.usage).to_json(),
            REFINED.error: None if error is None else str(error),
            REFINED.model: server.identity,
        }


def _true_originals(row: Mapping[str, Any], responses: list[str]) -> list[str]:
    """The responses before any refinement: kept from a previous run's `coevol_original`."""
    earlier = row.get(REFINED.original)
    if isinstance(earlier, list) and len(earlier) == len(responses) and all(isinstance(text, str) for text in earlier):
        return earlier
    return responses


coevol_refine = CoEvol()
"""Ready to use: `ds.map(coevol_refine, batched=True)`, endpoint from `COEVOL_ENDPOINT`.

Options can also be given per call: `ds.map(coevol_refine, batched=True, fn_kwargs={...})`.
Note that datasets hashes `fn_kwargs` itself, so an endpoint given there enters the cache key;
give it through `COEVOL_ENDPOINT` or `CoEvol(endpoint=...)` to keep cached results across servers.
"""
