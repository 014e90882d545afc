from django.urls import path

from datasets import views

app_name = "datasets"

urlpatterns = [
    path("", views.dataset_list, name="list"),
    path("build/", views.dataset_build, name="build"),
    path("<str:key>/", views.dataset_detail, name="detail"),
]
