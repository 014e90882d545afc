"""Forms of the accounts pages."""

from __future__ import annotations

from typing import Any

from django import forms

from accounts import selectors
from accounts.models import ApiToken

TOKEN_NAME_MAX = ApiToken._meta.get_field("name").max_length


class TokenCreateForm(forms.Form):
    """A new API token for the signed-in user: a name unique among their live tokens."""

    name = forms.CharField(
        label="Token name",
        max_length=TOKEN_NAME_MAX,
        help_text="What the token is for, e.g. “laptop” or “CI nightly import”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if selectors.live_token(self.user, name) is not None:
            raise forms.ValidationError(
                "You already have a live token with this name: "
                "choose another, or revoke that one first.",
                code="duplicate",
            )
        return name
