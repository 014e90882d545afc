"""Filters and the loss chart of the run pages.

The loss chart is computed here as plain numbers and short strings (point
lists, tick labels) and drawn as inline SVG by `runs/detail.html#loss-chart`,
so the template's autoescaping covers everything it prints.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol

from django import template
from django.template import defaultfilters
from django.utils import timezone
from django.utils.html import format_html, format_html_join

register = template.Library()

# Geometry of the chart's viewBox (it scales to the width of its container).
WIDTH = 640
HEIGHT = 300
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 16
MARGIN_BOTTOM = 44
# A polyline of more points than this is thinned (evenly, keeping the last point).
MAX_POINTS = 800


class MetricRow(Protocol):
    step: int
    loss: float
    eval_loss: float | None


@register.filter
def iso_utc(value: datetime | None) -> str:
    """An aware datetime as ISO-8601 in UTC with a Z ('' for None)."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@register.filter
def local_time(value: datetime | None) -> str:
    """A <time> showing UTC, which runs.js rewrites to the browser's local time.

    The UTC ISO timestamp stays in `datetime` and in the hover title.
    """
    if value is None:
        return "—"
    iso = iso_utc(value)
    shown = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return format_html(
        '<time datetime="{}" title="{} (UTC)" data-local-time>{} UTC</time>', iso, iso, shown
    )


@register.filter
def config_value(value: Any) -> str:
    """A configuration value as the request had it: true/false, numbers, text; — for null."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@register.filter
def duration(seconds: float | None) -> str:
    """1.23 s, 4 min 05 s, 2 h 03 min; an em dash when unknown (or not a number)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "—"
    if not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def seconds_since(value: datetime | None) -> float | None:
    """Seconds from an aware datetime until now (for `duration`); None for None."""
    if value is None:
        return None
    return max((timezone.now() - value).total_seconds(), 0.0)


@register.filter
def loss(value: float | None) -> str:
    """A loss to four decimals; an em dash when absent."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.4f}"


def nice_step(span: float, target: int) -> float:
    """A 1, 2 or 5 times 10^k step that cuts `span` into about `target` intervals."""
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop always returns


def _ticks(low: float, high: float, step: float) -> list[float]:
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    stride = math.ceil(len(points) / MAX_POINTS)
    thinned = list(points[::stride])
    if thinned[-1] != points[-1]:
        thinned.append(points[-1])
    return thinned


def _linear_range(low: float, high: float) -> tuple[float, float, float]:
    """A linear axis over [low, high]: its ends rounded out to a nice step, and the step."""
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = nice_step(high - low, 5)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


@dataclass(frozen=True)
class _Frame:
    """The plot area of a chart and where a data point lands on it."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float

    @cached_property
    def _x_scale(self) -> tuple[float, float]:
        # x lands at origin + x * factor: one multiplication per point.
        factor = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / (self.x_high - self.x_low)
        return MARGIN_LEFT - self.x_low * factor, factor

    @cached_property
    def _y_scale(self) -> tuple[float, float]:
        factor = (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) / (self.y_high - self.y_low)
        return MARGIN_TOP + self.y_high * factor, factor

    def sx(self, x: float) -> float:
        origin, factor = self._x_scale
        return round(origin + x * factor, 1)

    def sy(self, y: float) -> float:
        origin, factor = self._y_scale
        return round(origin - y * factor, 1)

    def polyline(self, points: Iterable[tuple[float, float]]) -> str:
        """The `points` attribute of an SVG polyline through `points`: "x,y x,y ...", each
        coordinate as `sx` and `sy` place it, in one pass (a drawing has thousands)."""
        x0, kx = self._x_scale
        y0, ky = self._y_scale
        return " ".join(f"{x0 + x * kx:.1f},{y0 - y * ky:.1f}" for x, y in points)

    def x_ticks(self) -> list[dict[str, Any]]:
        step = max(1.0, nice_step(self.x_high - self.x_low, 6))
        return [
            {"x": self.sx(v), "label": f"{v:.0f}"} for v in _ticks(self.x_low, self.x_high, step)
        ]

    def box(self) -> dict[str, Any]:
        """The drawing's size and the plot area's edges, as the templates place them."""
        return {
            "width": WIDTH,
            "height": HEIGHT,
            "left": MARGIN_LEFT,
            "right": WIDTH - MARGIN_RIGHT,
            "top": MARGIN_TOP,
            "bottom": HEIGHT - MARGIN_BOTTOM,
            "mid_x": round(MARGIN_LEFT + (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / 2, 1),
            "mid_y": round(MARGIN_TOP + (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) / 2, 1),
        }


def _x_range(xs: Sequence[float]) -> tuple[float, float]:
    low, high = min(xs), max(xs)
    return (low, low + 1) if high == low else (low, high)


def _series(metrics: Iterable[MetricRow], attr: str) -> list[tuple[float, float]]:
    points = []
    for row in metrics:
        value = getattr(row, attr)
        if value is not None and math.isfinite(value):
            points.append((float(row.step), float(value)))
    return points


@register.simple_tag
def loss_chart(metrics: Sequence[MetricRow]) -> dict[str, Any] | None:
    """The drawing of a run's train and eval loss by step, or None without finite points."""
    train = _series(metrics, "loss")
    evals = _series(metrics, "eval_loss")
    if not train and not evals:
        return None
    x_low, x_high = _x_range([x for x, _ in train + evals])
    ys = [y for _, y in train + evals]
    y_low, y_high, y_step = _linear_range(min(ys), max(ys))
    frame = _Frame(x_low, x_high, y_low, y_high)

    def polyline(points: Sequence[tuple[float, float]]) -> str:
        return frame.polyline(_thin(points))

    def dots(points: Sequence[tuple[float, float]]) -> list[dict[str, float]]:
        # Markers only where a line alone would hide them (few points).
        return (
            [{"x": frame.sx(x), "y": frame.sy(y)} for x, y in points] if len(points) <= 30 else []
        )

    label_digits = max(0, -math.floor(math.log10(y_step))) if y_step < 1 else 0
    return {
        **frame.box(),
        "train": polyline(train),
        "train_dots": dots(train),
        "eval": polyline(evals),
        "eval_dots": dots(evals),
        "y_ticks": [
            {"y": frame.sy(v), "label": f"{v:.{label_digits}f}"}
            for v in _ticks(y_low, y_high, y_step)
        ],
        "x_ticks": frame.x_ticks(),
        "steps": len(metrics),
        "has_eval": bool(evals),
        "first_loss": train[0][1] if train else None,
        "last_loss": train[-1][1] if train else None,
    }


class LossPoint(Protocol):
    @property
    def step(self) -> int: ...

    @property
    def loss(self) -> float: ...


class ComparedSeries(Protocol):
    """A run of a comparison as the overlaid chart reads it (runs.compare.ComparedRun)."""

    @property
    def run_id(self) -> uuid.UUID: ...

    @property
    def series(self) -> Sequence[LossPoint]: ...


# Runs a comparison chart colours apart (runs.compare.MAX_RUNS); CSS classes
# runs-compare-line-0 .. -7.
COMPARE_COLOURS = 8


def _log_ticks(low: int, high: int) -> list[float]:
    """Decades from 10^low to 10^high, with 2 and 5 between them over at most two decades."""
    factors = (1, 2, 5) if high - low <= 2 else (1,)
    ticks = [factor * 10.0**exponent for exponent in range(low, high + 1) for factor in factors]
    return [tick for tick in ticks if tick <= 10.0**high * (1 + 1e-9)]


@register.simple_tag
def compare_chart(runs: Sequence[ComparedSeries], log: bool = False) -> dict[str, Any] | None:
    """The train loss of several runs by step on one drawing, or None without finite points.

    One line per run that has points, in the runs' order (`index` picks its colour);
    with `log`, the loss axis is logarithmic and points at or below zero are left
    out (`dropped` counts them).
    """
    lines = []
    dropped = 0
    for index, run in enumerate(runs):
        points = [
            (float(point.step), float(point.loss))
            for point in run.series
            if math.isfinite(point.loss)
        ]
        if log:
            kept = [(x, y) for x, y in points if y > 0]
            dropped += len(points) - len(kept)
            points = [(x, math.log10(y)) for x, y in kept]
        lines.append((index, points))
    drawn = [(index, points) for index, points in lines if points]
    if not drawn:
        return None
    x_low, x_high = _x_range([x for _, points in drawn for x, _ in points])
    ys = [y for _, points in drawn for _, y in points]
    y_low, y_high = min(ys), max(ys)
    if log:
        y_low, y_high = float(math.floor(y_low)), float(math.ceil(y_high))
        if y_high == y_low:
            y_high = y_low + 1
        y_values = [math.log10(tick) for tick in _log_ticks(int(y_low), int(y_high))]
        y_labels = [f"{10**value:g}" for value in y_values]
    else:
        y_low, y_high, y_step = _linear_range(y_low, y_high)
        y_values = _ticks(y_low, y_high, y_step)
        digits = max(0, -math.floor(math.log10(y_step))) if y_step < 1 else 0
        y_labels = [f"{value:.{digits}f}" for value in y_values]
    frame = _Frame(x_low, x_high, y_low, y_high)
    sx, sy = frame.sx, frame.sy

    return {
        **frame.box(),
        "log": log,
        "dropped": dropped,
        "lines": [
            {
                "index": index,
                "colour": index % COMPARE_COLOURS,
                "points": frame.polyline(_thin(points)),
                "dots": (
                    [{"x": sx(x), "y": sy(y)} for x, y in points] if len(points) <= 30 else []
                ),
            }
            for index, points in drawn
        ],
        # One entry per run, drawn or not, in the runs' order.
        "legend": [
            {
                "index": index,
                "colour": index % COMPARE_COLOURS,
                "run_id": runs[index].run_id,
                "drawn": bool(points),
            }
            for index, points in lines
        ],
        "y_ticks": [
            {"y": sy(value), "label": label}
            for value, label in zip(y_values, y_labels, strict=True)
        ],
        "x_ticks": frame.x_ticks(),
    }


@register.filter(is_safe=True)
def clip(value: Any, length: int) -> str:
    """Django's `truncatechars`, returning a text no longer than `length` as it is.

    `truncatechars` walks every character of every text it is given; a table of
    hundreds of short cells spends most of its time there.
    """
    text = str(value)
    if len(text) <= length:
        return text
    return str(defaultfilters.truncatechars(text, length))


@register.simple_tag
def answer_cells(answers: Sequence[Any]) -> str:
    """The cells of one item the compared runs disagree on, one per run: the run's
    prediction (clipped to 160 characters) and its score, or — for a run without it.

    Built here rather than by a loop in the template: a comparison lists hundreds of
    them. Every text is escaped by format_html.
    """
    return format_html_join(
        "",
        '<td class="mono runs-wrap">{}</td>',
        ((_answer_cell(answer),) for answer in answers),
    )


def _answer_cell(answer: Any) -> str:
    if answer is None:
        return "—"
    score = "—" if answer.score is None else str(answer.score)
    return format_html('{} <span class="muted">({})</span>', clip(answer.prediction, 160), score)


@register.filter
def config_cell(value: Any) -> str:
    """A compared configuration value: lists joined with commas, else as `config_value`."""
    if isinstance(value, list):
        return ", ".join(config_value(item) for item in value) if value else "[]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return config_value(value)
