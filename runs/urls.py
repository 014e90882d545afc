from django.urls import path

from runs import compare_views, views

app_name = "runs"

urlpatterns = [
    path("", views.home, name="home"),
    path("runs/history/", views.history, name="history"),
    # Before the run routes; "compare" is no uuid, so neither shadows the other.
    path("runs/compare/", compare_views.run_compare_page, name="compare"),
    path("runs/<uuid:run_id>/", views.run_detail, name="detail"),
    path("runs/<uuid:run_id>/live/", views.run_live, name="live"),
    path("runs/<uuid:run_id>/cancel/", views.run_cancel_view, name="cancel"),
    path("runs/<uuid:run_id>/evaluate/", views.run_evaluate_view, name="evaluate"),
    path("runs/<uuid:run_id>/evaluations/", views.run_evaluations_panel, name="evaluations"),
    path("runs/<uuid:run_id>/row/", views.run_row, name="row"),
    path("runs/<uuid:run_id>/logs/<str:stream>.log", views.run_log, name="log"),
    path("workers/", views.workers, name="workers"),
]
