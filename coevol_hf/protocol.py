"""The CoEvol rounds (debate, advise, edit, judge) over an abstract chat function.

Nothing here knows about HTTP or `datasets`: `chat` takes messages and returns a `Reply`, so the
same code runs against TGI, any Messages API server, or a test double. Calls that do not depend
on each other (the two debaters of each stage, the two judge orders) run concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from typing import Any, Awaitable, Protocol, Sequence, TypeVar

from .errors import RowError
from .formats import Conversation
from .judge import COMPARE_SCHEMA, SCORE_SCHEMA, Decision, JudgeMode, merge, parse_verdict
from .options import CoEvolOptions
from .prompts import Prompts
from .trace import Debate, Round, Turn, Usage, Verdict

Message = dict[str, str]
T = TypeVar("T")

MAX_SUGGESTIONS = 3
_BULLET = re.compile(r"^\s*(?:[-*•+]\s+|\d+[.)]\s+|suggestion\s*\d*\s*[:.)-]\s*)", re.I)  # not "---", "1.5" or "**bold**"
_BOLD_NUMBER = re.compile(r"^(\s*)\*\*(\d+[.)])(?:\*\*)?\s+(.*?)(?:\*\*)?(:?)\s*$")  # "**1.** Fix it", "**1. Accuracy**" read as "1. ..."
_HEADING = re.compile(r"^\s*(#+\s.*|\*\*[^*]+\*\*:?|.*:)\s*$")  # "### Style", "**Accuracy**", "Accuracy:"
_NOTHING_TO_SUGGEST = re.compile(
    r"^(none( needed| necessary| required)?|n/a|nothing( else)?( to (suggest|improve|change))?|no (further |other )?(suggestions?|changes?|improvements?)( are| is)?( needed| necessary| required)?)(\W*$|\s*[.:;]\s)", re.I
)


@dataclasses.dataclass(frozen=True)
class Reply:
    """One answer. `cut_off`: the server stopped at `max_new_tokens` (finish_reason "length")."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cut_off: bool = False


class Chat(Protocol):
    """One LLM call. `schema` asks for JSON of that shape where the server can enforce it;
    `affinity` names the row, so that its calls (which share a prompt prefix) can go to one replica."""

    async def __call__(self, messages: Sequence[Message], *, schema: dict | None = None, affinity: str | None = None) -> Reply: ...


@dataclasses.dataclass(frozen=True)
class RefinedConversation:
    turns: tuple[Turn, ...]
    usage: Usage

    @property
    def responses(self) -> list[str]:
        return [turn.final for turn in self.turns]


class Interrupted(RowError):
    """A call of the row finally failed: `done` holds the turns and rounds finished before it,
    if any (an accepted edit was judged better and paid for, so it is not thrown away)."""

    def __init__(self, error: RowError, done: RefinedConversation) -> None:
        super().__init__(error.kind, error.args[0])
        self.done = done

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (RowError(self.kind, self.args[0]), self.done)


async def refine_conversation(conversation: Conversation, options: CoEvolOptions, chat: Chat) -> RefinedConversation:
    """Refine every assistant turn in order; later turns see the already refined earlier ones.

    A call that finally fails stops the row with `Interrupted`, which carries the turns and
    rounds done before it.
    """
    metered = Metered(chat, conversation)
    turns: list[Turn] = []
    for index, exchange in enumerate(conversation.exchanges):
        window = range(max(0, index - options.context_turns), index) if options.context_turns else range(0)
        context = render_context(conversation.system, [(conversation.exchanges[i].user, turns[i].final) for i in window])
        rounds: list[Round] = []
        try:
            await _refine_turn(metered, options, {"context": context, "instruction": exchange.user}, exchange.assistant, rounds)
        except RowError as error:
            done = [*turns, Turn(index, exchange.user, exchange.assistant, tuple(rounds))] if rounds else turns
            raise Interrupted(error, RefinedConversation(tuple(done), metered.usage)) from error
        turns.append(Turn(index, exchange.user, exchange.assistant, tuple(rounds)))
    return RefinedConversation(tuple(turns), metered.usage)


async def _refine_turn(chat: Chat, options: CoEvolOptions, fields: dict[str, str], response: str, rounds: list[Round]) -> None:
    """Append the turn's rounds to `rounds` as they finish."""
    if options.pipeline != "coevol":
        rounds.append(await _single_pass(chat, options, fields, response))
        return
    current = response
    for number in range(1, options.max_rounds + 1):
        round_ = await _run_round(chat, options, fields, current, number)
        rounds.append(round_)
        if not round_.accepted:
            break
        current = round_.edit


async def _run_round(chat: Chat, options: CoEvolOptions, fields: dict[str, str], response: str, number: int) -> Round:
    """Debate, advise, edit, judge: the edit is accepted only if the judge finds it strictly better."""
    draft = await _debate_advise_edit(chat, options.prompts, fields, response, number)
    if draft.stop is not None:
        return draft
    old_first, new_first, decision = await judge_both_orders(chat, options.prompts, options.judge_mode, fields, response, draft.edit)
    stop = None if decision.accepted else ("unreadable_verdicts" if decision.merged is None else "not_better")
    cut_off = draft.cut_off + tuple(name for name, v in (("old_first", old_first), ("new_first", new_first)) if v.cut_off)
    return dataclasses.replace(
        draft,
        old_first=Verdict(old_first.text, decision.old_first),
        new_first=Verdict(new_first.text, decision.new_first),
        scores=decision.merged,
        accepted=decision.accepted,
        stop=stop,
        cut_off=cut_off,
    )


async def _single_pass(chat: Chat, options: CoEvolOptions, fields: dict[str, str], response: str) -> Round:
    """The paper's simpler pipelines: one pass, no judge; a usable edit replaces the response."""
    prompts = options.prompts
    if options.pipeline == "edit":
        reply = await chat(ask(prompts, "editor", "editor_write_task", fields))
        draft = _with_edit(Round(1), reply, response=response)
    elif options.pipeline == "advise_edit_blind":
        draft = await _advise_and_edit(chat, prompts, fields, response, "advisor_blind_task", {}, Round(1))
    elif options.pipeline == "advise_edit":
        draft = await _advise_and_edit(chat, prompts, fields, response, "advisor_direct_task", {"response": response}, Round(1))
    else:  # "debate_advise_edit"
        draft = await _debate_advise_edit(chat, prompts, fields, response, 1)
    return dataclasses.replace(draft, accepted=draft.stop is None)


async def _debate_advise_edit(chat: Chat, prompts: Prompts, fields: dict[str, str], response: str, number: int) -> Round:
    """The debate, then the advisor who reads all four turns of it, then the editor."""
    debate, cut_off = await _debate(chat, prompts, fields, response)
    seen = {"response": response, **dataclasses.asdict(debate)}
    return await _advise_and_edit(chat, prompts, fields, response, "advisor_task", seen, Round(number, debate=debate, cut_off=cut_off))


async def _debate(chat: Chat, prompts: Prompts, fields: dict[str, str], response: str) -> tuple[Debate, tuple[str, ...]]:
    """Two reviewers, for and against; then each weighs the other's review."""

    advocate = ask(prompts, "advocate", "advocate_task", fields, response=response)
    critic = ask(prompts, "critic", "critic_task", fields, response=response)
    advocate_review, critic_review = await gather_or_cancel(chat(advocate), chat(critic))
    advocate_rebuttal, critic_rebuttal = await gather_or_cancel(
        chat([*advocate, _assistant(advocate_review.text), _user(prompts.render("rebuttal_task", other_review=critic_review.text))]),
        chat([*critic, _assistant(critic_review.text), _user(prompts.render("rebuttal_task", other_review=advocate_review.text))]),
    )
    replies = {"advocate_review": advocate_review, "critic_review": critic_review, "advocate_rebuttal": advocate_rebuttal, "critic_rebuttal": critic_rebuttal}
    debate = Debate(**{name: reply.text for name, reply in replies.items()})
    return debate, tuple(name for name, reply in replies.items() if reply.cut_off)


async def _advise_and_edit(chat: Chat, prompts: Prompts, fields: dict[str, str], response: str, advisor_task: str, seen: dict[str, str], draft: Round) -> Round:
    """The advisor's suggestions (from what `seen` shows it), then the editor's revision of `response`."""
    advice = await chat(ask(prompts, "advisor", advisor_task, fields, **seen))
    suggestions = parse_suggestions(advice.text)
    draft = dataclasses.replace(draft, advice=advice.text, suggestions=tuple(suggestions), cut_off=draft.cut_off + (("advice",) if advice.cut_off else ()))
    if not suggestions:
        return dataclasses.replace(draft, stop="no_suggestions")
    listed = "\n".join(f"- {s}" for s in suggestions)
    reply = await chat(ask(prompts, "editor", "editor_task", fields, response=response, suggestions=listed))
    return _with_edit(draft, reply, response=response)


def _with_edit(draft: Round, reply: Reply, *, response: str) -> Round:
    """The editor's answer in the round: a cut-off or empty edit, or no change, stops the turn."""
    edit = reply.text.strip()
    if reply.cut_off:
        stop = "edit_cut_off"
    elif not edit:
        stop = "empty_edit"
    elif edit == response.strip():  # also for "edit": a new answer that is the old one changes nothing
        stop = "no_change"
    else:
        stop = None
    return dataclasses.replace(draft, edit=edit, stop=stop, cut_off=draft.cut_off + (("edit",) if reply.cut_off else ()))


async def judge_both_orders(chat: Chat, prompts: Prompts, mode: JudgeMode, fields: dict[str, str], old: str, new: str) -> tuple[Reply, Reply, Decision]:
    """The judge sees (old, new) and (new, old) concurrently; the merge cancels position bias."""
    judge_task = "judge_compare_task" if mode == "compare" else "judge_score_task"
    schema = COMPARE_SCHEMA if mode == "compare" else SCORE_SCHEMA

    def judge(a: str, b: str) -> Awaitable[Reply]:
        return chat(ask(prompts, "judge", judge_task, fields, response_a=a, response_b=b), schema=schema)

    old_first, new_first = await gather_or_cancel(judge(old, new), judge(new, old))
    decision = merge(
        parse_verdict(old_first.text, mode, cut_off=old_first.cut_off),
        parse_verdict(new_first.text, mode, cut_off=new_first.cut_off),
        mode,
    )
    return old_first, new_first, decision


def parse_suggestions(advice: str) -> list[str]:
    """At most three suggestions, without bullets or numbering.

    When the advice has a list, only its items count: a line before it ("Here are my
    suggestions:"), after a blank line or a heading ("**Accuracy**", "Style:") is not a
    suggestion; a line right below an item continues it, and indented sub-items stay under it
    (the first three items count, not the first three lines). Without a
    list, every line is one. "None" or "No changes are needed" is no suggestion, so nothing is
    edited.
    """
    lines = [_BOLD_NUMBER.sub(r"\1\2 \3\4", line) for line in advice.expandtabs(4).splitlines()]
    indents = [_indent(line) for line in lines if _BULLET.match(line)]
    items: list[str] = []
    in_item = False
    for line in lines:
        text = _BULLET.sub("", line).strip()
        if not indents:
            items += [text] if text and not _HEADING.match(line) else []
        elif _BULLET.match(line) and (_indent(line) <= min(indents) or not in_item):  # a first item may be indented more
            items.append(text)
            in_item = True
        elif text and in_item and _BULLET.match(line):
            items[-1] += "\n  - " + text  # a sub-item stays one, under its item
        elif text and in_item and not _HEADING.match(line):
            items[-1] += " " + text
        else:
            in_item = False
    return [item for item in items if re.search(r"\w", item) and not _NOTHING_TO_SUGGEST.match(item)][:MAX_SUGGESTIONS]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def render_context(system: str | None, earlier: Sequence[tuple[str, str]]) -> str:
    """The conversation before the turn under review; a blank system prompt is none."""
    system = system if system and system.strip() else None
    if system is None and not earlier:
        return ""
    lines = ["Earlier in the conversation:"]
    if system is not None:
        lines.append(f"System: {system}")
    for user, assistant in earlier:
        lines += [f"User: {user}", f"Assistant: {assistant}"]
    return "\n".join(lines) + "\n\n"


async def gather_or_cancel(*awaitables: Awaitable[T]) -> list[T]:
    """Run calls concurrently; if one fails, cancel the others instead of paying for them."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Metered:
    """One row's calls: counts their calls and tokens for its record, and gives them one name
    (`affinity`, from the conversation's opening: they share prompt openings)."""

    def __init__(self, chat: Chat, conversation: Conversation, instruction: str = "") -> None:
        opening = f"{conversation.system}\n{conversation.exchanges[0].user if conversation.exchanges else instruction}"
        self._chat = chat
        self._affinity = hashlib.blake2b(opening.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        self.usage = Usage()

    async def __call__(self, messages: Sequence[Message], *, schema: dict | None = None, affinity: str | None = None) -> Reply:
        reply = await self._chat(messages, schema=schema, affinity=affinity or self._affinity)
        self.usage.add(Usage(1, reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens))
        return reply


def ask(prompts: Prompts, role: str, task: str, fields: dict[str, str], *, response: str | None = None, **task_fields: str) -> list[Message]:
    """One call's messages: what the calls of a row share first (so that the server reads it from
    its prefix cache), then the role's persona and task. `response` is the answer under review."""
    opening = prompts.render("instruction_block", **fields)
    if response is not None:
        opening += prompts.render("answer_block", response=response)
    task_text = prompts.render(task, **task_fields)
    return [_system(prompts.render("system")), _user(f"{opening}{prompts.render(role + '_persona')}\n\n{task_text}")]


def _system(text: str) -> Message:
    return {"role": "system", "content": text}


def _user(text: str) -> Message:
    return {"role": "user", "content": text}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}
