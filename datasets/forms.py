"""Forms of the dataset pages: the build form and the page position of lists."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.http import QueryDict

from datasets import services
from datasets.models import SelectionStrategy
from tunix_registry.fields import json_object_check

FILTER_ROWS = 3
FILTER_HELP = (
    "Each row keeps the traces whose meta has this key with exactly this value. "
    'A value is read as JSON when it parses (1, true, null, "1", [1, 2], {"a": 1}), '
    'otherwise as text: 1 is the number one, "1" the text one, null matches traces '
    "without the key. Leave a row empty to ignore it."
)


def parse_filter_value(raw: str) -> Any:
    """A filter value typed on the form: JSON when it parses, else the text as typed."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class PageForm(forms.Form):
    """`?offset=` of a paginated page; anything invalid means the first page."""

    offset = forms.IntegerField(min_value=0, max_value=1_000_000_000, required=False)

    def offset_or_zero(self) -> int:
        if self.is_valid():
            return self.cleaned_data["offset"] or 0
        return 0


class DatasetBuildForm(forms.Form):
    dataset_name = forms.CharField(
        label="Name",
        max_length=services.NAME_MAX,
        help_text="Letters, digits, '_', '.', '-'; spaces and '/' become '_'.",
    )
    dataset_version = forms.CharField(
        label="Version",
        max_length=services.VERSION_MAX,
        help_text="A version is built once and never changes.",
    )
    selection_strategy = forms.ChoiceField(
        label="Strategy", choices=SelectionStrategy.choices, initial=SelectionStrategy.LATEST
    )
    seed = forms.IntegerField(
        label="Seed",
        required=False,
        min_value=-(2**63),
        max_value=2**63 - 1,
        help_text="Required for random selection; the same seed selects the same traces.",
    )
    limit = forms.IntegerField(
        label="Limit", min_value=1, max_value=services.LIMIT_MAX, initial=100
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filter_rows: list[tuple[str, str]] = []
        self.filter_errors: list[str] = []
        if self.is_bound and isinstance(self.data, QueryDict):
            keys = self.data.getlist("filter_key")
            values = self.data.getlist("filter_value")
            values += [""] * (len(keys) - len(values))
            self.filter_rows = list(zip(keys, values, strict=False))[:100]

    def rows_for_display(self) -> list[tuple[str, str]]:
        rows = [row for row in self.filter_rows if row[0] or row[1]]
        return rows + [("", "")] * max(FILTER_ROWS - len(rows), 1)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        filters: dict[str, Any] = {}
        for number, (key, raw) in enumerate(self.filter_rows, 1):
            key = key.strip()
            if not key and not raw.strip():
                continue
            if not key:
                self.filter_errors.append(f"filters: row {number} has a value but no key")
            elif key in filters:
                self.filter_errors.append(f"filters: the key {key!r} appears twice")
            else:
                filters[key] = parse_filter_value(raw.strip())
        try:
            # Raw query values skip CharField's NUL check; PostgreSQL cannot store NUL.
            json_object_check(filters)
        except ValueError as exc:
            self.filter_errors.append(f"filters: {exc}")
        if self.filter_errors:
            raise forms.ValidationError(self.filter_errors[0])
        cleaned["filters"] = filters
        if (
            cleaned.get("selection_strategy") == SelectionStrategy.RANDOM
            and cleaned.get("seed") is None
            and "seed" not in self.errors
        ):
            self.add_error("seed", services.SEED_REQUIRED)
        return cleaned
