"""The terminal story of one row: which row is told, and the decision in plain words."""

from __future__ import annotations

import dataclasses

import pytest
from datasets import DatasetDict
from refined_rows import refine, script
from tgi_server import TGIServer

from coevol_hf.formats import REFINED
from coevol_hf.story import describe_verdict, explain, pick_row, story, tell
from coevol_hf.trace import Debate, Round, Trace, Verdict

JUDGED = Round(1, suggestions=("Be precise.",), edit="new", old_first=Verdict("A", (1.0, 0.0)), new_first=Verdict("A", (0.0, 1.0)), scores=(1.0, 1.0), stop="not_better")


@pytest.fixture
def refined() -> DatasetDict:
    with TGIServer(script) as server:
        return refine(server)


def test_story_tells_the_debate_suggestions_edit_verdicts_and_decision(refined: DatasetDict) -> None:
    rejected = tell(refined["alpaca"][1])
    lines = rejected.splitlines()
    assert lines[:2] == ["Instruction:", "   What is the relation between the given pairs? Night : Day :: Right : Left"]
    for title in ("For (advocate's review):", "Against (critic's review):", "Advocate's rebuttal:", "Critic's rebuttal:", "Advisor's suggestions:", "Editor's proposal:", "Judge:"):
        assert title in lines, title
    assert "   1. Add an example." in lines and "   3. Mention the main caveat." in lines and "A fourth one" not in rejected
    flat = " ".join(rejected.split())  # as read, across the wrapped lines
    assert "with the old answer first (as A): preferred the old answer, the one it read first — A The first answer is better." in flat
    assert "with the new answer first (as A): preferred the new answer, the one it read first — A The first answer is better." in flat
    assert "Decision: rejected: the judge preferred whichever answer it read first, so the two orders cancelled;" in flat
    assert lines[-2:] == ["Result: unchanged.", "LLM calls for this row: 8"]
    assert all(len(line) <= 100 for line in lines)


def test_story_picks_an_accepted_edit_and_tells_every_turn(refined: DatasetDict) -> None:
    alpaca = refined["alpaca"]
    # Rejected and errored rows first: the accepted one is still chosen.
    reordered = alpaca.select([1, 3, 0])
    assert pick_row(reordered) == 2
    told = story(reordered)
    assert told.startswith("One row's story (row 2 of rows 0 to 2, as the report numbers them):") and "Decision: kept: the edit won in both orders (old 0, new 2)." in " ".join(told.split())
    assert told.splitlines()[-2] == "Result: the edit of round 2."

    two_turns = tell(refined["mt_bench"][0])
    assert "== Turn 1 ==" in two_turns and "== Turn 2 ==" in two_turns


def test_story_of_markup_and_errors(refined: DatasetDict) -> None:
    assert "<script>document.title = 'pwned'</script>" in tell(refined["alpaca"][2])  # a terminal shows it as it is
    assert tell(refined["alpaca"][3]) == "This row was left as it was: input: column 'output' must be a non-empty string, got NoneType None"
    only_errors = refined["alpaca"].select([3])
    assert pick_row(only_errors) is None and story(only_errors) == "No row could be refined: see coevol_error."


def test_long_texts_are_shortened(refined: DatasetDict) -> None:
    row = refined["alpaca"][1]
    trace = Trace.from_json(row[REFINED.trace])
    (turn,) = trace.turns
    long_debate = Debate("word " * 500, "critic", "rebuttal", "rebuttal")
    longer = dataclasses.replace(trace, turns=(dataclasses.replace(turn, original="x" * 5000, rounds=(dataclasses.replace(turn.rounds[0], debate=long_debate),)),))
    told = tell({**row, REFINED.trace: longer.to_json()})
    assert len(told) < 3000 and "word word …" in told
    assert max(map(len, told.splitlines())) <= 100


@pytest.mark.parametrize(
    ("round_", "expected"),
    [
        (Round(1, stop="no_suggestions"), "no edit kept: the advisor made no suggestion, so there was nothing to edit"),
        (Round(1, edit="same", stop="no_change"), "no edit kept: the editor returned the answer unchanged"),
        (Round(1, edit="", stop="empty_edit"), "no edit kept: the editor's answer was empty"),
        (Round(1, edit="cut", stop="edit_cut_off", cut_off=("edit",)), "no edit kept: the editor's answer was cut at max_new_tokens, and CoEvol never keeps a cut-off edit"),
        (dataclasses.replace(JUDGED, old_first=Verdict("?", None), new_first=Verdict("?", None), scores=None, stop="unreadable_verdicts"), "no edit kept: neither verdict of the judge could be read, so there was no decision and the answer stayed"),
        (JUDGED, "rejected: the judge preferred whichever answer it read first, so the two orders cancelled; CoEvol keeps an edit only when its score over both orders together is higher"),
        (dataclasses.replace(JUDGED, old_first=Verdict("B", (0.0, 1.0)), new_first=Verdict("B", (1.0, 0.0))), "rejected: the judge preferred whichever answer it read second, so the two orders cancelled; CoEvol keeps an edit only when its score over both orders together is higher"),
        (dataclasses.replace(JUDGED, new_first=Verdict("B", (1.0, 0.0)), scores=(2.0, 0.0)), "rejected: the judge preferred the old answer in both orders (old 2, new 0)"),
        (dataclasses.replace(JUDGED, new_first=Verdict("?", None), scores=(1.0, 0.0)), "rejected: only one verdict could be read and it did not prefer the edit (old 1, new 0); CoEvol keeps an edit only when its score over both orders together is higher"),
        (dataclasses.replace(JUDGED, new_first=Verdict("tie", (0.5, 0.5)), scores=(1.5, 0.5)), "rejected: the edit did not win (old 1.5, new 0.5); CoEvol keeps an edit only when its score over both orders together is higher"),
        # Score mode: the orders disagree, but one margin outweighs the other, so they did not cancel.
        (dataclasses.replace(JUDGED, old_first=Verdict("{}", (6.0, 8.0)), new_first=Verdict("{}", (7.0, 3.0)), scores=(6.5, 5.5)), "rejected: the judge preferred whichever answer it read second, and over both orders together the old answer scored higher (old 6.5, new 5.5)"),
        (dataclasses.replace(JUDGED, old_first=Verdict("{}", (6.0, 8.0)), new_first=Verdict("{}", (8.0, 6.0)), scores=(7.0, 7.0)), "rejected: the judge preferred whichever answer it read second, so the two orders cancelled; CoEvol keeps an edit only when its score over both orders together is higher"),
        (dataclasses.replace(JUDGED, new_first=Verdict("A", (0.0, 1.0)), old_first=Verdict("B", (0.0, 1.0)), scores=(0.0, 2.0), accepted=True, stop=None), "kept: the edit won in both orders (old 0, new 2)"),
        (dataclasses.replace(JUDGED, old_first=Verdict("tie", (0.5, 0.5)), new_first=Verdict("A", (0.0, 1.0)), scores=(0.5, 1.5), accepted=True, stop=None), "kept: over both orders together the edit scored higher (old 0.5, new 1.5)"),
        (dataclasses.replace(JUDGED, old_first=Verdict("{}", (7.0, 9.0)), new_first=Verdict("{}", (8.0, 7.0)), scores=(7.5, 8.0), accepted=True, stop=None), "kept: over both orders together the edit scored higher (old 7.5, new 8)"),
        (dataclasses.replace(JUDGED, old_first=Verdict('{"better": "B", "rea', None), new_first=Verdict("A", (0.0, 1.0)), scores=(0.0, 1.0), accepted=True, stop=None), "kept: only one verdict could be read, and it preferred the edit, which it had read first; one readable verdict decides alone (old 0, new 1)"),
        (Round(1, edit="new", accepted=True), "kept: this pipeline has no judge, so a usable edit replaces the response"),
    ],
)
def test_every_decision_has_its_reason(round_: Round, expected: str) -> None:
    assert explain(round_) == expected


def test_verdicts_name_the_answers_and_show_scores_only_in_score_mode() -> None:
    assert describe_verdict(Verdict("A", (1.0, 0.0)), new_first=False) == "with the old answer first (as A): preferred the old answer, the one it read first"
    assert describe_verdict(Verdict("{}", (3.0, 8.0)), new_first=True) == "with the new answer first (as A): preferred the new answer, the one it read first (old 3, new 8)"
    assert describe_verdict(Verdict("tie", (0.5, 0.5)), new_first=True) == "with the new answer first (as A): a tie"
    assert describe_verdict(Verdict("??", None), new_first=False) == "with the old answer first (as A): unreadable"

