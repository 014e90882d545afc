import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunix_registry.settings")

application = get_asgi_application()

# As in wsgi.py: refuse to serve without collected static files.
from tunix_registry.checks import ensure_ready_to_serve  # noqa: E402

ensure_ready_to_serve()
