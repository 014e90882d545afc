import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunix_registry.settings")

application = get_wsgi_application()

# Refuse to serve (gunicorn stops: its worker fails to boot) rather than answer
# /api/health while every page is a 500; see tunix_registry/checks.py.
from tunix_registry.checks import ensure_ready_to_serve  # noqa: E402

ensure_ready_to_serve()
