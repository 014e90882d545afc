"""Forms of the run pages: the launch form and the history filters.

The launch form has one source of truth for its rules: `TunixRunRequest`, the
schema of `POST /api/tunix/run`. Django fields only turn the posted strings
into numbers and booleans; the ranges, lengths and defaults come from the
schema (its errors are mapped back to the field they name, and the bounds are
read from it for the inputs' hints). The nested `lora` object is flattened
into `lora_<name>` fields (`LoraRequest`'s own names) in the form's Advanced
group, with the checkpoint cadence and `resume_from`.
"""

from __future__ import annotations

from typing import Any

import annotated_types
import pydantic
from django import forms
from django.conf import settings
from django.db import models

from runs.models import RunMode, RunStatus
from runs.schemas import LORA_MODULE_NAMES, LoraRequest, TunixRunRequest
from tunix_registry.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET

DEFAULT_MODEL_ID = "tiny-qwen3"
# The fields of TunixRunRequest, in form order.
LAUNCH_FIELDS = (
    "dataset_key",
    "model_id",
    "output_dir",
    "learning_rate",
    "num_epochs",
    "batch_size",
    "max_seq_length",
    "checkpoint_every_n_steps",
    "resume_from",
    "dry_run",
)
# The fields of LoraRequest; the form's field for `rank` is `lora_rank`, and so on.
LORA_FIELDS = ("rank", "alpha", "dropout", "target_modules", "export")
LORA_PREFIX = "lora_"


def schema_bounds(name: str, schema: type[pydantic.BaseModel] = TunixRunRequest) -> dict[str, Any]:
    """The constraints a schema (TunixRunRequest by default) declares on one field
    (min_length, ge, le, gt, lt, ...)."""
    bounds: dict[str, Any] = {}
    for item in schema.model_fields[name].metadata:
        for attr in ("min_length", "max_length", "gt", "ge", "lt", "le"):
            value = getattr(item, attr, None)
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                bounds[attr] = value
    return bounds


def schema_default(name: str, schema: type[pydantic.BaseModel] = TunixRunRequest) -> Any:
    return schema.model_fields[name].default


def _span(bounds: dict[str, Any]) -> str:
    """'1-100', 'above 0, at most 1.0' or '0 to below 1.0' from a field's bounds."""
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']}–{bounds['le']}"
    low = f"above {bounds['gt']}" if "gt" in bounds else f"{bounds['ge']}"
    if "le" in bounds:
        return f"{low}, at most {bounds['le']}"
    return f"{low} to below {bounds['lt']}"


def _range_help(name: str, schema: type[pydantic.BaseModel] = TunixRunRequest) -> str:
    """'1-100, default 3' or 'above 0, at most 1.0, default 2e-05' from the schema."""
    return f"{_span(schema_bounds(name, schema))}, default {schema_default(name, schema)}"


def _number_attrs(name: str, schema: type[pydantic.BaseModel] = TunixRunRequest) -> dict[str, Any]:
    bounds = schema_bounds(name, schema)
    attrs: dict[str, Any] = {"inputmode": "numeric"}
    if "ge" in bounds:
        attrs["min"] = bounds["ge"]
    if "le" in bounds:
        attrs["max"] = bounds["le"]
    return attrs


def _text_attrs(name: str, **extra: Any) -> dict[str, Any]:
    bounds = schema_bounds(name)
    attrs = {"maxlength": bounds["max_length"]} if "max_length" in bounds else {}
    return {"autocomplete": "off", "spellcheck": "false", **attrs, **extra}


def _error_message(error: Any) -> str:
    """A person-readable text for one pydantic error (the API keeps pydantic's own)."""
    ctx = error.get("ctx") or {}
    if error["type"] == "missing" or (
        error["type"] == "string_too_short" and ctx.get("min_length") == 1
    ):
        return "This field is required."
    return str(error["msg"])


def _schema_int_field(name: str, label: str) -> forms.IntegerField:
    """An optional integer field whose default, range hint and bounds come from the schema."""
    return forms.IntegerField(
        required=False,
        label=label,
        initial=schema_default(name),
        help_text=_range_help(name),
        widget=forms.NumberInput(attrs=_number_attrs(name)),
    )


class LaunchForm(forms.Form):
    """The Tunix panel's launch form; `run_request` holds the validated request."""

    dataset_key = forms.CharField(
        required=False,
        label="Dataset",
        help_text="The key of a built dataset (name-version).",
        widget=forms.TextInput(
            attrs=_text_attrs("dataset_key", placeholder="my_dataset-v1", list="dataset-keys")
        ),
    )
    model_id = forms.CharField(
        required=False,
        label="Model id",
        initial=DEFAULT_MODEL_ID,
        help_text=(
            "A hub id, or a checkpoint directory in the model roots; "
            "tiny-qwen3 trains on a CPU in seconds."
        ),
        widget=forms.TextInput(attrs=_text_attrs("model_id")),
    )
    output_dir = forms.CharField(
        required=False,
        label="Output directory",
        help_text="Optional; under the data directory. Default: outputs/tunix_run_<id>.",
        widget=forms.TextInput(attrs=_text_attrs("output_dir", placeholder="outputs/my_run")),
    )
    learning_rate = forms.FloatField(
        required=False,
        label="Learning rate",
        initial=schema_default("learning_rate"),
        help_text=_range_help("learning_rate"),
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    num_epochs = _schema_int_field("num_epochs", "Epochs")
    batch_size = _schema_int_field("batch_size", "Batch size")
    max_seq_length = _schema_int_field("max_seq_length", "Max sequence length")
    dry_run = forms.BooleanField(
        required=False,
        label="Dry run",
        initial=schema_default("dry_run"),
        help_text="Validate the dataset without training. Turn off to train locally with Tunix.",
    )

    queue = forms.ChoiceField(
        required=False,
        label="Queue",
        help_text="The worker queue that executes a local run.",
    )

    # Advanced: LoRA (the `lora` object), checkpoints, resume. A blank box is "not given".
    lora_rank = forms.IntegerField(
        required=False,
        label="LoRA rank",
        help_text=(
            f"{_span(schema_bounds('rank', LoraRequest))}; blank: full-weight training "
            "(the other LoRA options need a rank)."
        ),
        widget=forms.NumberInput(
            attrs={**_number_attrs("rank", LoraRequest), "placeholder": "full-weight"}
        ),
    )
    lora_alpha = forms.FloatField(
        required=False,
        label="LoRA alpha",
        help_text=_range_help("alpha", LoraRequest),
        widget=forms.TextInput(
            attrs={
                "inputmode": "decimal",
                "autocomplete": "off",
                "placeholder": schema_default("alpha", LoraRequest),
            }
        ),
    )
    lora_dropout = forms.FloatField(
        required=False,
        label="LoRA dropout",
        help_text=_range_help("dropout", LoraRequest),
        widget=forms.TextInput(
            attrs={
                "inputmode": "decimal",
                "autocomplete": "off",
                "placeholder": schema_default("dropout", LoraRequest),
            }
        ),
    )
    lora_target_modules = forms.MultipleChoiceField(
        required=False,
        label="LoRA target modules",
        choices=[(name, name) for name in LORA_MODULE_NAMES],
        help_text="None checked: every module of the model's family.",
        widget=forms.CheckboxSelectMultiple,
    )
    lora_export = forms.ChoiceField(
        required=False,
        label="LoRA export",
        choices=[
            ("", f"default ({schema_default('export', LoraRequest)})"),
            ("merged", "merged"),
            ("adapter", "adapter"),
        ],
        help_text="What a LoRA run exports: merged (the adapter folded into the base "
        "weights) or the adapter alone.",
    )
    checkpoint_every_n_steps = forms.IntegerField(
        required=False,
        label="Checkpoint every N steps",
        help_text=(
            f"{_span(schema_bounds('checkpoint_every_n_steps'))}; "
            "blank: a third of the run's steps."
        ),
        widget=forms.NumberInput(
            attrs={**_number_attrs("checkpoint_every_n_steps"), "placeholder": "default"}
        ),
    )
    resume_from = forms.CharField(
        required=False,
        label="Resume from run",
        help_text=(
            "The id of a finished local run of the same model and LoRA shape: "
            "training continues from its last checkpoint."
        ),
        widget=forms.TextInput(
            attrs={
                "autocomplete": "off",
                "spellcheck": "false",
                "maxlength": 36,
                "placeholder": "run id",
            }
        ),
    )

    run_request: TunixRunRequest | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        queues = list(settings.TUNIX_QUEUES)
        if len(queues) > 1:
            queue = self.fields["queue"]
            assert isinstance(queue, forms.ChoiceField)
            queue.choices = [(q, q) for q in queues]
            self.fields["queue"].initial = settings.TUNIX_DEFAULT_QUEUE
        else:
            # One queue: nothing to choose, the run goes to it.
            del self.fields["queue"]

    def main_fields(self) -> list[forms.BoundField]:
        names = ["dataset_key", "model_id", "output_dir"]
        if "queue" in self.fields:
            names.append("queue")
        return [self[name] for name in names]

    def hyperparameter_fields(self) -> list[forms.BoundField]:
        return [
            self[name] for name in ("learning_rate", "num_epochs", "batch_size", "max_seq_length")
        ]

    def lora_fields(self) -> list[forms.BoundField]:
        """The LoRA boxes of the Advanced group (its target modules are a fieldset of their own)."""
        return [self[name] for name in ("lora_rank", "lora_alpha", "lora_dropout", "lora_export")]

    def checkpoint_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("checkpoint_every_n_steps", "resume_from")]

    def advanced_open(self) -> bool:
        """Whether the Advanced group starts open: one of its fields has a value or an error."""
        names = [LORA_PREFIX + name for name in LORA_FIELDS]
        names += ["checkpoint_every_n_steps", "resume_from"]
        return any(self[name].errors or self[name].value() not in (None, "", []) for name in names)

    def field_for(self, name: str | None) -> str | None:
        """The form field of a request field ("lora.rank" or ("lora", "rank") -> "lora_rank");
        None (a form-wide error) for one the form has no field for."""
        if name is None:
            return None
        if name == "lora":
            return "lora_rank"
        if name.startswith("lora."):
            name = LORA_PREFIX + name.removeprefix("lora.")
        return name if name in self.fields else None

    def _lora_payload(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """The `lora` object from the lora_* fields: None for full-weight (blank rank)."""
        given: dict[str, Any] = {}
        for name in LORA_FIELDS:
            field = LORA_PREFIX + name
            value = data.get(field)
            if field in self.errors or value is None or value in ("", []):
                continue
            given[name] = value
        if "rank" in given:
            return given
        if LORA_PREFIX + "rank" in self.errors:
            return None
        if given:
            self.add_error(
                "lora_rank",
                "Give a LoRA rank to train a LoRA adapter: alpha, dropout, target modules "
                "and export apply only to one (leave them blank for full-weight training).",
            )
        return None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        payload: dict[str, Any] = {}
        for name in LAUNCH_FIELDS:
            value = data.get(name)
            # A blank box means "not given": the schema's default (or its error) applies.
            if name in self.errors or value is None or value == "":
                continue
            payload[name] = value
        payload["dry_run"] = bool(data.get("dry_run"))
        if data.get("queue"):
            payload["queue"] = data["queue"]
        lora = self._lora_payload(data)
        if lora is not None:
            payload["lora"] = lora
        try:
            self.run_request = TunixRunRequest(**payload)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                loc = error.get("loc") or ()
                where = ".".join(str(part) for part in loc[:2]) if loc else None
                field = self.field_for(where)
                if field in self.errors:
                    continue  # already reported as unparseable
                self.add_error(field, _error_message(error))
        return data

    @classmethod
    def initial_from_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Initial values for "launch again": a stored run's validated request."""
        initial = {
            name: config[name]
            for name in (*LAUNCH_FIELDS, "queue")
            if name in config and config[name] is not None
        }
        lora = config.get("lora")
        if isinstance(lora, dict):
            for name in LORA_FIELDS:
                if lora.get(name) is not None:
                    initial[LORA_PREFIX + name] = lora[name]
        return initial


def _choices(enum: type[models.TextChoices]) -> list[tuple[str, str]]:
    return [("", "Any"), *enum.choices]


class LiveCursorForm(forms.Form):
    """The run page's poll: what the page already shows.

    `since_seq` is the seq of the last log chunk shown, `status` the status
    shown, `steps` the metrics steps shown; the answer carries only what is new.
    """

    since_seq = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    status = forms.ChoiceField(required=False, choices=_choices(RunStatus))
    steps = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1)

    def cursor(self) -> tuple[int, str, int | None]:
        data = self.cleaned_data
        return data.get("since_seq") or 0, data.get("status") or "", data.get("steps")


class HistoryFilterForm(forms.Form):
    """The run history's query string: the API's own parameter names."""

    status = forms.ChoiceField(required=False, choices=_choices(RunStatus))
    mode = forms.ChoiceField(required=False, choices=_choices(RunMode))
    dataset_key = forms.CharField(
        required=False,
        max_length=256,
        label="Dataset key",
        widget=forms.TextInput(
            attrs={"placeholder": "any", "autocomplete": "off", "list": "dataset-keys"}
        ),
    )
    launched_by = forms.CharField(
        required=False,
        max_length=150,
        label="Launched by",
        widget=forms.TextInput(attrs={"placeholder": "anyone", "autocomplete": "off"}),
    )
    limit = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_LIMIT, widget=forms.HiddenInput
    )
    offset = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_OFFSET, widget=forms.HiddenInput
    )

    FILTERS = ("status", "mode", "dataset_key", "launched_by")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The launch form on the same page has a dataset_key too: distinct element ids.
        kwargs.setdefault("auto_id", "history_%s")
        super().__init__(*args, **kwargs)

    def filters(self) -> dict[str, str]:
        """The non-empty filters (valid form only)."""
        return {name: self.cleaned_data[name] for name in self.FILTERS if self.cleaned_data[name]}

    def page(self) -> tuple[int, int]:
        limit = self.cleaned_data.get("limit") or DEFAULT_LIMIT
        offset = self.cleaned_data.get("offset") or 0
        return limit, offset
