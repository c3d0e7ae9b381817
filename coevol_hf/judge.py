"""Reading the judge's verdicts and merging the two orders into one decision.

The judge sees the old and the new response twice, once in each order, to cancel position bias.
Each readable verdict becomes a pair of scores for (old, new); an unreadable one is dropped, one
readable verdict alone decides, and none means no decision. Compare mode scores a win 1, a loss
0 and a tie 0.5 each, summed over the orders; score mode averages the 1-10 scores.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Literal

JudgeMode = Literal["compare", "score"]
JUDGE_MODES: tuple[JudgeMode, ...] = ("compare", "score")

Scores = tuple[float, float]

_LABEL_NOISE = re.compile(r"\b(answer|response|assistant|output|option|verdict|winner|better|is|the|final)\b|[^\w\s.]", re.I)
_TIE_WORDS = re.compile(r"\b(tie|tied|draw|equal|equally)\b", re.I)
_ARTICLE_BEFORE_TIE = re.compile(r"\ba\s+(?=(tie|draw)\b)", re.I)  # "A tie." names no answer
_AB = re.compile(r"\b([AB])\b")
# "A is not better", "Not B", "B is worse": an answer named in the same clause as a negation is
# read as no verdict ("B, which has less padding" still names B).
_NEGATIVE = r"(?i:\b(?:not|no|neither|nor|never|worse|worst|less|lower|inferior|weaker|wrong|incorrect|lacks?|fails?)\b|n't\b)"
_NEGATED_LABEL = re.compile(rf"\b[AB]\b[^,;.]*{_NEGATIVE}|{_NEGATIVE}[^,;.]*\b[AB]\b")
_OUT_OF_TEN = re.compile(r"\s*(/|out of)\s*10\b", re.I)
_LIST_MARK = re.compile(r"^\s*\d+[.)]\s+")  # "1. A: 8, B: 6": the 1 is no score
_NUMBER = re.compile(r"(?<![\w.])(10(?:\.0+)?|[1-9](?:\.\d+)?)(?!\w|\.\d)")  # "8." ends a sentence

# JSON answers the judge is asked for where the server supports structured output.
COMPARE_SCHEMA = {
    "type": "object",
    "properties": {"better": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
    "required": ["better", "reason"],
}
SCORE_SCHEMA = {
    "type": "object",
    "properties": {
        "score_a": {"type": "integer", "minimum": 1, "maximum": 10},
        "score_b": {"type": "integer", "minimum": 1, "maximum": 10},
        "reason": {"type": "string"},
    },
    "required": ["score_a", "score_b", "reason"],
}


def parse_verdict(text: str, mode: JudgeMode, *, cut_off: bool = False) -> Scores | None:
    """Scores for (A, B) from one verdict, or None if it cannot be read with confidence.

    A verdict the server cut off counts only if its JSON is complete: its first line alone may
    be the start of a sentence that would have said otherwise.
    """
    as_json = _parse_json(text)
    scores = _from_json(as_json, mode) if as_json is not None else None
    if scores is not None or cut_off:
        return scores
    if as_json is not None:
        # JSON that is no verdict: quoted from an answer, or a verdict with wrong fields. Only
        # what comes before it may be the verdict line, never the words inside it.
        text = text[: text.find("{")]
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _parse_compare_line(first_line) if mode == "compare" else _parse_score_line(first_line)


@dataclasses.dataclass(frozen=True)
class Decision:
    """The merged judgement of one round, with the per-order scores kept for auditing."""

    old_first: Scores | None  # (old, new) from the verdict that saw the old response first
    new_first: Scores | None  # (old, new) from the verdict that saw the new response first
    merged: Scores | None  # (old, new), None if neither verdict could be read

    @property
    def accepted(self) -> bool:
        return self.merged is not None and self.merged[1] > self.merged[0]


def merge(old_first_ab: Scores | None, new_first_ab: Scores | None, mode: JudgeMode) -> Decision:
    """Combine the verdict with old as A and the verdict with new as A into one (old, new) pair."""
    old_first = old_first_ab
    new_first = (new_first_ab[1], new_first_ab[0]) if new_first_ab is not None else None
    readable = [s for s in (old_first, new_first) if s is not None]
    if not readable:
        return Decision(old_first, new_first, None)
    olds, news = zip(*readable)
    if mode == "compare":
        merged = (float(sum(olds)), float(sum(news)))
    else:
        merged = (sum(olds) / len(olds), sum(news) / len(news))
    return Decision(old_first, new_first, merged)


def _parse_compare_line(line: str) -> Scores | None:
    if _NEGATED_LABEL.search(line):
        return None
    cleaned = _LABEL_NOISE.sub(" ", _ARTICLE_BEFORE_TIE.sub("", line)).strip()
    labels = set(_AB.findall(cleaned.upper() if len(cleaned) <= 2 else cleaned))
    tie = bool(_TIE_WORDS.search(line))
    if tie and not labels:
        return (0.5, 0.5)
    if len(labels) == 1 and not tie:
        return (1.0, 0.0) if labels == {"A"} else (0.0, 1.0)
    return None


def _parse_score_line(line: str) -> Scores | None:
    """Two scores, in the order the line names the answers ("B: 6, A: 8" is A 8, B 6)."""
    numbers = _NUMBER.findall(_OUT_OF_TEN.sub("", _LIST_MARK.sub("", line)))
    labels = _AB.findall(line)
    if len(numbers) != 2 or labels not in ([], ["A", "B"], ["B", "A"]):
        return None
    first, second = float(numbers[0]), float(numbers[1])
    return (second, first) if labels == ["B", "A"] else (first, second)


def _parse_json(text: str) -> dict | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):  # a model can nest brackets deeper than the parser goes
        return None
    return value if isinstance(value, dict) else None


def _from_json(value: dict, mode: JudgeMode) -> Scores | None:
    if mode == "compare":
        better = str(value.get("better", "")).strip()
        return {"A": (1.0, 0.0), "B": (0.0, 1.0)}.get(better.upper()) or ((0.5, 0.5) if better.lower() == "tie" else None)
    try:
        a, b = float(value["score_a"]), float(value["score_b"])
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: an integer of 400 digits
        return None
    return (a, b) if 1 <= a <= 10 and 1 <= b <= 10 else None
