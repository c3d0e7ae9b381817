"""The agents' personas and task templates, in one place so that a run can be reproduced from them.

A call's user message is `instruction_block`, then `answer_block` (for the roles that review the
answer), then the role's persona and task; `system` is the same for every call.
Templates are `str.format` strings. Each one uses exactly the fields listed in `TEMPLATE_FIELDS`
(a judge shown one answer, or an editor never shown the suggestions, would give output that looks
right and means nothing): an override that leaves one out or names another is refused before any
request is made. `{context}` is the window of earlier conversation turns, already rendered (empty
for single-turn rows).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Mapping

from .errors import ConfigError

# Every call of a row opens with the same bytes: the system message, the conversation so far and
# the instruction, then (for every role that reads it) the answer under review. Only then come the
# role's persona and its task. Servers reuse the KV cache of a byte-identical prefix (vLLM, SGLang,
# TGI 3, llama.cpp), so what the calls of a row share is read once per row, not once per call.
SYSTEM = (
    "You are one member of a team that improves the answers an AI assistant gave. Each request "
    "shows the instruction, usually the answer, and then your role and your task."
)
INSTRUCTION_BLOCK = "{context}Instruction:\n{instruction}\n\n"
ANSWER_BLOCK = "Answer under review:\n{response}\n\n"

ADVOCATE_PERSONA = (
    "Your role: a fair-minded reviewer. Your job in this debate is to defend the answer under "
    "review: find what it gets right and explain why it serves the user."
)
CRITIC_PERSONA = (
    "Your role: an exacting reviewer. Your job in this debate is to find where the answer under "
    "review falls short (errors, gaps, vagueness, poor structure) and to say precisely how each "
    "problem could be fixed."
)
ADVISOR_PERSONA = (
    "Your role: the editor-in-chief. You weigh what is known about the answer, keep only the "
    "points that hold up, and turn them into a short list of concrete revisions."
)
EDITOR_PERSONA = (
    "Your role: a skilled writer who revises answers. You apply the requested revisions "
    "faithfully and return nothing but the revised answer."
)
JUDGE_PERSONA = (
    "Your role: an impartial judge. You compare answers on helpfulness, relevance, accuracy and "
    "level of detail, and you are not swayed by their order or length."
)

ADVOCATE_TASK = (
    "Argue that the answer under review is correct and useful. List its strongest points, one "
    "per line, each with the reason it matters. Be brief."
)
CRITIC_TASK = (
    "Argue that the answer under review can be improved. List its weaknesses, one per line, "
    "each with a concrete fix. Be brief."
)
REBUTTAL_TASK = (
    "The other reviewer wrote this review of the same answer:\n{other_review}\n\n"
    "Weigh each of its points in turn: say whether it is sound or not, and why. Keep the points "
    "that are right, even where they contradict your own review."
)
ADVISOR_TASK = (
    "Review in favour of the answer:\n{advocate_review}\n\n"
    "Review against the answer:\n{critic_review}\n\n"
    "Reply of the reviewer in favour:\n{advocate_rebuttal}\n\n"
    "Reply of the reviewer against:\n{critic_rebuttal}\n\n"
    "Keep only the ideas that both the evidence and the instruction support. Write at most "
    "three concrete suggestions for improving the answer, one per line, each starting with "
    "'- '. Write nothing else."
)
# The paper's simpler pipelines (ablations): an advisor without the debate, an editor from scratch.
ADVISOR_DIRECT_TASK = (
    "Write at most three concrete suggestions for improving the answer under review, one per "
    "line, each starting with '- '. Write nothing else."
)
ADVISOR_BLIND_TASK = (
    "Before anyone answers this instruction, write at most three concrete suggestions for what "
    "an excellent answer must do, one per line, each starting with '- '. Write nothing else."
)
EDITOR_WRITE_TASK = "Write the best answer to this instruction. Reply with the answer only, without any preamble."

EDITOR_TASK = (
    "Suggestions:\n{suggestions}\n\n"
    "Rewrite the answer under review following the suggestions. Skip any suggestion you cannot "
    "carry out. Reply with the new answer only, without any preamble or comment."
)
# The judge reads no "answer under review": that block would tell it which answer is the old one.
JUDGE_COMPARE_TASK = (
    "[Answer A]\n{response_a}\n[End of answer A]\n\n"
    "[Answer B]\n{response_b}\n[End of answer B]\n\n"
    "Which answer serves the instruction better? On the first line write only A, B or tie. "
    "Then explain your choice in a few sentences."
)
JUDGE_SCORE_TASK = (
    "[Answer A]\n{response_a}\n[End of answer A]\n\n"
    "[Answer B]\n{response_b}\n[End of answer B]\n\n"
    "Rate each answer from 1 to 10. On the first line write only the two scores, for A then "
    "for B, separated by a space. Then explain your scores in a few sentences."
)

_DEBATE = frozenset({"advocate_review", "critic_review", "advocate_rebuttal", "critic_rebuttal"})
TEMPLATE_FIELDS: Mapping[str, frozenset[str]] = {
    "system": frozenset(),
    "instruction_block": frozenset({"context", "instruction"}),
    "answer_block": frozenset({"response"}),
    "advocate_persona": frozenset(),
    "critic_persona": frozenset(),
    "advisor_persona": frozenset(),
    "editor_persona": frozenset(),
    "judge_persona": frozenset(),
    "advocate_task": frozenset(),
    "critic_task": frozenset(),
    "rebuttal_task": frozenset({"other_review"}),
    "advisor_task": _DEBATE,
    "advisor_direct_task": frozenset(),
    "advisor_blind_task": frozenset(),
    "editor_task": frozenset({"suggestions"}),
    "editor_write_task": frozenset(),
    "judge_compare_task": frozenset({"response_a", "response_b"}),
    "judge_score_task": frozenset({"response_a", "response_b"}),
}


@dataclasses.dataclass(frozen=True)
class Prompts:
    """All templates of one run. Override any of them by keyword: `Prompts(editor_task=...)`."""

    system: str = SYSTEM
    instruction_block: str = INSTRUCTION_BLOCK
    answer_block: str = ANSWER_BLOCK
    advocate_persona: str = ADVOCATE_PERSONA
    critic_persona: str = CRITIC_PERSONA
    advisor_persona: str = ADVISOR_PERSONA
    editor_persona: str = EDITOR_PERSONA
    judge_persona: str = JUDGE_PERSONA
    advocate_task: str = ADVOCATE_TASK
    critic_task: str = CRITIC_TASK
    rebuttal_task: str = REBUTTAL_TASK
    advisor_task: str = ADVISOR_TASK
    advisor_direct_task: str = ADVISOR_DIRECT_TASK
    advisor_blind_task: str = ADVISOR_BLIND_TASK
    editor_task: str = EDITOR_TASK
    editor_write_task: str = EDITOR_WRITE_TASK
    judge_compare_task: str = JUDGE_COMPARE_TASK
    judge_score_task: str = JUDGE_SCORE_TASK

    def __post_init__(self) -> None:
        for name, allowed in TEMPLATE_FIELDS.items():
            template = getattr(self, name)
            if not isinstance(template, str) or not template.strip():
                raise ConfigError(f"Prompt template {name!r} must be a non-empty string.")
            try:
                used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
            except ValueError as err:
                raise ConfigError(f"Prompt template {name!r} is not a valid format string: {err}") from err
            unknown = used - allowed
            if unknown:
                shared = ""
                if unknown & (TEMPLATE_FIELDS["instruction_block"] | TEMPLATE_FIELDS["answer_block"]):
                    shared = " The instruction and the answer under review already open every request (templates 'instruction_block' and 'answer_block')."
                raise ConfigError(
                    f"Prompt template {name!r} uses unknown field(s) {sorted(unknown)}; "
                    f"it must use each of {sorted(allowed) or 'no fields'} and nothing else (write '{{{{' for a literal brace).{shared}"
                )
            missing = allowed - used
            if missing:
                fields = ", ".join("{" + field + "}" for field in sorted(allowed))
                raise ConfigError(f"Prompt template {name!r} leaves out {sorted(missing)}: it must use each of {fields}, or the role never sees them.")

    @classmethod
    def from_value(cls, value: "Prompts | Mapping[str, str] | None") -> "Prompts":
        """Accept a `Prompts`, a mapping of overrides, or None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, Prompts):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - set(TEMPLATE_FIELDS)
            if unknown:
                raise ConfigError(
                    f"Unknown prompt template(s) {sorted(unknown)}; known: {sorted(TEMPLATE_FIELDS)}."
                )
            return cls(**value)
        raise ConfigError(f"prompts must be a Prompts, a dict of template overrides or None, not {type(value).__name__}.")

    def render(self, name: str, **fields: Any) -> str:
        return getattr(self, name).format(**fields)
