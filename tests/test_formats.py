"""Reading and writing the three layouts, on the real samples in tests/data."""

import pytest
from conftest import alpaca_rows, mt_bench_conversations, sharegpt_rows

from coevol_hf import Columns, ConfigError, InputFormatError
from coevol_hf.errors import RowError
from coevol_hf.formats import read_row, write_row


def test_detection_by_columns() -> None:
    columns = Columns()
    assert columns.detect(["instruction", "input", "output"]) == "alpaca"
    assert columns.detect(["instruction", "output"]) == "alpaca"
    assert columns.detect(["id", "conversations"]) == "sharegpt"
    assert columns.detect(["messages", "source"]) == "messages"
    with pytest.raises(InputFormatError, match="No column layout"):
        columns.detect(["question", "answer"])
    with pytest.raises(InputFormatError, match="format='messages' needs column"):
        Columns().detect(["conversations"], "messages")


def test_self_instruct_seed_tasks_as_alpaca() -> None:
    rows = alpaca_rows(175)
    assert len(rows) == 175
    for row in rows:
        conversation = read_row("alpaca", row, Columns())
        (exchange,) = conversation.exchanges
        assert exchange.user.startswith(row["instruction"])
        assert (row["input"] in exchange.user) if row["input"] else exchange.user == row["instruction"]
        assert write_row("alpaca", row, Columns(), ["new"]) == {"output": "new"}


def test_fastchat_sharegpt_conversations_round_trip() -> None:
    rows = sharegpt_rows()
    assert len(rows) == 500
    for row in rows:
        conversation = read_row("sharegpt", row, Columns())
        gpt_turns = [t["value"] for t in row["conversations"] if t["from"] == "gpt"]
        assert conversation.responses == gpt_turns
        refined = [f"refined {i}" for i in range(len(gpt_turns))]
        written = write_row("sharegpt", row, Columns(), refined)["conversations"]
        assert [t["from"] for t in written] == [t["from"] for t in row["conversations"]]
        assert [t["value"] for t in written if t["from"] == "gpt"] == refined
        assert [t["value"] for t in written if t["from"] == "human"] == [t["value"] for t in row["conversations"] if t["from"] == "human"]


def test_mt_bench_two_turn_conversations() -> None:
    rows = mt_bench_conversations()
    assert len(rows) == 30
    for row in rows:
        conversation = read_row("sharegpt", row, Columns())
        assert len(conversation.exchanges) == 2


def test_messages_keep_extra_keys() -> None:
    row = {"messages": [{"role": "user", "content": "q", "name": "u"}, {"role": "assistant", "content": "a", "weight": 1}]}
    written = write_row("messages", row, Columns(), ["b"])["messages"]
    assert written == [{"role": "user", "content": "q", "name": "u"}, {"role": "assistant", "content": "b", "weight": 1}]


@pytest.mark.parametrize(
    "turns, message",
    [
        ([], "non-empty list"),
        ([{"role": "assistant", "content": "a"}], "must follow a user turn"),
        ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}], "two user turns"),
        ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}], "may only come first"),
        ([{"role": "robot", "content": "q"}], "must have 'role'"),
        ([{"role": {"name": "user"}, "content": "q"}], "must have 'role'"),  # not hashable: a row error all the same
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}], "must be a string"),
        ([{"role": "user", "content": "q"}], "no assistant turn"),
    ],
)
def test_malformed_turns_are_row_errors(turns, message) -> None:
    with pytest.raises(RowError, match=message) as info:
        read_row("messages", {"messages": turns}, Columns())
    assert info.value.kind == "input"


def test_trailing_user_turn_is_kept_unrefined() -> None:
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "thanks"}]}
    assert read_row("messages", row, Columns()).responses == ["a"]
    assert write_row("messages", row, Columns(), ["b"])["messages"][2] == {"role": "user", "content": "thanks"}


def test_a_layout_whose_columns_the_user_named_comes_first() -> None:
    # OpenAI-style messages stored in a column called "conversations" (ShareGPT's default name).
    assert Columns(messages="conversations").detect(["conversations"]) == "messages"
    assert Columns(instruction="prompt", output="completion").detect(["prompt", "completion", "messages"]) == "alpaca"
    assert Columns().detect(["instruction", "output", "messages"]) == "messages"  # no mapping: the usual order


def test_a_named_column_must_exist_and_names_must_be_usable() -> None:
    with pytest.raises(InputFormatError, match=r"columns= names input='contxt', but the dataset has no such column; it has \['input', 'instruction', 'output'\]"):
        Columns(input="contxt").detect(["instruction", "input", "output"])
    assert Columns(output="answer").detect(["instruction"], with_response=False) == "alpaca"  # a judge reads no output
    # A named column picks its layout: a misspelt one is an error, never another layout read instead.
    with pytest.raises(InputFormatError, match=r"columns= names output='completion', so only the alpaca layout is read.*it needs \['completion'\]"):
        Columns(output="completion").detect(["conversations", "instruction", "completions"])
    with pytest.raises(InputFormatError, match=r"columns= names input='ctx', so only the alpaca layout is read"):
        Columns(input="ctx").detect(["messages"])
    with pytest.raises(ConfigError, match=r"gives instruction, input and output the names \['text', 'input', 'text'\]"):
        Columns(instruction="text", output="text")
    with pytest.raises(ConfigError, match=r"must map 'output' to a column name, not ''"):
        Columns(output="")


def test_alpaca_input_null_or_blank_is_none_and_is_joined_after_a_blank_line() -> None:
    def read(extra: str | None) -> str:
        return read_row("alpaca", {"instruction": "q", "input": extra, "output": "a"}, Columns()).exchanges[0].user

    assert (read(None), read("  "), read("ctx")) == ("q", "q", "q\n\nctx")


@pytest.mark.parametrize("row, message", [
    ({"instruction": "q", "input": "", "output": "  "}, "'output' must be a non-empty string"),
    ({"instruction": " \n", "input": "", "output": "a"}, "'instruction' must be a non-empty string"),
])
def test_blank_alpaca_fields_are_row_errors(row, message) -> None:
    with pytest.raises(RowError, match=message):
        read_row("alpaca", row, Columns())


def test_a_blank_assistant_turn_is_a_row_error() -> None:
    with pytest.raises(RowError, match="the assistant turn is empty"):
        read_row("messages", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " \n"}]}, Columns())


def test_the_system_turn_is_kept_and_texts_are_verbatim() -> None:
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "    code\n"}]}
    assert read_row("messages", row, Columns()).responses == ["    code\n"]
    assert write_row("messages", row, Columns(), ["b"])["messages"][:2] == row["messages"][:2]


def test_sharegpt_user_assistant_labels_detection_order_and_response_column() -> None:
    row = {"conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]}
    assert read_row("sharegpt", row, Columns()).responses == ["a"]
    assert Columns().detect(["conversations", "messages"]) == "sharegpt"
    assert Columns(output="completion").response_column("alpaca") == "completion"


def test_a_column_name_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match="must map 'output' to a column name, not 3"):
        Columns(output=3)
