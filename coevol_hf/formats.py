"""Dataset rows <-> conversations to refine, for the Alpaca, ShareGPT and messages layouts.

A row is read into a `Conversation` (an optional system prompt and user/assistant exchanges) and
written back in its own layout with only the assistant texts replaced, so the refined dataset
trains exactly like the original. Anything malformed in one row raises `RowError("input", ...)`
for that row alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Sequence

from .errors import ConfigError, InputFormatError, RowError

Format = Literal["alpaca", "sharegpt", "messages"]
FORMATS: tuple[Format, ...] = ("alpaca", "sharegpt", "messages")
Layout = Literal["auto", "alpaca", "sharegpt", "messages"]  # the `format=` option: a format, or detect it

# The `Columns` roles each layout reads, in order; the last one holds the responses.
_LAYOUT_ROLES: Mapping[Format, tuple[str, ...]] = {"alpaca": ("instruction", "input", "output"), "sharegpt": ("conversations",), "messages": ("messages",)}
_DETECTION_ORDER: tuple[Format, ...] = ("sharegpt", "messages", "alpaca")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_MESSAGES_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


@dataclasses.dataclass(frozen=True)
class Columns:
    """What the dataset's columns are called (the layout is the `format=` option)."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    conversations: str = "conversations"
    messages: str = "messages"

    def __post_init__(self) -> None:
        for role, name in dataclasses.asdict(self).items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"columns= must map {role!r} to a column name, not {name!r}.")
        alpaca = (self.instruction, self.input, self.output)
        if len(set(alpaca)) < len(alpaca):
            raise ConfigError(f"columns= gives instruction, input and output the names {list(alpaca)}: each needs a column of its own.")

    def named(self) -> dict[str, str]:
        """The roles the user gave a name other than the default one."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}

    def detect(self, column_names: Sequence[str], layout: Layout = "auto", *, with_response: bool = True) -> Format:
        """The layout of a dataset with these columns; raises before any request if none fits.

        `"auto"` picks it from the column names: among the layouts whose columns the user named,
        if any, else `conversations` (ShareGPT), then `messages`, then `instruction` + `output`
        (Alpaca). A column the user named for the layout must exist, optional `input` included
        (a misspelt name would otherwise refine every row without it). `with_response=False`
        reads prompts only (a pairwise judge): Alpaca needs no `output`.
        """
        present = set(column_names)
        required: dict[Format, tuple[str, ...]] = {
            "sharegpt": (self.conversations,),
            "messages": (self.messages,),
            "alpaca": (self.instruction, self.output) if with_response else (self.instruction,),
        }
        named = self.named()
        if layout == "auto":
            candidates = [fmt for fmt in _DETECTION_ORDER if named.keys() & set(_LAYOUT_ROLES[fmt])] or _DETECTION_ORDER
            found = next((fmt for fmt in candidates if all(c in present for c in required[fmt])), None)
            if found is None and len(candidates) < len(_DETECTION_ORDER):
                mapping = ", ".join(f"{role}={name!r}" for role, name in named.items())
                raise InputFormatError(
                    f"columns= names {mapping}, so only the {' or '.join(candidates)} layout is read, and the dataset's columns "
                    f"{sorted(present)} do not fit it: it needs {[c for c in required[candidates[0]] if c not in present]}. Fix the names in columns=."
                )
            if found is None:
                raise InputFormatError(
                    f"No column layout coevol-hf can refine in {sorted(present)}. Accepted: "
                    f"Alpaca ({self.instruction!r}, optional {self.input!r}, {self.output!r}); "
                    f"ShareGPT ({self.conversations!r}: [{{from, value}}]); "
                    f"messages ({self.messages!r}: [{{role, content}}]). "
                    "Rename columns with columns={'instruction': ..., 'output': ...} or pass format=..."
                )
            layout = found
        else:
            missing = [c for c in required[layout] if c not in present]
            if missing:
                raise InputFormatError(
                    f"format={layout!r} needs column(s) {missing}, but the dataset has {sorted(present)}. "
                    "Map your column names with columns={...}."
                )
        read = [role for role in _LAYOUT_ROLES[layout] if with_response or role != "output"]
        absent = [f"{role}={name!r}" for role, name in named.items() if role in read and name not in present]
        if absent:
            raise InputFormatError(f"columns= names {', '.join(absent)}, but the dataset has no such column; it has {sorted(present)}.")
        return layout

    def response_column(self, fmt: Format) -> str:
        """The column whose content is replaced by the refined text."""
        return getattr(self, _LAYOUT_ROLES[fmt][-1])

    def source_columns(self, fmt: Format, *, with_response: bool = True) -> tuple[str, ...]:
        return tuple(getattr(self, role) for role in _LAYOUT_ROLES[fmt] if with_response or role != "output")


@dataclasses.dataclass(frozen=True)
class RefinedColumns:
    """The columns `CoEvol` adds (the refined text itself stays in the layout's own column)."""

    original: str = "coevol_original"
    rounds: str = "coevol_rounds"
    trace: str = "coevol_trace"
    error: str = "coevol_error"
    model: str = "coevol_model"


@dataclasses.dataclass(frozen=True)
class JudgedColumns:
    """The columns `PairwiseJudge` adds."""

    winner: str = "judge_winner"
    scores: str = "judge_scores"
    verdicts: str = "judge_verdicts"
    error: str = "judge_error"


REFINED = RefinedColumns()
JUDGED = JudgedColumns()


def splits_with_rows(splits: Mapping[str, Any]) -> dict[str, Any]:
    """The splits that have rows: `map` returns a split without rows as it was, without the
    `coevol_*` columns, so it has nothing to describe."""
    return {name: split for name, split in splits.items() if split.num_rows}


@dataclasses.dataclass(frozen=True)
class Exchange:
    user: str
    assistant: str


@dataclasses.dataclass(frozen=True)
class Conversation:
    """The text to refine: every `exchanges[i].assistant` is one turn to refine, in order."""

    system: str | None
    exchanges: tuple[Exchange, ...]

    @property
    def responses(self) -> list[str]:
        return [e.assistant for e in self.exchanges]


def read_row(fmt: Format, row: Mapping[str, Any], columns: Columns) -> Conversation:
    """The conversation to refine: every assistant turn, each after its user turn."""
    if fmt == "alpaca":
        return _read_alpaca(row, columns)
    key = columns.response_column(fmt)
    system, exchanges, _ = _read_turns(row.get(key), key, *_TURN_KEYS[fmt])
    if not exchanges:
        raise RowError("input", f"column {key!r} has no assistant turn to refine")
    return Conversation(system, tuple(exchanges))


def read_prompt(fmt: Format, row: Mapping[str, Any], columns: Columns) -> tuple[Conversation, str]:
    """What two answers are compared on: the row's last user turn, and the exchanges before it.

    An Alpaca row's instruction (with its input); in a conversation, the last user turn, whether
    or not an assistant turn follows it.
    """
    if fmt == "alpaca":
        return Conversation(None, ()), _alpaca_user(row, columns)
    key = columns.response_column(fmt)
    system, exchanges, pending_user = _read_turns(row.get(key), key, *_TURN_KEYS[fmt])
    if pending_user is None:
        if not exchanges:
            raise RowError("input", f"column {key!r} has no user turn")
        *exchanges, last = exchanges
        pending_user = last.user
    return Conversation(system, tuple(exchanges)), pending_user


def read_answer(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise RowError("input", f"column {column!r} must be a non-empty string, got {_describe(value)}")
    return value


def write_row(fmt: Format, row: Mapping[str, Any], columns: Columns, responses: Sequence[str]) -> dict[str, Any]:
    """The layout's response column with its assistant texts replaced by `responses`, in order."""
    if fmt == "alpaca":
        return {columns.output: responses[0]}
    key = columns.response_column(fmt)
    role_key, text_key, roles = _TURN_KEYS[fmt]
    replacements = iter(responses)
    turns = []
    for turn in row[key]:
        if roles.get(turn[role_key]) == "assistant":
            turn = {**turn, text_key: next(replacements)}
        turns.append(turn)
    return {key: turns}


_TURN_KEYS: Mapping[str, tuple[str, str, Mapping[str, str]]] = {
    "sharegpt": ("from", "value", _SHAREGPT_ROLES),
    "messages": ("role", "content", _MESSAGES_ROLES),
}


def _alpaca_user(row: Mapping[str, Any], columns: Columns) -> str:
    instruction, extra = row.get(columns.instruction), row.get(columns.input)
    if not isinstance(instruction, str) or not instruction.strip():
        raise RowError("input", f"column {columns.instruction!r} must be a non-empty string, got {_describe(instruction)}")
    if extra is not None and not isinstance(extra, str):
        raise RowError("input", f"column {columns.input!r} must be a string or null, got {_describe(extra)}")
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


def _read_alpaca(row: Mapping[str, Any], columns: Columns) -> Conversation:
    user = _alpaca_user(row, columns)
    return Conversation(system=None, exchanges=(Exchange(user, read_answer(row, columns.output)),))


def _read_turns(turns: Any, key: str, role_key: str, text_key: str, roles: Mapping[str, str]) -> tuple[str | None, list[Exchange], str | None]:
    """The system prompt, the complete exchanges, and a last user turn without answer."""
    if not isinstance(turns, list) or not turns:
        raise RowError("input", f"column {key!r} must be a non-empty list of turns, got {_describe(turns)}")
    system, exchanges, pending_user = None, [], None
    for position, turn in enumerate(turns):
        label = turn.get(role_key) if isinstance(turn, Mapping) else None
        role = roles.get(label) if isinstance(label, str) else None
        if role is None:
            raise RowError(
                "input",
                f"{key}[{position}] must have {role_key!r} in {sorted(roles)}, got {_describe(turn)}",
            )
        text = turn.get(text_key)
        if not isinstance(text, str):
            raise RowError("input", f"{key}[{position}].{text_key} must be a string, got {_describe(text)}")
        if role == "system":
            if position != 0:
                raise RowError("input", f"{key}[{position}]: a system turn may only come first")
            system = text
        elif role == "user":
            if pending_user is not None:
                raise RowError("input", f"{key}[{position}]: two user turns in a row (expected user/assistant alternation)")
            pending_user = text
        else:
            if pending_user is None:
                raise RowError("input", f"{key}[{position}]: an assistant turn must follow a user turn")
            if not text.strip():
                raise RowError("input", f"{key}[{position}]: the assistant turn is empty")
            exchanges.append(Exchange(pending_user, text))
            pending_user = None
    return system, exchanges, pending_user


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"
