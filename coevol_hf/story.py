"""One row's story for a terminal: what the debaters said, what the advisor and the editor did,
what the judge decided in each order, and why the edit was kept or not, in plain words.

A user who runs the demo sees the machinery work, even when (as with a 135M judge) no edit wins.
It reads only the `coevol_*` columns and the typed trace; `explain` and `describe_verdict` are
shared with the HTML report so both say the same thing.
"""

from __future__ import annotations

import textwrap
from typing import Any, Iterable, Mapping

from .formats import REFINED
from .trace import Round, Scores, Trace, Turn, Verdict, winner

WIDTH = 100
_SHORT = 160  # characters kept of each debate turn, suggestion and verdict
_LONG = 400  # characters kept of a response or an edit

# Why a round did not lead to another, for every `Round.stop` the protocol writes.
_STOPS = {
    "no_suggestions": "the advisor made no suggestion, so there was nothing to edit",
    "no_change": "the editor returned the answer unchanged",
    "empty_edit": "the editor's answer was empty",
    "edit_cut_off": "the editor's answer was cut at max_new_tokens, and CoEvol never keeps a cut-off edit",
    "unreadable_verdicts": "neither verdict of the judge could be read, so there was no decision and the answer stayed",
}
_KEEP_RULE = "CoEvol keeps an edit only when its score over both orders together is higher"


def is_compare(scores: Scores) -> bool:
    """Compare-mode scores are 1/0 or 0.5/0.5 (they sum to 1); score-mode ones are 1-10 each."""
    return sum(scores) == 1


def describe_verdict(verdict: Verdict | None, *, new_first: bool) -> str:
    """What one judge call said, naming the answers by what they are rather than by A and B."""
    shown = "the new answer first (as A)" if new_first else "the old answer first (as A)"
    if verdict is None:
        return f"with {shown}: not asked"
    if verdict.scores is None:
        return f"with {shown}: unreadable"
    old, new = verdict.scores
    preference = "a tie" if old == new else "preferred the new answer" if new > old else "preferred the old answer"
    numbers = "" if is_compare(verdict.scores) else f" (old {old:g}, new {new:g})"
    position = ""
    if old != new:
        position = ", the one it read first" if (new > old) == new_first else ", the one it read second"
    return f"with {shown}: {preference}{position}{numbers}"


def explain(round_: Round) -> str:
    """The decision on a round and its reason, in plain words."""
    if round_.accepted:
        if not round_.judged:
            return "kept: this pipeline has no judge, so a usable edit replaces the response"
        first, second = round_.order_scores
        if first is None or second is None:
            read = "first" if second is not None else "second"  # new is read first in the new-first order
            return f"kept: only one verdict could be read, and it preferred the edit, which it had read {read}; one readable verdict decides alone ({_merged(round_.scores)})"
        if winner(first) == winner(second) == "new":
            return f"kept: the edit won in both orders ({_merged(round_.scores)})"
        return f"kept: over both orders together the edit scored higher ({_merged(round_.scores)})"
    if round_.stop in _STOPS:
        return f"no edit kept: {_STOPS[round_.stop]}"
    first, second = round_.order_scores
    if first and second and winner(first) != winner(second) and "tie" not in (winner(first), winner(second)):
        read_first = winner(first) == "old"
        order = "first" if read_first else "second"
        merged = round_.scores
        if merged is not None and merged[0] > merged[1]:  # score mode: one order's margin outweighs the other's
            return f"rejected: the judge preferred whichever answer it read {order}, and over both orders together the old answer scored higher ({_merged(merged)})"
        return f"rejected: the judge preferred whichever answer it read {order}, so the two orders cancelled; {_KEEP_RULE}"
    if first is None or second is None:
        one = first or second
        return f"rejected: only one verdict could be read and it did not prefer the edit ({_merged(one)}); {_KEEP_RULE}"
    if winner(first) == winner(second) == "old":
        return f"rejected: the judge preferred the old answer in both orders ({_merged(round_.scores)})"
    return f"rejected: the edit did not win ({_merged(round_.scores)}); {_KEEP_RULE}"


def pick_row(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """The index of the most instructive row: an accepted edit if any, else a judged round with
    both verdicts readable, else any edit; shorter rows first among equals. None if none was refined."""
    best: tuple[tuple[int, int, int, int], int] | None = None
    for index, row in enumerate(rows):
        if row[REFINED.trace] is None:
            continue
        rounds = [r for turn in Trace.from_json(row[REFINED.trace]).turns for r in turn.rounds]
        rank = (
            any(r.accepted for r in rounds),
            any(all(r.order_scores) for r in rounds),
            any(r.edit is not None for r in rounds),
            -sum(len(r.edit or "") + len(r.advice or "") for r in rounds),
        )
        if best is None or rank > best[0]:
            best = (rank, index)
    return None if best is None else best[1]


def tell(row: Mapping[str, Any], *, width: int = WIDTH) -> str:
    """One refined row as text for a terminal, its long texts shortened."""
    if row[REFINED.trace] is None:
        return f"This row was left as it was: {row[REFINED.error]}"
    trace = Trace.from_json(row[REFINED.trace])
    lines: list[str] = []
    if row[REFINED.error] is not None:
        lines.append(f"A call failed ({row[REFINED.error]}); what was done before it is kept:")
    several = len(row[REFINED.original] or ()) > 1
    for turn in trace.turns:
        lines += _tell_turn(turn, width, several=several)
    if len(trace.turns) < len(row[REFINED.original] or ()):
        lines.append(f"== Turns {len(trace.turns) + 1} to {len(row[REFINED.original])}: left as they were ==")
    lines.append(f"LLM calls for this row: {trace.usage.calls}")
    return "\n".join(lines)


def story(rows: Any, *, width: int = WIDTH) -> str:
    """The story of the most instructive row of a refined dataset (any sequence of row dicts)."""
    index = pick_row(rows)
    if index is None:
        return "No row could be refined: see coevol_error."
    return f"One row's story (row {index} of rows 0 to {len(rows) - 1}, as the report numbers them):\n\n" + tell(rows[index], width=width)


def _tell_turn(turn: Turn, width: int, *, several: bool) -> list[str]:
    lines = [f"== Turn {turn.turn + 1} =="] if several else []
    lines += _block("Instruction", turn.instruction, _LONG, width)
    lines += _block("Response", turn.original, _LONG, width)
    for round_ in turn.rounds:
        lines.append(f"-- Round {round_.round} --")
        if round_.debate is not None:
            debate = round_.debate
            lines += _block("For (advocate's review)", debate.advocate_review, _SHORT, width)
            lines += _block("Against (critic's review)", debate.critic_review, _SHORT, width)
            lines += _block("Advocate's rebuttal", debate.advocate_rebuttal, _SHORT, width)
            lines += _block("Critic's rebuttal", debate.critic_rebuttal, _SHORT, width)
        if round_.suggestions:
            lines.append("Advisor's suggestions:")
            lines += [_wrap(f"{n}. {_shorten(text, _SHORT)}", width, "   ", "     ") for n, text in enumerate(round_.suggestions, 1)]
        if round_.edit is not None:
            lines += _block("Editor's proposal", round_.edit, _LONG, width)
        if round_.judged:
            lines.append("Judge:")
            for verdict, new_first in ((round_.old_first, False), (round_.new_first, True)):
                said = describe_verdict(verdict, new_first=new_first)
                text = f" — {_shorten(verdict.text, _SHORT)}" if verdict is not None and verdict.text.strip() else ""
                lines.append(_wrap(said + text, width, "   ", "     "))
        if round_.cut_off:
            lines.append(_wrap(f"Cut at max_new_tokens: {', '.join(round_.cut_off)}", width, "", "  "))
        lines.append(_wrap(f"Decision: {explain(round_)}.", width, "", "  "))
    after = "unchanged" if turn.final == turn.original else f"the edit of round {max(r.round for r in turn.rounds if r.accepted)}"
    lines.append(f"Result: {after}.")
    return lines


def _block(title: str, text: str, limit: int, width: int) -> list[str]:
    return [f"{title}:", _wrap(_shorten(text, limit), width, "   ", "   ")]


def _wrap(text: str, width: int, first: str, rest: str) -> str:
    return textwrap.fill(text, width, initial_indent=first, subsequent_indent=rest, break_long_words=True) or first.rstrip()


def _shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rsplit(" ", 1)[0] + " …"


def _merged(scores: Scores | None) -> str:
    return "no scores" if scores is None else f"old {scores[0]:g}, new {scores[1]:g}"
