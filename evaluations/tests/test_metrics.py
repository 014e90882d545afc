"""The metrics registry: every documented example, the extraction and normalisation rules, and
the aggregate with its confidence interval. Pure Python: no JAX, no database."""

from __future__ import annotations

import doctest
import math

import pytest

from evaluations import metrics
from evaluations.metrics import (
    METRICS,
    UnknownMetricError,
    aggregate,
    answer_correctness_v1,
    exact_match_v1,
    metric,
    wilson_interval,
)


def test_every_docstring_example_holds() -> None:
    result = doctest.testmod(metrics, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15
    assert result.failed == 0


def test_registry_names_are_versioned_and_resolve_to_their_functions() -> None:
    assert set(METRICS) == {"answer_correctness@v1", "exact_match@v1"}
    assert metric("answer_correctness@v1") is answer_correctness_v1
    assert metric("exact_match@v1") is exact_match_v1
    for function in METRICS.values():
        assert function.__doc__ and ">>>" in function.__doc__


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(UnknownMetricError) as raised:
        metric("accuracy")
    message = str(raised.value)
    assert "'accuracy'" in message
    assert "answer_correctness@v1, exact_match@v1" in message
    with pytest.raises(UnknownMetricError):
        metric("answer_correctness@v2")
    assert issubclass(UnknownMetricError, ValueError)


@pytest.mark.parametrize(
    ("prediction", "expected", "score"),
    [
        # The answer follows the last "Answer:", up to the end of the line or of the turn.
        ("Reasoning:\n1. Add 40 and 2\nAnswer: 42<end_of_turn>", "42", 1.0),
        ("Answer: 42\nThat is all.", "42", 1.0),
        ("Answer: 41<end_of_turn>Answer: 42", "42", 0.0),
        ("Answer: 7\nNo, wait.\nAnswer: 42", "42", 1.0),
        ("Answer: 42\nAnswer: 7", "42", 0.0),
        # No "Answer:" in the prediction: 0, whatever else it says; the marker is case-sensitive.
        ("The answer is 42", "42", 0.0),
        ("answer: 42", "42", 0.0),
        ("", "42", 0.0),
        ("42", "42", 0.0),
        # An empty answer never matches, not even an empty expected text.
        ("Answer:   \n", "", 0.0),
        ("Answer:", "Answer:", 0.0),
        # The expected text is extracted the same way when it has an "Answer:".
        ("Answer: 42", "Reasoning: ...\nAnswer: 42<end_of_turn>", 1.0),
        ("Answer: 42", "Answer: 43", 0.0),
        ("Answer: 42", "42<end_of_turn>\nignored", 1.0),
    ],
)
def test_answer_extraction(prediction: str, expected: str, score: float) -> None:
    assert answer_correctness_v1(prediction, expected) == score


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # NFKC: full-width characters, ligatures, non-breaking spaces.
        ("１２３", "123"),
        ("ﬁnal", "final"),
        ("new\u00a0york", "New York"),
        # Casefold, accents kept: é matches É, not e.
        ("CAFÉ", "café"),
        ("Straße", "STRASSE"),
        ("Ὀδυσσεύς", "ὈΔΥΣΣΕΎΣ"),
        # Whitespace collapsed and stripped; trailing punctuation and surrounding quotes dropped.
        ("  New   York\t", "new york"),
        ("Paris.", "Paris"),
        ("Paris!?", "paris"),
        ('"Paris".', "paris"),
        ("'yes';", "yes"),
        ("“Paris”", "Paris"),
    ],
)
def test_normalisation_matches(answer: str, expected: str) -> None:
    assert answer_correctness_v1(f"Answer: {answer}", expected) == 1.0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("cafe", "café"),  # accents are not stripped
        ("Paris, France", "Paris"),
        ("New-York", "New York"),
        ("42 apples", "42"),  # text with a number is text
    ],
)
def test_normalisation_keeps_differences(answer: str, expected: str) -> None:
    assert answer_correctness_v1(f"Answer: {answer}", expected) == 0.0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1,000", "1000"),
        ("1000", "1000.0"),
        ("1,000.", "1000.00"),
        ("1,234,567", "1234567"),
        ("-3.50", "-3.5"),
        ("+7", "7"),
        ("0.5", ".5"),
        ("-0", "0"),
        ("$5", "$5.00"),
        ("-$3.50", "$-3.5"),
        ("$1,000", "$1000"),
        ("50%", "50.0%"),
        ("１,０００", "1000"),  # NFKC turns full-width digits into digits
    ],
)
def test_numbers_compare_as_numbers(answer: str, expected: str) -> None:
    assert answer_correctness_v1(f"Answer: {answer}", expected) == 1.0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1,00", "100"),  # commas separate groups of three only
        ("1000", "1001"),
        ("-3.5", "3.5"),
        ("$5", "5"),  # a $ or % must be on both sides or on neither
        ("5", "$5"),
        ("50%", "0.5"),
        ("50%", "50"),
        ("--3", "3"),
        ("1e3", "1000"),  # no exponents
    ],
)
def test_numbers_that_differ(answer: str, expected: str) -> None:
    assert answer_correctness_v1(f"Answer: {answer}", expected) == 0.0


@pytest.mark.parametrize(
    ("prediction", "expected", "score"),
    [
        ("Answer: 42<end_of_turn>\n", " Answer: 42", 1.0),
        ("Reasoning:\n1. x\nAnswer: 4", "Reasoning:\n1. x\nAnswer: 4<end_of_turn>", 1.0),
        ("  \nAnswer: 42\n", "Answer: 42", 1.0),
        ("Answer: 42.", "Answer: 42", 0.0),
        ("answer: 42", "Answer: 42", 0.0),
        ("Answer:  42", "Answer: 42", 0.0),
        ("Answer: 42", "42", 0.0),
        ("", "", 1.0),
    ],
)
def test_exact_match(prediction: str, expected: str, score: float) -> None:
    assert exact_match_v1(prediction, expected) == score


def test_scores_are_floats_in_the_unit_interval() -> None:
    for function in METRICS.values():
        for prediction, expected in [("Answer: 1", "1"), ("x", "y"), ("", "")]:
            value = function(prediction, expected)
            assert isinstance(value, float)
            assert 0.0 <= value <= 1.0


def test_wilson_interval_known_values() -> None:
    # Reference values of Wilson's 95 % interval (z = 1.96).
    assert [round(v, 4) for v in wilson_interval(0, 10)] == [0.0, 0.2775]
    assert [round(v, 4) for v in wilson_interval(5, 10)] == [0.2366, 0.7634]
    assert [round(v, 4) for v in wilson_interval(8, 10)] == [0.4902, 0.9433]
    assert [round(v, 4) for v in wilson_interval(10, 10)] == [0.7225, 1.0]
    assert [round(v, 4) for v in wilson_interval(1, 1)] == [0.2065, 1.0]


def test_aggregate_of_zero_one_scores_uses_wilson() -> None:
    summary = aggregate([1.0] * 8 + [0.0] * 2)
    assert summary["mean"] == 0.8
    assert summary["count"] == 10
    assert summary["ci_low"] == pytest.approx(0.4902, abs=5e-5)
    assert summary["ci_high"] == pytest.approx(0.9433, abs=5e-5)
    assert aggregate([1, 0]) == {
        "mean": 0.5,
        "count": 2,
        "ci_low": pytest.approx(0.0945, abs=1e-4),
        "ci_high": pytest.approx(0.9055, abs=1e-4),
    }


def test_aggregate_of_graded_scores_uses_the_normal_approximation() -> None:
    scores = [0.2, 0.4, 0.6, 0.8]
    mean = 0.5
    s = math.sqrt(sum((x - mean) ** 2 for x in scores) / 3)
    half = 1.959963984540054 * s / 2
    summary = aggregate(scores)
    assert summary["mean"] == pytest.approx(mean)
    assert summary["ci_low"] == pytest.approx(mean - half)
    assert summary["ci_high"] == pytest.approx(mean + half)
    assert summary["ci_low"] == pytest.approx(0.2470, abs=5e-5)
    assert summary["ci_high"] == pytest.approx(0.7530, abs=5e-5)


def test_aggregate_clips_to_the_unit_interval_and_handles_tiny_inputs() -> None:
    clipped = aggregate([0.9, 1.0, 1.0, 0.95])
    assert clipped["ci_high"] == 1.0
    # 0.9625 ± 1.96 · 0.0479 / 2: the upper bound 1.0094 is clipped.
    assert clipped["mean"] == pytest.approx(0.9625)
    assert clipped["ci_low"] == pytest.approx(0.9156, abs=5e-5)
    assert aggregate([0.3]) == {"mean": 0.3, "count": 1, "ci_low": 0.0, "ci_high": 1.0}
    assert aggregate([]) == {"mean": None, "count": 0, "ci_low": None, "ci_high": None}
    assert aggregate([0.5, 0.5]) == {"mean": 0.5, "count": 2, "ci_low": 0.5, "ci_high": 0.5}
