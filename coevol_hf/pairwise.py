"""`PairwiseJudge`: which of two answers serves the instruction better, as a map operator.

It is CoEvol's judge reused as is (same prompts, schema, both orders, same merge), so users can
evaluate any refinement, compare two models' outputs, or audit a card's "share improved".
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import pyarrow as pa

from .client.server import ServerInfo
from .client.session import ClientSession
from .errors import ConfigError, RowError
from .formats import JUDGED, read_answer, read_prompt
from .operator import MapOperator, run_info_of
from .options import PairwiseOptions
from .protocol import Metered, judge_both_orders, render_context
from .trace import scores_dict, winner

_SCORES = pa.struct([("a", pa.float64()), ("b", pa.float64())])


class PairwiseJudge(MapOperator):
    """`ds.map(PairwiseJudge(a="output", b="refined", endpoint=...), batched=True)`.

    Reads the prompt from the row's layout (Alpaca: the instruction and its input; ShareGPT and
    messages: the last user turn, with the exchanges before it as context) and two answer
    columns, asks the judge in both orders and adds `judge_winner` ("a", "b", "tie", or null
    when no verdict could be read), `judge_scores` ({a, b}: the merged scores), `judge_verdicts`
    (JSON: each order's text, scores and whether the server cut it off; calls and tokens; the
    run: model, server, package and every output-changing option) and `judge_error`.
    """

    options_type = PairwiseOptions
    options: PairwiseOptions

    def __init__(self, a: str, b: str, **options: Any) -> None:
        super().__init__(a=a, b=b, **options)

    def output_types(self) -> Mapping[str, pa.DataType]:
        return {JUDGED.winner: pa.string(), JUDGED.scores: _SCORES, JUDGED.verdicts: pa.string(), JUDGED.error: pa.string()}

    def read_columns(self, column_names: Sequence[str]) -> tuple[str, ...]:
        options = self.options
        missing = [c for c in (options.a, options.b) if c not in column_names]
        if missing:
            raise ConfigError(f"PairwiseJudge needs the answer columns {missing}; the dataset has {sorted(column_names)}.")
        fmt = options.columns.detect(column_names, options.format, with_response=False)
        return (*options.columns.source_columns(fmt, with_response=False), options.a, options.b)

    async def process_row(self, row: Mapping[str, Any], session: ClientSession, server: ServerInfo) -> dict[str, Any]:
        options = self.options
        fmt = options.columns.detect(list(row), options.format, with_response=False)
        earlier, instruction = read_prompt(fmt, row, options.columns)
        window = earlier.exchanges[max(0, len(earlier.exchanges) - options.context_turns) :]
        context = render_context(earlier.system, [(e.user, e.assistant) for e in window])
        a, b = read_answer(row, options.a), read_answer(row, options.b)
        chat = Metered(session, earlier, instruction)
        a_first, b_first, decision = await judge_both_orders(chat, options.prompts, options.judge_mode, {"context": context, "instruction": instruction}, a, b)
        merged = decision.merged
        verdicts = {
            "model": server.identity,
            "judge_mode": options.judge_mode,
            # Each order's scores as the judge's merge sees them: "old" is a, "new" is b.
            "a_first": {"text": a_first.text, "scores": scores_dict(decision.old_first), "cut_off": a_first.cut_off},
            "b_first": {"text": b_first.text, "scores": scores_dict(decision.new_first), "cut_off": b_first.cut_off},
            "usage": dataclasses.asdict(chat.usage),
            "run": run_info_of(options, server).to_dict(),  # how the verdicts were made
        }
        return {
            JUDGED.winner: None if merged is None else {"old": "a", "new": "b", "tie": "tie"}[winner(merged)],
            JUDGED.scores: _named(merged),
            JUDGED.verdicts: json.dumps(verdicts, ensure_ascii=False),
            JUDGED.error: None,
        }

    def failed_row(self, row: Mapping[str, Any], error: RowError, server: ServerInfo) -> dict[str, Any]:
        return {JUDGED.winner: None, JUDGED.scores: None, JUDGED.verdicts: None, JUDGED.error: str(error)}


def _named(scores: tuple[float, float] | None) -> dict[str, float] | None:
    """(a, b) scores as {a, b}."""
    return None if scores is None else {"a": scores[0], "b": scores[1]}
