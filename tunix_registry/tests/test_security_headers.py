"""Security headers, cookies and the HTTPS settings, through the real middleware.

See docs/decisions.md#security-headers and docs/operations.md#https-settings.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
    "base-uri": "'self'",
    "object-src": "'none'",
}


def directives(response: Any) -> dict[str, str]:
    return directives_of({"Content-Security-Policy": response["Content-Security-Policy"]})


def directives_of(headers: dict[str, str]) -> dict[str, str]:
    header = headers["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.fixture
def signed_in() -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-long-1234")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path", ["/", "/traces/", "/datasets/", "/workers/", "/admin/", "/api/docs"]
)
def test_every_page_carries_the_policy_and_no_framing(signed_in: Client, path: str) -> None:
    response = signed_in.get(path)
    assert response.status_code == 200
    assert directives(response) == POLICY
    assert "unsafe" not in response["Content-Security-Policy"]
    # /api/ sends no X-Frame-Options (tunix_registry/middleware.py); frame-ancestors covers it.
    assert response.get("X-Frame-Options") == (None if path.startswith("/api/") else "DENY")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_pages_outside_the_session_carry_it_too() -> None:
    client = Client()
    for path in ("/admin/login/", "/accounts/login/", "/api/health", "/api/openapi.json"):
        assert directives(client.get(path)) == POLICY, path


def test_no_page_has_an_inline_script_or_style(signed_in: Client) -> None:
    """What the policy forbids is absent from the HTML itself (the browser test runs them)."""
    for path in ("/", "/traces/", "/datasets/", "/workers/"):
        html = signed_in.get(path).content.decode()
        assert " style=" not in html and "<style" not in html, path
        for tag in html.split("<script")[1:]:
            opening = tag.split(">", 1)[0]
            assert " src=" in opening, f"{path}: inline <script{opening}>"
        assert '<meta name="htmx-config" content=\'{"includeIndicatorStyles": false}\'>' in html


def test_cookies_are_http_only_and_same_site_lax() -> None:
    client = Client()
    client.get("/admin/login/")
    csrf = client.cookies["csrftoken"]
    assert csrf["httponly"] is True
    assert csrf["samesite"] == "Lax"
    assert not csrf["secure"]  # DJANGO_SECURE_COOKIES is off by default
    get_user_model().objects.create_superuser("ann", "ann@example.com", "pw-long-1234")
    response = client.post("/admin/login/", {"username": "ann", "password": "pw-long-1234"})
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["httponly"] is True
    assert session["samesite"] == "Lax"


def test_htmx_takes_the_csrf_token_from_the_page(signed_in: Client) -> None:
    """CSRF_COOKIE_HTTPONLY holds because no script reads the cookie: htmx has it from base.html."""
    home = signed_in.get("/")
    token = home.content.decode().split('<body hx-headers=\'{"X-CSRFToken": "', 1)[1].split('"')[0]
    assert len(token) == 64
    assert home.cookies["csrftoken"]["httponly"] is True


def test_secure_cookies_and_hsts_in_production(settings: Any) -> None:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    client = Client()
    response = client.get("/admin/login/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert client.cookies["csrftoken"]["secure"] is True
    # HSTS is only ever sent over HTTPS.
    assert "Strict-Transport-Security" not in Client().get("/api/health")


def test_ssl_redirect_spares_only_the_health_check(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    page = client.get("/runs/workers/?x=1")
    assert page.status_code == 301
    assert page["Location"] == "https://testserver/runs/workers/?x=1"
    api = client.get("/api/tunix/runs")
    assert api.status_code == 301
    assert api["Location"] == "https://testserver/api/tunix/runs"
    # A load balancer probing over plain HTTP still gets its answer.
    health = client.get("/api/health")
    assert health.status_code == 200
    assert health.json() == {"status": "healthy"}
    # Over HTTPS nothing is redirected.
    assert client.get("/api/health", secure=True).status_code == 200


def test_behind_the_proxy_x_forwarded_proto_means_https(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    client = Client()
    response = client.get("/api/tunix/runs", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 401  # reached the API: not redirected
    assert client.get("/api/tunix/runs", HTTP_X_FORWARDED_PROTO="http").status_code == 301
    # Without the setting the header is not trusted.
    settings.SECURE_PROXY_SSL_HEADER = None
    assert Client().get("/api/tunix/runs", HTTP_X_FORWARDED_PROTO="https").status_code == 301


# --- The policy built once (tunix_registry.middleware.StaticPolicyCSPMiddleware) ---------

CSP_HEADERS = ("Content-Security-Policy", "Content-Security-Policy-Report-Only")


def _csp_headers(middleware_class: Any, make_response: Any, *, nonce: bool) -> dict[str, str]:
    from django.test import RequestFactory

    request = RequestFactory().get("/anywhere")
    response = make_response()
    middleware = middleware_class(lambda request: response)
    middleware.process_request(request)
    if nonce:
        str(request.csp_nonce)  # type: ignore[attr-defined]
    answered = middleware.process_response(request, response)
    return {name: answered[name] for name in CSP_HEADERS if name in answered}


def same_as_django_csp(make_response: Any, *, nonce: bool = False) -> dict[str, str]:
    """The CSP headers our middleware writes, checked equal to django-csp's own middleware's."""
    from csp.middleware import CSPMiddleware

    from tunix_registry.middleware import StaticPolicyCSPMiddleware

    ours = _csp_headers(StaticPolicyCSPMiddleware, make_response, nonce=nonce)
    theirs = _csp_headers(CSPMiddleware, make_response, nonce=nonce)
    if nonce:  # a new nonce each time
        ours = {k: re.sub(r"'nonce-[^']*'", "'nonce'", v) for k, v in ours.items()}
        theirs = {k: re.sub(r"'nonce-[^']*'", "'nonce'", v) for k, v in theirs.items()}
    assert ours == theirs
    return ours


def test_the_policy_built_once_is_django_csps_own_and_follows_the_settings(settings: Any) -> None:
    from django.http import HttpResponse

    assert directives_of(same_as_django_csp(HttpResponse)) == POLICY
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": {"img-src": ["'self'"]}}
    changed = same_as_django_csp(HttpResponse)
    assert changed["Content-Security-Policy"] == "default-src 'none'"
    assert "img-src 'self'" in changed["Content-Security-Policy-Report-Only"]
    settings.CONTENT_SECURITY_POLICY = {
        "DIRECTIVES": {"default-src": ["'self'"]},
        "EXCLUDE_URL_PREFIXES": ["/any"],
    }
    assert "Content-Security-Policy" not in same_as_django_csp(HttpResponse)


def test_a_policy_changed_for_one_response_or_a_nonce_is_written_as_django_csp_writes_it(
    settings: Any,
) -> None:
    from csp.constants import NONCE
    from django.http import HttpResponse

    def updated() -> HttpResponse:
        response = HttpResponse()
        response._csp_update = {"img-src": ["https://example.test"]}  # type: ignore[attr-defined]
        return response

    def exempt() -> HttpResponse:
        response = HttpResponse()
        response._csp_exempt = True  # type: ignore[attr-defined]
        return response

    assert "https://example.test" in same_as_django_csp(updated)["Content-Security-Policy"]
    assert same_as_django_csp(exempt) == {}
    own = same_as_django_csp(lambda: HttpResponse(headers={"Content-Security-Policy": "x"}))
    assert own == {"Content-Security-Policy": "x"}
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"script-src": ["'self'", NONCE]}}
    assert "'nonce'" in same_as_django_csp(HttpResponse, nonce=True)["Content-Security-Policy"]
