"""Statistics of a refined dataset, computed from its own columns so that they are true of it."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable, Mapping

from .formats import REFINED
from .trace import Trace


@dataclasses.dataclass
class RunStats:
    rows: int = 0
    rows_improved: int = 0
    turns: int = 0
    rounds_histogram: dict[int, int] = dataclasses.field(default_factory=dict)  # accepted edits per turn -> turns
    llm_calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the server read from its prefix cache
    completion_tokens: int = 0
    errors_by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    judged_rounds: int = 0
    judges_agree: int = 0  # rounds where both orders were readable and named the same winner
    chars_before: int = 0
    chars_after: int = 0


def compute_stats(rows: Iterable[Mapping[str, Any]]) -> RunStats:
    """Stats over rows having the `coevol_*` columns (any iterable of row dicts)."""
    stats = RunStats()
    histogram: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    for row in rows:
        stats.rows += 1
        if row[REFINED.error] is not None:
            errors[row[REFINED.error].split(":", 1)[0]] += 1
        if row[REFINED.trace] is None:
            continue
        # A row stopped by a failing call may carry the rounds done before it: they count too.
        trace = Trace.from_json(row[REFINED.trace])
        rounds = [turn.accepted_rounds for turn in trace.turns]
        histogram.update(rounds)
        stats.turns += len(rounds)
        stats.rows_improved += any(rounds)
        stats.llm_calls += trace.usage.calls
        stats.prompt_tokens += trace.usage.prompt_tokens
        stats.cached_tokens += trace.usage.cached_tokens
        stats.completion_tokens += trace.usage.completion_tokens
        for turn in trace.turns:
            for round_ in turn.rounds:
                stats.judged_rounds += round_.judged
                stats.judges_agree += round_.orders_agree
            stats.chars_before += len(turn.original)
            stats.chars_after += len(turn.final)
    stats.rounds_histogram = dict(sorted(histogram.items()))
    stats.errors_by_kind = dict(errors.most_common())
    return stats


def format_stats(stats: RunStats, *, calls: tuple[int, int, int] | None = None, seconds: float | None = None) -> str:
    """The human summary printed at the end of a run. `calls`: this process's (requests sent,
    request-cache hits, misses); rows loaded from the `datasets` cache make none of them."""
    share = f" ({stats.rows_improved / stats.rows:.0%})" if stats.rows else ""
    lines = [
        f"rows: {stats.rows}, improved: {stats.rows_improved}{share}",
        "accepted edits per turn: " + (", ".join(f"{k}: {v}" for k, v in stats.rounds_histogram.items()) or "none"),
        f"LLM calls: {stats.llm_calls}" + (_call_sources(*calls) if calls is not None else ""),
        f"tokens: {stats.prompt_tokens} prompt ({cached_share(stats)} from the server's prefix cache), {stats.completion_tokens} completion",
        f"judge orders agree: {stats.judges_agree} of {stats.judged_rounds} judged rounds",
        "errors: " + (", ".join(f"{k}: {v}" for k, v in stats.errors_by_kind.items()) or "none"),
    ]
    if seconds is not None:
        lines.append(f"wall time: {seconds:.1f} s")
    return "\n".join(lines)


def cached_share(stats: RunStats) -> str:
    """How much of the prompt the server did not have to read again, as a share."""
    return f"{stats.cached_tokens / stats.prompt_tokens:.0%}" if stats.prompt_tokens else "none"


def _call_sources(sent: int, hits: int, misses: int) -> str:
    return f" (request cache: {hits} hits, {misses} misses; HTTP requests sent: {sent}, retries included)"
