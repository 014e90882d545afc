"""Settings of the benchmark server: the product's, plus the calibration view's URL.

The calibration endpoint (`/bench/calibrate`, bench/urls.py) is not part of the
product: only the benchmarks serve it, by running gunicorn with
DJANGO_SETTINGS_MODULE=bench.settings.
"""

from tunix_registry.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
