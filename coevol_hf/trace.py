"""Typed records of what happened to a row: its run, its turns, their rounds, debates and verdicts.

The protocol writes them, `coevol_trace` stores them as JSON, and the statistics, the card and
the report read them back with `Trace.from_json`: one shape, defined here.

Each trace carries its run (`RunInfo`): the served model, the server, this package's version
and code hash, and every option that can change outputs (prompt templates as a hash, with the
texts of those changed from the defaults), so that data can be described and published long
after the process that made it is gone, and rows of different runs can be told apart.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Mapping

_RUN_KEY = '"run": {'
_DECODER = json.JSONDecoder()

Scores = tuple[float, float]


@dataclasses.dataclass
class Usage:
    """Calls and tokens; `cached_tokens` are prompt tokens the server read from its prefix cache."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def add(self, other: "Usage") -> None:
        # Field by field, not through dataclasses.fields(): this runs once per LLM call.
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens


@dataclasses.dataclass(frozen=True)
class Debate:
    advocate_review: str
    critic_review: str
    advocate_rebuttal: str
    critic_rebuttal: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One judge call: its text and the (old, new) scores read from it, None if unreadable."""

    text: str
    scores: Scores | None


@dataclasses.dataclass(frozen=True)
class Round:
    """One round of a turn. `stop` says why the round did not lead to another, None if accepted."""

    round: int
    debate: Debate | None = None
    advice: str | None = None
    suggestions: tuple[str, ...] = ()
    edit: str | None = None
    old_first: Verdict | None = None
    new_first: Verdict | None = None
    scores: Scores | None = None  # merged (old, new)
    accepted: bool = False
    stop: str | None = None
    cut_off: tuple[str, ...] = ()  # the answers of this round the server cut at max_new_tokens

    @property
    def judged(self) -> bool:
        return self.old_first is not None

    @property
    def order_scores(self) -> tuple[Scores | None, Scores | None]:
        """(old, new) scores of the old-first and the new-first verdict; None where not asked or unreadable."""
        return (self.old_first and self.old_first.scores), (self.new_first and self.new_first.scores)

    @property
    def orders_agree(self) -> bool:
        """Both verdicts were readable and named the same winner."""
        first, second = self.order_scores
        return bool(first and second and winner(first) == winner(second))


@dataclasses.dataclass(frozen=True)
class Turn:
    turn: int
    instruction: str
    original: str
    rounds: tuple[Round, ...]

    @property
    def final(self) -> str:
        """The last accepted edit, or the original response."""
        accepted = [r.edit for r in self.rounds if r.accepted and r.edit is not None]
        return accepted[-1] if accepted else self.original

    @property
    def accepted_rounds(self) -> int:
        return sum(r.accepted for r in self.rounds)


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """How a row was made: enough to describe it on a card and to repeat the run."""

    coevol_hf_version: str
    implementation: str
    model: str
    server: Mapping[str, Any]  # {"kind": "tgi" | "openai", "version": ...}
    options: Mapping[str, Any]  # output-changing options; "prompts" holds the changed templates only
    prompts_sha256: str

    @classmethod
    def of(cls, *, version: str, implementation: str, model: str, server: Mapping[str, Any], options: Mapping[str, Any], default_prompts: Mapping[str, str]) -> "RunInfo":
        prompts = options.get("prompts") or {}
        changed = {name: text for name, text in prompts.items() if default_prompts.get(name) != text}
        return cls(version, implementation, model, dict(server), {**options, "prompts": changed}, prompts_digest(prompts))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @functools.cached_property
    def json_text(self) -> str:
        """`to_dict()` as JSON, made once: every row of a run carries the same run info."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


def prompts_digest(prompts: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(prompts), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Trace:
    """Everything that happened to one row."""

    run: RunInfo
    turns: tuple[Turn, ...]
    usage: Usage

    def to_json(self) -> str:
        # model, server, pipeline and judge_mode are repeated at the top for readers who filter on them.
        options = self.run.options
        data = {
            "model": self.run.model,
            "server": self.run.server,
            "pipeline": options.get("pipeline"),
            "judge_mode": options.get("judge_mode"),
            "turns": [_turn_dict(turn) for turn in self.turns],
            "usage": dataclasses.asdict(self.usage),
        }
        # The run info comes last, as the JSON text made once per run (copying and encoding it
        # per row cost more than the rest of the trace): the same bytes as encoding it here.
        return f'{json.dumps(data, ensure_ascii=False)[:-1]}, "run": {self.run.json_text}}}'

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        data = json.loads(text)
        return cls(RunInfo(**data["run"]), tuple(_turn(t) for t in data["turns"]), Usage(**data["usage"]))


def run_json(trace_json: str) -> str:
    """The JSON text of a trace's run info, found without parsing the rest of the trace.

    Publishing a million rows needs only their runs, and every row of a run carries the same
    text, so a reader can parse each distinct text once. The run is the trace's last key: of the
    places `"run": {` appears (quotes inside strings are escaped, so only keys: the trace's, or
    one nested in the run), it is the one whose object ends where the trace does.
    """
    start = trace_json.rfind(_RUN_KEY)
    while start != -1:
        at = start + len(_RUN_KEY) - 1
        try:
            end = _DECODER.raw_decode(trace_json, at)[1]
        except ValueError:
            end = -1
        if end == len(trace_json) - 1:
            return trace_json[at:end]
        start = trace_json.rfind(_RUN_KEY, 0, start)
    return json.dumps(json.loads(trace_json)["run"], ensure_ascii=False)  # another layout: parse it all


def _turn_dict(turn: Turn) -> dict[str, Any]:
    return {"turn": turn.turn, "instruction": turn.instruction, "original": turn.original, "rounds": [_round_dict(r) for r in turn.rounds]}


def _round_dict(round_: Round) -> dict[str, Any]:
    return {
        "round": round_.round,
        "debate": dataclasses.asdict(round_.debate) if round_.debate is not None else None,
        "advice": round_.advice,
        "suggestions": list(round_.suggestions),
        "edit": round_.edit,
        "verdicts": None if round_.old_first is None else {"old_first": _verdict_dict(round_.old_first), "new_first": _verdict_dict(round_.new_first)},
        "scores": scores_dict(round_.scores),
        "accepted": round_.accepted,
        "stop": round_.stop,
        "cut_off": list(round_.cut_off),
    }


def _verdict_dict(verdict: Verdict | None) -> dict[str, Any] | None:
    return None if verdict is None else {"text": verdict.text, "scores": scores_dict(verdict.scores)}


def _turn(data: Mapping[str, Any]) -> Turn:
    return Turn(data["turn"], data["instruction"], data["original"], tuple(_round(r) for r in data["rounds"]))


def _round(data: Mapping[str, Any]) -> Round:
    verdicts = data.get("verdicts") or {}
    return Round(
        round=data["round"],
        debate=Debate(**data["debate"]) if data.get("debate") else None,
        advice=data.get("advice"),
        suggestions=tuple(data.get("suggestions") or ()),
        edit=data.get("edit"),
        old_first=_verdict(verdicts.get("old_first")),
        new_first=_verdict(verdicts.get("new_first")),
        scores=_unpair(data.get("scores")),
        accepted=data["accepted"],
        stop=data.get("stop"),
        cut_off=tuple(data.get("cut_off") or ()),
    )


def _verdict(data: Mapping[str, Any] | None) -> Verdict | None:
    return None if data is None else Verdict(data["text"], _unpair(data["scores"]))


def scores_dict(scores: Scores | None) -> dict[str, float] | None:
    """(old, new) scores as the JSON of traces and verdicts writes them."""
    return None if scores is None else {"old": scores[0], "new": scores[1]}


def _unpair(data: Mapping[str, float] | None) -> Scores | None:
    return None if data is None else (data["old"], data["new"])


def winner(scores: Scores) -> str:
    """Which answer a pair of (old, new) scores prefers: "old", "new" or "tie"."""
    return "new" if scores[1] > scores[0] else "old" if scores[0] > scores[1] else "tie"
