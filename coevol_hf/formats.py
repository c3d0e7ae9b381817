"""Dataset rows <-> conversations to refine, for the Alpaca, ShareGPT and messages layouts.

A row is read into a `Conversation` (an optional system prompt and user/assistant exchanges) and
written back in its own layout with only the assistant texts replaced, so the refined dataset
trains exactly like the original. Anything malformed in one row raises `RowError("input", ...)`
for that row alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Sequence

from .errors import InputFormatError, RowError

Format = Literal["alpaca", "sharegpt", "messages"]
FORMATS: tuple[Format, ...] = ("alpaca", "sharegpt", "messages")

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_MESSAGES_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which layout the dataset has and what its columns are called.

    `format="auto"` picks the layout from the column names: `conversations` (ShareGPT), then
    `messages`, then `instruction` + `output` (Alpaca).
    """

    format: Literal["auto", "alpaca", "sharegpt", "messages"] = "auto"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    conversations: str = "conversations"
    messages: str = "messages"

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise InputFormatError(f"format must be 'auto' or one of {list(FORMATS)}, not {self.format!r}.")

    def detect(self, column_names: Sequence[str]) -> Format:
        """The layout of a dataset with these columns; raises before any request if none fits."""
        present = set(column_names)
        required: dict[Format, tuple[str, ...]] = {
            "sharegpt": (self.conversations,),
            "messages": (self.messages,),
            "alpaca": (self.instruction, self.output),
        }
        if self.format != "auto":
            missing = [c for c in required[self.format] if c not in present]
            if missing:
                raise InputFormatError(
                    f"format={self.format!r} needs column(s) {missing}, but the dataset has {sorted(present)}. "
                    "Map your column names with columns={...}."
                )
            return self.format
        for fmt in ("sharegpt", "messages", "alpaca"):
            if all(c in present for c in required[fmt]):
                return fmt
        raise InputFormatError(
            f"No column layout coevol-hf can refine in {sorted(present)}. Accepted: "
            f"Alpaca ({self.instruction!r}, optional {self.input!r}, {self.output!r}); "
            f"ShareGPT ({self.conversations!r}: [{{from, value}}]); "
            f"messages ({self.messages!r}: [{{role, content}}]). "
            "Rename columns with columns={'instruction': ..., 'output': ...} or pass format=..."
        )

    def response_column(self, fmt: Format) -> str:
        """The column whose content is replaced by the refined text."""
        return {"alpaca": self.output, "sharegpt": self.conversations, "messages": self.messages}[fmt]

    def source_columns(self, fmt: Format) -> tuple[str, ...]:
        return {
            "alpaca": (self.instruction, self.input, self.output),
            "sharegpt": (self.conversations,),
            "messages": (self.messages,),
        }[fmt]


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
    if fmt == "alpaca":
        return _read_alpaca(row, columns)
    key, role_key, text_key, roles = (
        (columns.conversations, "from", "value", _SHAREGPT_ROLES)
        if fmt == "sharegpt"
        else (columns.messages, "role", "content", _MESSAGES_ROLES)
    )
    return _read_turns(row.get(key), key, role_key, text_key, roles)


def write_row(fmt: Format, row: Mapping[str, Any], columns: Columns, responses: Sequence[str]) -> dict[str, Any]:
    """The row's own columns with the assistant texts replaced by `responses`, in order."""
    if fmt == "alpaca":
        return {columns.output: responses[0]}
    key, role_key, text_key, roles = (
        (columns.conversations, "from", "value", _SHAREGPT_ROLES)
        if fmt == "sharegpt"
        else (columns.messages, "role", "content", _MESSAGES_ROLES)
    )
    replacements = iter(responses)
    turns = []
    for turn in row[key]:
        if roles.get(turn[role_key]) == "assistant":
            turn = {**turn, text_key: next(replacements)}
        turns.append(turn)
    return {key: turns}


def _read_alpaca(row: Mapping[str, Any], columns: Columns) -> Conversation:
    instruction, extra, output = row.get(columns.instruction), row.get(columns.input), row.get(columns.output)
    for name, value in ((columns.instruction, instruction), (columns.output, output)):
        if not isinstance(value, str) or not value.strip():
            raise RowError("input", f"column {name!r} must be a non-empty string, got {_describe(value)}")
    if extra is not None and not isinstance(extra, str):
        raise RowError("input", f"column {columns.input!r} must be a string or null, got {_describe(extra)}")
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return Conversation(system=None, exchanges=(Exchange(user, output),))


def read_pair(row: Mapping[str, Any], columns: Columns, a: str, b: str) -> tuple[str, str, str]:
    """The instruction (with its input) and the two answers in columns `a` and `b` of a row."""
    first = _read_alpaca(row, dataclasses.replace(columns, output=a)).exchanges[0]
    second = _read_alpaca(row, dataclasses.replace(columns, output=b)).exchanges[0]
    return first.user, first.assistant, second.assistant


def _read_turns(turns: Any, key: str, role_key: str, text_key: str, roles: Mapping[str, str]) -> Conversation:
    if not isinstance(turns, list) or not turns:
        raise RowError("input", f"column {key!r} must be a non-empty list of turns, got {_describe(turns)}")
    system, exchanges, pending_user = None, [], None
    for position, turn in enumerate(turns):
        role = roles.get(turn.get(role_key)) if isinstance(turn, Mapping) else None
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
    if not exchanges:
        raise RowError("input", f"column {key!r} has no assistant turn to refine")
    return Conversation(system=system, exchanges=tuple(exchanges))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"
