"""The agents' personas and task templates, in one place so that a run can be reproduced from them.

Templates are `str.format` strings. Each one may use only the fields listed in `TEMPLATE_FIELDS`;
an override that names another field is refused before any request is made. `{context}` is
the window of earlier conversation turns, already rendered (empty for single-turn rows).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Mapping

from .errors import ConfigError

_TURN = "{context}Instruction:\n{instruction}\n\n"

ADVOCATE_PERSONA = (
    "You are a fair-minded reviewer of AI assistant answers. Your job in this debate is to "
    "defend the answer you are shown: find what it gets right and explain why it serves the user."
)
CRITIC_PERSONA = (
    "You are an exacting reviewer of AI assistant answers. Your job in this debate is to find "
    "where the answer you are shown falls short (errors, gaps, vagueness, poor structure) and "
    "to say precisely how each problem could be fixed."
)
ADVISOR_PERSONA = (
    "You are an editor-in-chief. You weigh what is known about an answer, keep only the points "
    "that hold up, and turn them into a short list of concrete revisions."
)
EDITOR_PERSONA = (
    "You are a skilled writer who revises answers. You apply the requested revisions faithfully "
    "and return nothing but the revised answer."
)
JUDGE_PERSONA = (
    "You are an impartial judge of AI assistant answers. You compare answers on helpfulness, "
    "relevance, accuracy and level of detail, and you are not swayed by their order or length."
)

ADVOCATE_TASK = (
    _TURN + "Answer under review:\n{response}\n\n"
    "Argue that this answer is correct and useful. List its strongest points, one per line, "
    "each with the reason it matters. Be brief."
)
CRITIC_TASK = (
    _TURN + "Answer under review:\n{response}\n\n"
    "Argue that this answer can be improved. List its weaknesses, one per line, each with a "
    "concrete fix. Be brief."
)
REBUTTAL_TASK = (
    "The other reviewer wrote this review of the same answer:\n{other_review}\n\n"
    "Weigh each of its points in turn: say whether it is sound or not, and why. Keep the points "
    "that are right, even where they contradict your own review."
)
ADVISOR_TASK = (
    _TURN + "Answer under review:\n{response}\n\n"
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
    _TURN + "Answer under review:\n{response}\n\n"
    "Write at most three concrete suggestions for improving the answer, one per line, each "
    "starting with '- '. Write nothing else."
)
ADVISOR_BLIND_TASK = (
    _TURN + "Before anyone answers this instruction, write at most three concrete suggestions for "
    "what an excellent answer must do, one per line, each starting with '- '. Write nothing else."
)
EDITOR_WRITE_TASK = _TURN + "Write the best answer to this instruction. Reply with the answer only, without any preamble."

EDITOR_TASK = (
    _TURN + "Current answer:\n{response}\n\n"
    "Suggestions:\n{suggestions}\n\n"
    "Rewrite the answer following the suggestions. Skip any suggestion you cannot carry out. "
    "Reply with the new answer only, without any preamble or comment."
)
JUDGE_COMPARE_TASK = (
    _TURN + "[Answer A]\n{response_a}\n[End of answer A]\n\n"
    "[Answer B]\n{response_b}\n[End of answer B]\n\n"
    "Which answer serves the instruction better? On the first line write only A, B or tie. "
    "Then explain your choice in a few sentences."
)
JUDGE_SCORE_TASK = (
    _TURN + "[Answer A]\n{response_a}\n[End of answer A]\n\n"
    "[Answer B]\n{response_b}\n[End of answer B]\n\n"
    "Rate each answer from 1 to 10. On the first line write only the two scores, for A then "
    "for B, separated by a space. Then explain your scores in a few sentences."
)

_TASK_FIELDS = frozenset({"context", "instruction"})
TEMPLATE_FIELDS: Mapping[str, frozenset[str]] = {
    "advocate_persona": frozenset(),
    "critic_persona": frozenset(),
    "advisor_persona": frozenset(),
    "editor_persona": frozenset(),
    "judge_persona": frozenset(),
    "advocate_task": _TASK_FIELDS | {"response"},
    "critic_task": _TASK_FIELDS | {"response"},
    "rebuttal_task": frozenset({"other_review"}),
    "advisor_task": _TASK_FIELDS
    | {"response", "advocate_review", "critic_review", "advocate_rebuttal", "critic_rebuttal"},
    "advisor_direct_task": _TASK_FIELDS | {"response"},
    "advisor_blind_task": _TASK_FIELDS,
    "editor_task": _TASK_FIELDS | {"response", "suggestions"},
    "editor_write_task": _TASK_FIELDS,
    "judge_compare_task": _TASK_FIELDS | {"response_a", "response_b"},
    "judge_score_task": _TASK_FIELDS | {"response_a", "response_b"},
}


@dataclasses.dataclass(frozen=True)
class Prompts:
    """All templates of one run. Override any of them by keyword: `Prompts(editor_task=...)`."""

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
                raise ConfigError(
                    f"Prompt template {name!r} uses unknown field(s) {sorted(unknown)}; "
                    f"it may use {sorted(allowed) or 'no fields'} (write '{{{{' for a literal brace)."
                )

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
