"""Traces read back as written, and the statistics the CLI, card and report print from them (pure logic)."""

from __future__ import annotations

from coevol_hf.formats import REFINED
from coevol_hf.stats import RunStats, cached_share, compute_stats, format_stats
from coevol_hf.trace import Debate, Round, RunInfo, Trace, Turn, Usage, Verdict, winner

RUN = RunInfo("0", "sha256:x", "m", {"kind": "tgi"}, {"pipeline": "coevol"}, "h")
AGREE = dict(old_first=Verdict("B", (0.0, 1.0)), new_first=Verdict("A", (0.0, 1.0)))
OLD = dict(old_first=Verdict("A", (1.0, 0.0)), new_first=Verdict("B", (1.0, 0.0)))
SPLIT = dict(old_first=Verdict("A", (1.0, 0.0)), new_first=Verdict("A", (0.0, 1.0)))
UNREAD = dict(old_first=Verdict("?", None), new_first=Verdict("?", None))


def test_a_trace_reads_back_as_written() -> None:
    full = Round(2, Debate("a", "b", "c", "d"), "advice", ("s1", "s2"), "edit", Verdict("A", (1.0, 0.0)), Verdict("B", (0.0, 1.0)), (0.5, 1.5), True, None, ("advice",))
    trace = Trace(RUN, (Turn(0, "q", "o", (full,)),), Usage(1, 2, 3, 4))
    assert Trace.from_json(trace.to_json()) == trace


def test_the_final_answer_ties_and_judged_rounds() -> None:
    rounds = (Round(1, edit="e1", accepted=True), Round(2, edit="e2", accepted=True), Round(3, edit="e3", stop="not_better"))
    assert Turn(0, "q", "o", rounds).final == "e2"
    assert winner((1.0, 1.0)) == "tie"


def row(error: str | None, *turns: Turn, usage: Usage = Usage(0, 0, 0, 0)) -> dict:
    """A refined row's summary columns, as compute_stats reads them."""
    return {REFINED.error: error, REFINED.trace: Trace(RUN, turns, usage).to_json() if turns else None}


def test_statistics_count_rows_calls_tokens_judges_and_errors() -> None:
    rows = [
        row(None, Turn(0, "q", "ab", (Round(1, edit="abcd", accepted=True, **AGREE), Round(2, edit="x", stop="not_better", **OLD))),
            Turn(1, "q", "c", (Round(1, edit="y", stop="not_better", **SPLIT),)), usage=Usage(10, 100, 20, 40)),
        row("input: bad row"),
        row("server: HTTP 500: boom", Turn(0, "q", "d", (Round(1, edit="de", accepted=True),)), usage=Usage(5, 50, 5, 0)),
        row(None, Turn(0, "q", "e", (Round(1, edit="z", stop="unreadable_verdicts", **UNREAD),)), usage=Usage(6, 60, 6, 0)),
        row("server: timeout"),
    ]
    stats = compute_stats(rows)
    assert (stats.rows, stats.rows_improved, stats.turns) == (5, 2, 4)
    assert (stats.llm_calls, stats.prompt_tokens, stats.cached_tokens) == (21, 210, 40)
    assert (stats.judged_rounds, stats.judges_agree) == (4, 2)
    assert (stats.chars_before, stats.chars_after) == (2 + 1 + 1 + 1, 4 + 1 + 2 + 1)
    text = format_stats(stats)
    assert "rows: 5, improved: 2 (40%)" in text
    assert "accepted edits per turn: 0: 2, 1: 2" in text
    assert "errors: server: 2, input: 1" in text
    assert cached_share(RunStats(prompt_tokens=100)) == "0%"
