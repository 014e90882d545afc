"""The base layout, static files and the admin's login wall."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse


def test_home_has_navigation_and_htmx(client: Client, db: None) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    for label, href in [
        ("Runs", "/"),
        ("Datasets", "/datasets/"),
        ("Traces", "/traces/"),
        ("API docs", "/api/docs"),
        ("launcher", "/accounts/"),
    ]:
        assert f'href="{href}"' in html
        assert label in html
    # The admin link is for staff only (accounts/tests/test_pages.py).
    assert 'href="/admin/"' not in html
    assert 'action="/accounts/logout/"' in html
    assert "django_htmx/htmx-2.min.js" in html
    assert "X-CSRFToken" in html


def test_stylesheet_is_served(client: Client, db: None) -> None:
    response = client.get("/static/css/app.css")
    assert response.status_code == 200


def test_admin_requires_login(client: Client, db: None) -> None:
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_staff_can_open_admin(anon_client: Client, db: None) -> None:
    client = anon_client
    User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    # Signed in with the password through the login page (the login limits need the request).
    signed_in = client.post(
        reverse("accounts:login"), {"username": "root", "password": "pw-for-tests-only"}
    )
    assert signed_in.status_code == 302
    assert client.get("/admin/").status_code == 200
