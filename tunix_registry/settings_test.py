"""Settings for the test suite: production settings plus a throwaway key.

The production module stays strict (no key, no start); tests supply one here
instead of weakening it, and serve static files without a collectstatic step.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-key-never-used-outside-the-test-suite")

from tunix_registry.settings import *  # noqa: F403
from tunix_registry.settings import STORAGES

STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
