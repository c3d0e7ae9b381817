"""The CoEvol rounds (debate, advise, edit, judge) over an abstract chat function.

Nothing here knows about HTTP or `datasets`: `chat` takes messages and returns a `Reply`, so the
same code runs against TGI, any Messages API server, or a test double. Calls that do not depend
on each other (the two debaters of each stage, the two judge orders) run concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any, Awaitable, Protocol, Sequence, TypeVar

from .config import RefineConfig
from .formats import Conversation
from .judge import COMPARE_SCHEMA, SCORE_SCHEMA, Decision, merge, parse_verdict
from .prompts import Prompts

Message = dict[str, str]
T = TypeVar("T")

MAX_SUGGESTIONS = 3
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|suggestion\s*\d*\s*[:.)-])\s*", re.I)


@dataclasses.dataclass(frozen=True)
class Reply:
    """One answer. `cut_off`: the server stopped at `max_new_tokens` (finish_reason "length")."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cut_off: bool = False


class Chat(Protocol):
    """One LLM call. `schema` asks for JSON of that shape where the server can enforce it."""

    async def __call__(self, messages: Sequence[Message], *, schema: dict | None = None) -> Reply: ...


@dataclasses.dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclasses.dataclass
class RefinedConversation:
    responses: list[str]
    accepted_rounds: list[int]
    turns: list[dict[str, Any]]  # one trace entry per refined turn
    usage: Usage


async def refine_conversation(conversation: Conversation, config: RefineConfig, chat: Chat) -> RefinedConversation:
    """Refine every assistant turn in order; later turns see the already refined earlier ones."""
    metered = _Metered(chat)
    refined: list[str] = []
    accepted_rounds: list[int] = []
    turns: list[dict[str, Any]] = []
    for index, exchange in enumerate(conversation.exchanges):
        window = conversation.exchanges[max(0, index - config.context_turns) : index] if config.context_turns else ()
        context = _render_context(conversation.system, [(e.user, refined[index - len(window) + i]) for i, e in enumerate(window)])
        final, rounds = await _refine_turn(metered, config, context, exchange.user, exchange.assistant)
        refined.append(final)
        accepted_rounds.append(sum(r["accepted"] for r in rounds))
        turns.append({"turn": index, "instruction": exchange.user, "rounds": rounds})
    return RefinedConversation(refined, accepted_rounds, turns, metered.usage)


async def _refine_turn(chat: Chat, config: RefineConfig, context: str, instruction: str, response: str) -> tuple[str, list[dict]]:
    fields = {"context": context, "instruction": instruction}
    if config.pipeline != "coevol":
        trace = await _single_pass(chat, config, fields, response)
        return (trace["edit"] if trace["accepted"] else response), [{"round": 1, **trace}]
    rounds: list[dict[str, Any]] = []
    current = response
    for number in range(1, config.max_rounds + 1):
        trace = await _run_round(chat, config, fields, current)
        rounds.append({"round": number, **trace})
        if not trace["accepted"]:
            break
        current = trace["edit"]
    return current, rounds


async def _run_round(chat: Chat, config: RefineConfig, fields: dict[str, str], response: str) -> dict[str, Any]:
    """Debate, advise, edit, judge: the edit is accepted only if the judge finds it strictly better."""
    trace = await _debate_advise_edit(chat, config.prompts, fields, response)
    if trace["stop"] is not None:
        return {**trace, "verdicts": None, "scores": None, "accepted": False}
    verdicts, decision = await judge_both_orders(chat, config, fields, response, trace["edit"])
    return {
        **trace,
        "verdicts": verdicts,
        "scores": _pair(decision.merged),
        "accepted": decision.accepted,
        "stop": None if decision.accepted else ("unreadable_verdicts" if decision.merged is None else "not_better"),
    }


async def _single_pass(chat: Chat, config: RefineConfig, fields: dict[str, str], response: str) -> dict[str, Any]:
    """The paper's simpler pipelines: one pass, no judge; a usable edit replaces the response."""
    prompts = config.prompts
    if config.pipeline == "edit":
        edit = await _edit(chat, prompts, "editor_write_task", fields)
        trace: dict[str, Any] = {"edit": edit, "stop": None if edit else "no_change"}
    elif config.pipeline == "advise_edit_blind":
        trace = await _advise_and_edit(chat, prompts, fields, response, "advisor_blind_task", {})
    elif config.pipeline == "advise_edit":
        trace = await _advise_and_edit(chat, prompts, fields, response, "advisor_direct_task", {"response": response})
    else:  # "debate_advise_edit"
        trace = await _debate_advise_edit(chat, prompts, fields, response)
    return {**trace, "verdicts": None, "scores": None, "accepted": trace["stop"] is None}


async def _debate_advise_edit(chat: Chat, prompts: Prompts, fields: dict[str, str], response: str) -> dict[str, Any]:
    """The debate, then the advisor who reads all four turns of it, then the editor."""
    debate = await _debate(chat, prompts, fields, response)
    return {"debate": debate, **await _advise_and_edit(chat, prompts, fields, response, "advisor_task", {"response": response, **debate})}


async def _debate(chat: Chat, prompts: Prompts, fields: dict[str, str], response: str) -> dict[str, str]:
    """Two reviewers, for and against; then each weighs the other's review."""

    def opening(persona: str, task: str) -> list[Message]:
        return [_system(prompts.render(persona)), _user(prompts.render(task, **fields, response=response))]

    advocate, critic = opening("advocate_persona", "advocate_task"), opening("critic_persona", "critic_task")
    advocate_review, critic_review = await gather_or_cancel(chat(advocate), chat(critic))
    advocate_rebuttal, critic_rebuttal = await gather_or_cancel(
        chat([*advocate, _assistant(advocate_review.text), _user(prompts.render("rebuttal_task", other_review=critic_review.text))]),
        chat([*critic, _assistant(critic_review.text), _user(prompts.render("rebuttal_task", other_review=advocate_review.text))]),
    )
    return {
        "advocate_review": advocate_review.text,
        "critic_review": critic_review.text,
        "advocate_rebuttal": advocate_rebuttal.text,
        "critic_rebuttal": critic_rebuttal.text,
    }


async def _advise_and_edit(chat: Chat, prompts: Prompts, fields: dict[str, str], response: str, advisor_task: str, seen: dict[str, str]) -> dict[str, Any]:
    """The advisor's suggestions (from what `seen` shows it), then the editor's revision of `response`."""
    advice = await chat([_system(prompts.render("advisor_persona")), _user(prompts.render(advisor_task, **fields, **seen))])
    suggestions = parse_suggestions(advice.text)
    trace: dict[str, Any] = {"advice": advice.text, "suggestions": suggestions}
    if not suggestions:
        return {**trace, "edit": None, "stop": "no_suggestions"}
    listed = "\n".join(f"- {s}" for s in suggestions)
    edit = await _edit(chat, prompts, "editor_task", fields, response=response, suggestions=listed)
    return {**trace, "edit": edit, "stop": None if edit and edit != response.strip() else "no_change"}


async def _edit(chat: Chat, prompts: Prompts, task: str, fields: dict[str, str], **extra: str) -> str:
    return (await chat([_system(prompts.render("editor_persona")), _user(prompts.render(task, **fields, **extra))])).text.strip()


async def judge_both_orders(chat: Chat, config: RefineConfig, fields: dict[str, str], old: str, new: str) -> tuple[dict[str, Any], Decision]:
    """The judge sees (old, new) and (new, old) concurrently; the merge cancels position bias."""
    judge_task = "judge_compare_task" if config.judge_mode == "compare" else "judge_score_task"
    schema = COMPARE_SCHEMA if config.judge_mode == "compare" else SCORE_SCHEMA
    prompts = config.prompts

    def judge(a: str, b: str) -> Awaitable[Reply]:
        return chat([_system(prompts.render("judge_persona")), _user(prompts.render(judge_task, **fields, response_a=a, response_b=b))], schema=schema)

    old_first, new_first = await gather_or_cancel(judge(old, new), judge(new, old))
    decision = merge(parse_verdict(old_first.text, config.judge_mode), parse_verdict(new_first.text, config.judge_mode), config.judge_mode)
    verdicts = {
        "old_first": {"text": old_first.text, "scores": _pair(decision.old_first)},
        "new_first": {"text": new_first.text, "scores": _pair(decision.new_first)},
    }
    return verdicts, decision


def parse_suggestions(advice: str) -> list[str]:
    """At most three suggestion lines, without bullets or numbering."""
    lines = (_BULLET.sub("", line).strip() for line in advice.splitlines())
    return [line for line in lines if line][:MAX_SUGGESTIONS]


def _render_context(system: str | None, earlier: Sequence[tuple[str, str]]) -> str:
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


class _Metered:
    """Counts calls and tokens of one conversation for its trace."""

    def __init__(self, chat: Chat) -> None:
        self._chat = chat
        self.usage = Usage()

    async def __call__(self, messages: Sequence[Message], *, schema: dict | None = None) -> Reply:
        reply = await self._chat(messages, schema=schema)
        self.usage.calls += 1
        self.usage.prompt_tokens += reply.prompt_tokens
        self.usage.completion_tokens += reply.completion_tokens
        return reply


def _pair(scores: tuple[float, float] | None) -> dict[str, float] | None:
    return None if scores is None else {"old": scores[0], "new": scores[1]}


def _system(text: str) -> Message:
    return {"role": "system", "content": text}


def _user(text: str) -> Message:
    return {"role": "user", "content": text}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}
