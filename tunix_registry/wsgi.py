import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunix_registry.settings")

django_application = get_wsgi_application()

# Imported once Django is set up: it reads settings and the apps' API modules.
from tunix_registry.hotpath import hot_reads  # noqa: E402

application = hot_reads(django_application)
