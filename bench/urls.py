"""The product's URLs plus `/bench/calibrate`, the framework's ceiling on this machine.

`/bench/calibrate` answers a constant 100-byte JSON body from a plain Django
view. It is outside `/api/`, so it passes through the whole of
settings.MIDDLEWARE exactly as the web pages do, and it touches no database: a
read endpoint that reaches the same requests/s does nothing beyond what any
Django page of this project pays for.
"""

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

CALIBRATION_PATH = "/bench/calibrate"
_PREFIX = b'{"status": "ok", "padding": "'
_SUFFIX = b'"}'
CALIBRATION_BODY = _PREFIX + b"x" * (100 - len(_PREFIX) - len(_SUFFIX)) + _SUFFIX
assert len(CALIBRATION_BODY) == 100


# Open like the login page: pages need a sign-in, and a redirect to the login
# page is not the body this view is meant to measure.
@login_not_required
def calibrate(request: HttpRequest) -> HttpResponse:
    return HttpResponse(CALIBRATION_BODY, content_type="application/json")


urlpatterns = [
    path(CALIBRATION_PATH.lstrip("/"), calibrate),
    path("", include("tunix_registry.urls")),
]
