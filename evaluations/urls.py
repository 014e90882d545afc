from django.urls import path

from evaluations import views

app_name = "evaluations"

urlpatterns = [
    path("", views.leaderboard_page, name="leaderboard"),
]
