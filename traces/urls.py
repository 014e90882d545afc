from django.urls import path

from traces import views

app_name = "traces"

urlpatterns = [
    path("", views.trace_list, name="list"),
    path("upload/", views.trace_upload, name="upload"),
    path("compare/", views.trace_compare, name="compare"),
    path("<uuid:trace_id>/", views.trace_detail, name="detail"),
    path("<uuid:trace_id>/score/", views.trace_score, name="score"),
]
