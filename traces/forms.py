"""Forms of the trace pages (query strings and the upload form)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from traces.schemas import TraceInvalid, trace_payload_validate_json
from tunix_registry.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET


class PageForm(forms.Form):
    """`?limit=&offset=` of a list page; out-of-range values fall back to the first page."""

    limit = forms.IntegerField(min_value=1, max_value=MAX_LIMIT, required=False)
    offset = forms.IntegerField(min_value=0, max_value=MAX_OFFSET, required=False)

    def page(self) -> tuple[int, int]:
        if not self.is_valid():
            return DEFAULT_LIMIT, 0
        return self.cleaned_data["limit"] or DEFAULT_LIMIT, self.cleaned_data["offset"] or 0


class CompareForm(forms.Form):
    base = forms.UUIDField(label="Base trace ID")
    other = forms.UUIDField(label="Other trace ID")


class TraceUploadForm(forms.Form):
    """One trace pasted as JSON, or a JSONL file of traces (exactly one of the two)."""

    trace_json = forms.CharField(
        label="Trace JSON",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false"}),
        help_text="One ReasoningTrace object: trace_version, prompt, final_answer, steps, meta.",
    )
    jsonl_file = forms.FileField(
        label="or a .jsonl file",
        required=False,
        help_text="One trace per line. Blank lines are skipped.",
    )
    all_or_nothing = forms.BooleanField(
        label="Import nothing if any line is rejected",
        required=False,
    )

    def clean_trace_json(self) -> dict[str, Any] | None:
        text: str = self.cleaned_data.get("trace_json") or ""
        if not text.strip():
            return None
        limit = settings.TRACE_MAX_BYTES
        raw = text.encode("utf-8", "surrogatepass")
        if len(raw) > limit:
            raise forms.ValidationError(f"Payload size exceeds maximum of {limit} bytes")
        try:
            return trace_payload_validate_json(raw)
        except TraceInvalid as exc:
            raise forms.ValidationError(
                [f"{'.'.join(map(str, e['loc'])) or 'trace'}: {e['msg']}" for e in exc.errors]
            ) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        has_json = cleaned.get("trace_json") is not None
        has_file = bool(cleaned.get("jsonl_file"))
        if not self.errors:
            if has_json and has_file:
                raise forms.ValidationError("Paste one trace or choose a file, not both.")
            if not has_json and not has_file:
                raise forms.ValidationError("Paste a trace as JSON or choose a .jsonl file.")
        return cleaned
