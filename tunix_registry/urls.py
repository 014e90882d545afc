from django.contrib import admin
from django.urls import include, path

from runs.prometheus import metrics
from tunix_registry.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("accounts/", include("accounts.urls")),
    # Prometheus scrape target (docs/decisions.md#metrics-endpoint).
    path("metrics", metrics, name="metrics"),
    path("traces/", include("traces.urls")),
    path("datasets/", include("datasets.urls")),
    path("leaderboard/", include("evaluations.urls")),
    path("", include("runs.urls")),
]
