from django.contrib import admin
from django.urls import include, path

from tunix_registry.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("traces/", include("traces.urls")),
    path("datasets/", include("datasets.urls")),
    path("", include("runs.urls")),
]
