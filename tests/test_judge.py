"""Verdict parsing and the order-swapped merge (pure logic)."""

import pytest

from coevol_hf.judge import merge, parse_verdict


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A", (1.0, 0.0)),
        ("B\nBecause it is more detailed.", (0.0, 1.0)),
        ("[[B]]", (0.0, 1.0)),
        ("**Answer A**", (1.0, 0.0)),
        ("Response B is better.", (0.0, 1.0)),
        ("b", (0.0, 1.0)),
        ("Tie", (0.5, 0.5)),
        ("It's a tie: both are equally good.", (0.5, 0.5)),
        ('{"better": "B", "reason": "clearer"}', (0.0, 1.0)),
        ('```json\n{"better": "tie", "reason": "same"}\n```', (0.5, 0.5)),
        ("A is better than B", None),
        ("Both have merits.", None),
        ("", None),
        ('{"better": "C", "reason": "?"}', None),
        # JSON quoted from an answer under review is not the verdict: the first line is.
        ('A\nAnswer A returns {"name": "x"} as the task asks.', (1.0, 0.0)),
        ("A tie.", (0.5, 0.5)),
        ("a draw", (0.5, 0.5)),
        ("A is better; B is not a tie-breaker.", None),
        # JSON that is no verdict: the words inside it never decide.
        ('{"better": "C", "reason": "A is worse"}', None),
        ('{"better": "Both", "reason": "B is fine"}', None),
        # Naming one answer in the negative says the opposite of naming it: no verdict.
        ("Response A is not better.", None),
        ("A is worse.", None),
        ("Not B.", None),
        ("Answer B is wrong.", None),
        ("B isn't as good.", None),
        # A negation in another clause says nothing against the answer named.
        ("B. No contest.", (0.0, 1.0)),
        ("B, which has less padding.", (0.0, 1.0)),
        ("B is better; A lacks an example.", None),  # both answers named: no verdict, as ever
        ("b.", (0.0, 1.0)),
        ("B, though both are equally fluent.", None),  # a win and a tie word: no verdict
        ("Both are equally good.", (0.5, 0.5)),
        ('{"better": "B ", "reason": "r"}', (0.0, 1.0)),
    ],
)
def test_compare_verdicts(text: str, expected) -> None:
    assert parse_verdict(text, "compare") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7 9", (7.0, 9.0)),
        ("Scores: 8/10 and 6.5/10\nA is clearer.", (8.0, 6.5)),
        ("10 1", (10.0, 1.0)),
        ('{"score_a": 3, "score_b": 8, "reason": "r"}', (3.0, 8.0)),
        ("7", None),
        ("0 11", None),
        ("7 8 9", None),
        ('{"score_a": 0, "score_b": 8, "reason": "r"}', None),
        ("Score A: 8. Score B: 6.", (8.0, 6.0)),
        ("8 and 7.", (8.0, 7.0)),
        ('8 6\nThe first answer builds {"k": 1} correctly.', (8.0, 6.0)),
        ("10.5 and 3", None),
        ("1. Answer A: 8, Answer B: 6", (8.0, 6.0)),
        ("8 6 (out of 10.)", (8.0, 6.0)),
        ('{"score_a": 65, "score_b": 90, "reason": "A covers 3 points, B covers 9"}', None),
        ('{"score_a": 0, "score_b": 7, "reason": "A scored 2 points lower"}', None),
        # Degenerate answers are unreadable verdicts, never an error that stops the run.
        ('{"score_a": 8, "score_b": 1' + "0" * 400 + ', "reason": "r"}', None),
        ('7 3\n{"reason": ' + "[" * 1200 + "}", (7.0, 3.0)),
        # Scores go with the answer they are written against, whatever the order.
        ("B: 6, A: 8", (8.0, 6.0)),
        ("Answer B: 9/10, Answer A: 4/10", (4.0, 9.0)),
        ("A: 8, B: 6 (B is vaguer)", None),
        # Scores from 1 to 10 only: a nonsense score never decides an edit.
        ('{"score_a": 7, "score_b": 90, "reason": "r"}', None),
        ('{"score_a": 1, "score_b": 10, "reason": "r"}', (1.0, 10.0)),
        ("0 7", None),
    ],
)
def test_score_verdicts(text: str, expected) -> None:
    assert parse_verdict(text, "score") == expected


def test_merge_maps_the_swapped_order_back() -> None:
    # Old shown first and losing; new shown first and winning: both say the edit is better.
    decision = merge((0.0, 1.0), (1.0, 0.0), "compare")
    assert decision.old_first == (0.0, 1.0) and decision.new_first == (0.0, 1.0)
    assert decision.merged == (0.0, 2.0) and decision.accepted


def test_merge_position_bias_is_a_draw() -> None:
    assert merge((1.0, 0.0), (1.0, 0.0), "compare").merged == (1.0, 1.0)
    assert not merge((1.0, 0.0), (1.0, 0.0), "compare").accepted


def test_merge_with_one_or_no_readable_verdict() -> None:
    assert merge(None, (0.0, 1.0), "compare").merged == (1.0, 0.0)
    assert merge((6.0, 8.0), None, "score").accepted
    none = merge(None, None, "score")
    assert none.merged is None and not none.accepted


def test_score_mode_averages() -> None:
    assert merge((6.0, 9.0), (9.0, 7.0), "score").merged == (6.5, 9.0)
