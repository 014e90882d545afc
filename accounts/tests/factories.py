"""factory-boy factories for users with a role, and their API tokens."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from accounts.roles import LAUNCHER, assign_role


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.test")
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs: Any) -> None:
        # UserFactory(role="viewer"); a launcher unless told; role=None: no role at all.
        if create and extracted != "":
            assign_role(self, extracted or LAUNCHER)
