"""A standalone pairwise judge: which of two response columns serves the instruction better.

It is CoEvol's judge, reused as is (same prompts, schema, both orders, same merge), so users can
evaluate any refinement, compare two models' outputs, or audit a card's "share improved".
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import pyarrow as pa
from datasets.utils._dill import pklregister

from .errors import ConfigError, RowError
from .formats import read_pair
from .protocol import gather_or_cancel, judge_both_orders
from .transform import _LOOP, CoEvol, _fingerprint_stub, _typed, row_failure

_SCORES = pa.struct([("a", pa.float64()), ("b", pa.float64())])
# CoEvol options that have no meaning for a judge alone.
_NOT_FOR_JUDGING = {"pipeline", "max_rounds", "context_turns", "columns", "format"}


class PairwiseJudge:
    """`ds.map(PairwiseJudge(a="output", b="refined", endpoint=...), batched=True)`.

    Reads the instruction (and `input`, when present) and two answer columns, asks the judge in
    both orders and adds `judge_winner` ("a", "b", "tie", or null when no verdict could be read),
    `judge_scores` ({a, b}: the merged scores), `judge_verdicts` (JSON: each order's text and
    scores) and `judge_error`. Other options are those of `CoEvol` that concern the judge
    (`judge_mode`, sampling, `prompts`, `model`, `structured_judge`, `on_error`, connection).
    """

    def __init__(self, a: str, b: str, *, instruction: str = "instruction", input: str = "input", **options: Any) -> None:
        misplaced = _NOT_FOR_JUDGING & set(options)
        if misplaced:
            raise ConfigError(f"PairwiseJudge does not take {sorted(misplaced)}; it takes a=, b=, instruction=, input= and the judge's options.")
        for name, value in (("a", a), ("b", b), ("instruction", instruction), ("input", input)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name}= must be a column name, not {value!r}.")
        if a == b:
            raise ConfigError(f"a= and b= name the same column {a!r}; give the two columns to compare.")
        self.a, self.b = a, b
        self._engine = CoEvol(columns={"instruction": instruction, "input": input, "output": a}, format="alpaca", **options)

    @property
    def config(self) -> Any:
        return self._engine.config

    @property
    def calls_made(self) -> int:
        return self._engine.calls_made

    def fingerprint_state(self) -> dict[str, Any]:
        return {**self._engine.fingerprint_state(), "operator": "pairwise_judge", "a": self.a, "b": self.b}

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        missing = [c for c in (self.config.columns.instruction, self.a, self.b) if c not in batch]
        if missing:
            raise ConfigError(f"PairwiseJudge needs the columns {missing}; the dataset has {sorted(batch)}.")
        server = self._engine.server
        return _LOOP.run(self._judge_batch(batch, server))

    async def _judge_batch(self, batch: Mapping[str, Sequence[Any]], server: Any) -> dict[str, Any]:
        client = self._engine.client(server)
        columns = self.config.columns
        read = [c for c in (columns.instruction, columns.input, self.a, self.b) if c in batch]
        rows = [{c: batch[c][i] for c in read} for i in range(len(batch[self.a]))]
        results = await gather_or_cancel(*(self._judge_row(row, client) for row in rows))
        winners, scores, verdicts, errors = [], [], [], []
        for result in results:
            if isinstance(result, RowError):
                winners.append(None)
                scores.append(None)
                verdicts.append(None)
                errors.append(str(result))
                continue
            texts, decision = result
            merged = decision.merged
            winners.append(None if merged is None else "a" if merged[0] > merged[1] else "b" if merged[1] > merged[0] else "tie")
            scores.append(None if merged is None else {"a": merged[0], "b": merged[1]})
            verdicts.append(json.dumps({"model": server.identity, "judge_mode": self.config.judge_mode, "a_first": texts["old_first"], "b_first": texts["new_first"]}, ensure_ascii=False))
            errors.append(None)
        return {
            "judge_winner": _typed(winners, pa.string()),
            "judge_scores": _typed(scores, _SCORES),
            "judge_verdicts": _typed(verdicts, pa.string()),
            "judge_error": _typed(errors, pa.string()),
        }

    async def _judge_row(self, row: Mapping[str, Any], client: Any) -> Any:
        try:
            instruction, a, b = read_pair(row, self.config.columns, self.a, self.b)
            return await judge_both_orders(client, self.config, {"context": "", "instruction": instruction}, a, b)
        except RowError as err:
            return row_failure(err, row, self.config.on_error)


@pklregister(PairwiseJudge)
def _hash_pairwise(pickler: Any, obj: PairwiseJudge) -> None:
    """How datasets' fingerprint pickler sees a PairwiseJudge: its outputs-deciding state only."""
    pickler.save_reduce(_fingerprint_stub, (obj.fingerprint_state(),), obj=obj)
