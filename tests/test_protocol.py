"""The rounds over a scripted chat function (pure logic: no server): cut-off answers.

A server that stops at `max_new_tokens` says `finish_reason: "length"`; the client turns that
into `Reply.cut_off`. A cut-off edit must never replace a response, with or without a judge.
"""

from __future__ import annotations

import asyncio
import json
import pickle

import pytest

from coevol_hf.formats import Conversation, Exchange
from coevol_hf.options import CoEvolOptions
from coevol_hf.prompts import Prompts
from coevol_hf.errors import RowError
from coevol_hf.protocol import Interrupted, RefinedConversation, Reply, parse_suggestions, refine_conversation, render_context

PROMPTS = Prompts()
ROLES = {PROMPTS.advocate_persona: "advocate", PROMPTS.critic_persona: "critic", PROMPTS.advisor_persona: "advisor", PROMPTS.editor_persona: "editor", PROMPTS.judge_persona: "judge"}


class ScriptedChat:
    """Answers by role; `cut` names the roles whose answers come back cut off."""

    def __init__(self, cut: set[str] = frozenset(), judge: str | None = None, advice: str = "- Add an example.", edit: str = "A better answer, cut in the mid") -> None:
        self.cut, self.judge, self.advice, self.edit, self.roles = cut, judge, advice, edit, []

    async def __call__(self, messages, *, schema=None, affinity=None) -> Reply:
        role = next(role for persona, role in ROLES.items() if persona in messages[1]["content"])
        self.roles.append(role)
        # By default the judge prefers the edit, in whichever position it is shown.
        prefer_edit = json.dumps({"better": "B" if "[Answer A]\nBlue." in messages[1]["content"] else "A", "reason": "fuller"})
        text = {"advisor": self.advice, "editor": self.edit, "judge": self.judge or prefer_edit}.get(role, f"{role} says")
        return Reply(text, 10, 5, cut_off=role in self.cut)


def refine(chat: ScriptedChat, **options):
    conversation = Conversation(None, (Exchange("Name a colour.", "Blue."),))
    return asyncio.run(refine_conversation(conversation, CoEvolOptions(**options), chat))


def test_a_cut_off_edit_is_never_judged_nor_accepted() -> None:
    chat = ScriptedChat(cut={"editor"})
    (turn,) = refine(chat).turns
    (round_,) = turn.rounds
    assert turn.final == "Blue." and not round_.accepted
    assert round_.stop == "edit_cut_off" and round_.cut_off == ("edit",)
    assert "judge" not in chat.roles


@pytest.mark.parametrize("pipeline", ["edit", "advise_edit", "advise_edit_blind", "debate_advise_edit"])
def test_one_pass_pipelines_do_not_accept_a_cut_off_edit(pipeline: str) -> None:
    (turn,) = refine(ScriptedChat(cut={"editor"}), pipeline=pipeline).turns
    assert turn.final == "Blue." and turn.rounds[0].stop == "edit_cut_off"
    (accepted,) = refine(ScriptedChat(), pipeline=pipeline).turns
    assert accepted.final == "A better answer, cut in the mid"


@pytest.mark.parametrize("pipeline", ["coevol", "edit", "advise_edit"])
def test_an_edit_that_changes_nothing_or_is_empty_is_not_kept(pipeline: str) -> None:
    # The editor of "edit" writes a new answer: if it is the old one, nothing was improved.
    for edit, stop in ((" Blue. ", "no_change"), ("  ", "empty_edit")):
        chat = ScriptedChat(edit=edit)
        (turn,) = refine(chat, pipeline=pipeline).turns
        assert (turn.final, turn.accepted_rounds, turn.rounds[0].stop) == ("Blue.", 0, stop)
        assert "judge" not in chat.roles


def test_cut_off_reviews_and_advice_are_marked() -> None:
    (turn,) = refine(ScriptedChat(cut={"critic", "advisor"}), max_rounds=1).turns
    assert set(turn.rounds[0].cut_off) == {"critic_review", "critic_rebuttal", "advice"}
    assert turn.rounds[0].accepted  # the edit itself was complete and won


def test_a_cut_off_verdict_counts_only_with_complete_json() -> None:
    free_text = ScriptedChat(cut={"judge"}, judge="B\nThe second answer is fuller and")
    (turn,) = refine(free_text, max_rounds=1, structured_judge=False).turns
    assert turn.rounds[0].stop == "unreadable_verdicts" and turn.rounds[0].cut_off == ("old_first", "new_first")

    complete = ScriptedChat(cut={"judge"})
    (turn,) = refine(complete, max_rounds=1).turns
    assert turn.rounds[0].scores == (0.0, 2.0) and turn.rounds[0].accepted


@pytest.mark.parametrize(
    "advice, expected",
    [
        ("- Add an example.\n- Fix the date.", ["Add an example.", "Fix the date."]),
        # A preamble is not a suggestion, and it must not push the third one out.
        ("Here are my suggestions:\n- Add an example.\n- Fix the date.\n- Shorten the intro.", ["Add an example.", "Fix the date.", "Shorten the intro."]),
        ("1. Add an example\n   of its use.\n2) Fix the date.\n\nThese changes would help.", ["Add an example of its use.", "Fix the date."]),
        ("Add an example.\nFix the date.", ["Add an example.", "Fix the date."]),
        ("- a\n- b\n- c\n- d", ["a", "b", "c"]),
        ("No changes are needed.", []),
        ("- None", []),
        ("", []),
        ("No changes to the facts, but add a date.", ["No changes to the facts, but add a date."]),
        # Not list items: a rule, a decimal, a bold heading.
        ("The answer is fine.\n\n---\n\nAdd a source.", ["The answer is fine.", "Add a source."]),
        ("1.5 litres is wrong; use 2 litres.\n\nAlso cite a source.", ["1.5 litres is wrong; use 2 litres.", "Also cite a source."]),
        ("**Suggestions for improvement:**\n\n1. **Clarity**: define X.\n2. Fix the date.\n3. Cite a source.", ["**Clarity**: define X.", "Fix the date.", "Cite a source."]),
        # Sub-items stay under their item; headings between items are not suggestions nor part of one.
        (
            "1. Clarity:\n   - Define X.\n   - Add an example.\n2. Accuracy:\n\t- Fix the date.\n3. Cite a source.\n4. Shorten it.",
            ["Clarity:\n  - Define X.\n  - Add an example.", "Accuracy:\n  - Fix the date.", "Cite a source."],
        ),
        ("**Clarity**\n- Define X.\n- Add an example.\n### Accuracy\n- Fix the date.", ["Define X.", "Add an example.", "Fix the date."]),
        ("Style:\n  * Use shorter sentences.\nFacts:\n  * Fix the date.", ["Use shorter sentences.", "Fix the date."]),
        # A reply opening with a space (raw /generate output) keeps its first item.
        (" - Add an example.\n- Fix the date.\n- Shorten the intro.", ["Add an example.", "Fix the date.", "Shorten the intro."]),
        # Bold numbering is a list; an introduction or heading without one is not a suggestion.
        ("Here are my suggestions:\n**1.** Add an example.\n**2.** Fix the date.\n**3.** Shorten the intro.", ["Add an example.", "Fix the date.", "Shorten the intro."]),
        ("**1. Accuracy**\nFix the date.\n**2. Detail**\nAdd an example.", ["Accuracy Fix the date.", "Detail Add an example."]),
        ("To improve it:\nAdd an example.\nFix the date.", ["Add an example.", "Fix the date."]),
        ("None needed.", []),
    ],
)
def test_suggestions_are_the_advice_list_items(advice: str, expected: list[str]) -> None:
    assert parse_suggestions(advice) == expected


def test_an_advisor_that_declines_stops_the_turn_before_the_editor() -> None:
    chat = ScriptedChat(advice="No changes are needed: the answer is right.")
    (turn,) = refine(chat).turns
    assert turn.final == "Blue." and turn.rounds[0].stop == "no_suggestions"
    assert "editor" not in chat.roles and "judge" not in chat.roles


def test_a_blank_system_prompt_adds_no_context() -> None:
    # ShareGPT rows often carry "system": "": every call would open with an empty "System:" line.
    assert render_context("", []) == render_context("  ", []) == render_context(None, []) == ""
    assert "System" not in render_context("", [("Hi.", "Hello!")])
    assert render_context("Be brief.", []) == "Earlier in the conversation:\nSystem: Be brief.\n\n"


def test_row_errors_cross_process_boundaries() -> None:
    # num_proc workers send an on_error="raise" failure back pickled: it must arrive intact.
    error = pickle.loads(pickle.dumps(RowError("validation", "HTTP 422: too long")))
    assert (type(error), str(error)) == (RowError, "validation: HTTP 422: too long")
    done = refine(ScriptedChat())
    stopped = pickle.loads(pickle.dumps(Interrupted(RowError("server", "HTTP 500"), done)))
    assert str(stopped) == "server: HTTP 500" and stopped.done == done and isinstance(stopped.done, RefinedConversation)


def test_render_context_without_a_system_prompt() -> None:
    assert render_context(None, [("Hi.", "Hello!")]) == "Earlier in the conversation:\nUser: Hi.\nAssistant: Hello!\n\n"


class Recording(ScriptedChat):
    """Keeps the task text of every call."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.tasks = []

    async def __call__(self, messages, *, schema=None, affinity=None):
        self.tasks.append(messages[1]["content"])
        return await super().__call__(messages, schema=schema, affinity=affinity)


def test_later_turns_see_the_refined_earlier_turns_within_context_turns() -> None:
    conversation = Conversation(None, (Exchange("Q1?", "Blue."), Exchange("Q2?", "Blue."), Exchange("Q3?", "Blue.")))
    chat = Recording()
    asyncio.run(refine_conversation(conversation, CoEvolOptions(max_rounds=1, context_turns=1), chat))
    last = chat.tasks[-1]  # a call of the third turn
    assert "User: Q2?" in last and "User: Q1?" not in last
    assert "Assistant: A better answer, cut in the mid" in last and "Assistant: Blue." not in last


def test_the_next_round_refines_the_accepted_edit() -> None:
    (turn,) = refine(ScriptedChat(), max_rounds=2).turns
    assert [r.stop for r in turn.rounds] == [None, "no_change"] and turn.accepted_rounds == 1


def test_an_edit_equal_to_the_response_but_its_trailing_newline_changes_nothing() -> None:
    chat = ScriptedChat(edit="Blue.")
    conversation = Conversation(None, (Exchange("Name a colour.", "Blue.\n"),))
    (turn,) = asyncio.run(refine_conversation(conversation, CoEvolOptions(), chat)).turns
    assert turn.rounds[0].stop == "no_change" and "judge" not in chat.roles


class FailingAdvisor(ScriptedChat):
    """The advisor's second call fails (round 2), after round 1 was accepted."""

    async def __call__(self, messages, *, schema=None, affinity=None):
        reply = await super().__call__(messages, schema=schema, affinity=affinity)
        if self.roles.count("advisor") > 1:
            raise RowError("server", "HTTP 500")
        return reply


def test_an_interrupted_turn_keeps_its_accepted_rounds() -> None:
    with pytest.raises(Interrupted) as info:
        refine(FailingAdvisor(), max_rounds=2)
    (turn,) = info.value.done.turns
    assert turn.final == "A better answer, cut in the mid" and len(turn.rounds) == 1


def test_nothing_to_suggest_needs_a_whole_word() -> None:
    assert parse_suggestions("None.js is misspelt; write Node.js.") == ["None.js is misspelt; write Node.js."]


def test_tab_indented_sub_items_stay_under_their_item() -> None:
    assert parse_suggestions("  1. Clarity:\n\t- Define X.\n  2. Fix the date.") == ["Clarity:\n  - Define X.", "Fix the date."]
