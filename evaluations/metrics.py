"""Named, versioned metrics that score one generated answer against the expected one.

A metric is a pure function ``(prediction: str, expected: str) -> float`` in [0, 1], registered
under ``<name>@v<version>`` in METRICS. A version never changes meaning once released: a change
of rule is a new version beside the old one, so scores stored under a name stay comparable.
``aggregate`` turns a list of scores into a mean with a 95 % confidence interval. Nothing here
imports JAX or Django. See docs/evaluation.md.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

END_OF_TURN = "<end_of_turn>"
ANSWER_MARKER = "Answer:"
# The two-sided 95 % normal quantile.
Z_95 = 1.959963984540054

Metric = Callable[[str, str], float]

_TRAILING_PUNCTUATION = ".,;:!?"
_QUOTES = "\"'`“”‘’«»„"
# An optional sign, an optional dollar sign (before or after the sign), digits either plain or in
# groups of three separated by commas, an optional fraction, an optional percent sign.
_NUMBER = re.compile(
    r"""
    ^(?P<sign1>[+-]?)(?P<dollar>\$?)(?P<sign2>[+-]?)
    (?P<digits>\d{1,3}(?:,\d{3})+|\d+|(?=\.\d))
    (?P<fraction>\.\d+)?
    (?P<percent>%?)$
    """,
    re.VERBOSE,
)


class UnknownMetricError(ValueError):
    """A metric name that is not in METRICS."""


def until_end_of_turn(text: str) -> str:
    """The text before the first ``<end_of_turn>`` (all of it when there is none)."""
    return text.split(END_OF_TURN, 1)[0]


def final_answer(text: str) -> str | None:
    """The text after the last ``Answer:``, up to the end of turn or of that line; None without
    an ``Answer:``.

    >>> final_answer("Reasoning: 2+2\\nAnswer: 4\\nDone")
    ' 4'
    >>> final_answer("Answer: 3\\nAnswer: 5<end_of_turn>Answer: 6"), final_answer("no marker")
    (' 5', None)
    """
    turn = until_end_of_turn(text)
    at = turn.rfind(ANSWER_MARKER)
    if at < 0:
        return None
    rest = turn[at + len(ANSWER_MARKER) :]
    return rest.split("\n", 1)[0]


def normalise(text: str) -> str:
    """Unicode NFKC, casefold, whitespace collapsed, then surrounding whitespace, trailing
    ``.,;:!?`` and surrounding quotes stripped (repeatedly, until nothing changes).

    >>> normalise('  "Paris".  ')
    'paris'
    >>> normalise("ＳＴＲＡẞＥ  42 !")
    'strasse 42'
    """
    value = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    previous = None
    while value != previous:
        previous = value
        value = value.strip().rstrip(_TRAILING_PUNCTUATION).strip(_QUOTES)
    return value


def parse_number(text: str) -> tuple[str, str, Decimal] | None:
    """A normalised answer read as a number: (``$`` or empty, ``%`` or empty, value); None when it
    is not one. Commas are thousands separators only (``1,000``; ``1,00`` is not a number).

    >>> parse_number("-$1,234.50")
    ('$', '', Decimal('-1234.50'))
    >>> parse_number("12.5%"), parse_number("1,00")
    (('', '%', Decimal('12.5')), None)
    """
    match = _NUMBER.match(text)
    if match is None or (match["sign1"] and match["sign2"]):
        return None
    digits = match["digits"].replace(",", "") or "0"
    sign = "-" if "-" in (match["sign1"] + match["sign2"]) else ""
    try:
        value = Decimal(f"{sign}{digits}{match['fraction'] or ''}")
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None
    return match["dollar"], match["percent"], value


def answers_equal(predicted: str, expected: str) -> bool:
    """Two extracted answers compared after ``normalise``: as numbers when both are numbers with
    the same ``$``/``%`` markers, as text otherwise. An empty answer never matches."""
    left, right = normalise(predicted), normalise(expected)
    if not left or not right:
        return False
    left_number, right_number = parse_number(left), parse_number(right)
    if left_number is not None and right_number is not None:
        return left_number == right_number
    return left == right


def answer_correctness_v1(prediction: str, expected: str) -> float:
    """1.0 when the final answer of ``prediction`` equals the expected answer, else 0.0.

    The prediction's answer is the text after its LAST ``Answer:`` (case-sensitive), up to
    ``<end_of_turn>`` or the end of that line; a prediction without ``Answer:`` scores 0.0. The
    expected answer is extracted the same way when it contains ``Answer:``, otherwise it is the
    whole expected text (up to ``<end_of_turn>``). Both are normalised (``normalise``), then
    compared as numbers when both parse as numbers (``parse_number``: ``1,000`` == ``1000`` ==
    ``1000.0``, ``-3.50`` == ``-3.5``; a ``$`` or ``%`` must be on both sides or on neither:
    ``$5`` == ``$5.00`` but ``$5`` != ``5``, ``50%`` != ``0.5``), else as text.

    >>> answer_correctness_v1("Reasoning: 40+2\\nAnswer: 42<end_of_turn>", "42")
    1.0
    >>> answer_correctness_v1("Answer: 1,000.", "1000.0")
    1.0
    >>> answer_correctness_v1("Answer: 3\\nWait.\\nAnswer: -3.50", "Answer: -3.5")
    1.0
    >>> answer_correctness_v1('Answer: "Café"', "CAFÉ")
    1.0
    >>> answer_correctness_v1("Answer: $5", "5"), answer_correctness_v1("Answer: 50%", "50.0%")
    (0.0, 1.0)
    >>> answer_correctness_v1("The answer is 42", "42")
    0.0
    """
    predicted = final_answer(prediction)
    if predicted is None:
        return 0.0
    wanted = final_answer(expected)
    if wanted is None:
        wanted = until_end_of_turn(expected)
    return 1.0 if answers_equal(predicted, wanted) else 0.0


def exact_match_v1(prediction: str, expected: str) -> float:
    """1.0 when the whole prediction, up to ``<end_of_turn>`` and stripped of surrounding
    whitespace, equals the expected text cut and stripped the same way; else 0.0. Nothing else is
    normalised: case, inner whitespace and punctuation all count.

    >>> exact_match_v1("Answer: 42<end_of_turn>\\n", " Answer: 42")
    1.0
    >>> exact_match_v1("Answer: 42.", "Answer: 42"), exact_match_v1("answer: 42", "Answer: 42")
    (0.0, 0.0)
    """
    same = until_end_of_turn(prediction).strip() == until_end_of_turn(expected).strip()
    return 1.0 if same else 0.0


METRICS: dict[str, Metric] = {
    "answer_correctness@v1": answer_correctness_v1,
    "exact_match@v1": exact_match_v1,
}


def metric(name: str) -> Metric:
    """The metric registered as ``name``; UnknownMetricError lists the known names."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(METRICS))
        raise UnknownMetricError(f"unknown metric {name!r}: known metrics are {known}") from None


def aggregate(scores: Sequence[float]) -> dict[str, float | int | None]:
    """The mean of ``scores`` with a 95 % confidence interval: ``{mean, count, ci_low, ci_high}``.

    When every score is 0 or 1 the interval is Wilson's score interval (sound near 0 and 1 and
    for few items); otherwise it is the normal approximation ``mean ± 1.96 · s / √n`` (``s`` the
    sample standard deviation), clipped to [0, 1], and [0, 1] itself for a single score. No
    scores: mean and interval are None.

    >>> aggregate([1, 1, 1, 0])
    {'mean': 0.75, 'count': 4, 'ci_low': 0.3006..., 'ci_high': 0.9544...}
    >>> aggregate([0.5, 0.5])
    {'mean': 0.5, 'count': 2, 'ci_low': 0.5, 'ci_high': 0.5}
    """
    values = [float(score) for score in scores]
    count = len(values)
    if count == 0:
        return {"mean": None, "count": 0, "ci_low": None, "ci_high": None}
    mean = math.fsum(values) / count
    if all(value in (0.0, 1.0) for value in values):
        low, high = wilson_interval(int(math.fsum(values)), count)
    elif count == 1:
        low, high = 0.0, 1.0
    else:
        variance = math.fsum((value - mean) ** 2 for value in values) / (count - 1)
        half = Z_95 * math.sqrt(variance / count)
        low, high = max(0.0, mean - half), min(1.0, mean + half)
    return {"mean": mean, "count": count, "ci_low": low, "ci_high": high}


def wilson_interval(successes: int, count: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for ``successes`` out of ``count`` (count > 0).

    >>> [round(bound, 4) for bound in wilson_interval(0, 10)]
    [0.0, 0.2775]
    """
    p = successes / count
    z2 = z * z
    denominator = 1 + z2 / count
    centre = (p + z2 / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z2 / (4 * count * count)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
