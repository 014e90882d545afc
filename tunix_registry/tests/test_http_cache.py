from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.http import ConditionalGetMiddleware
from django.test import RequestFactory, override_settings

from tunix_registry.http_cache import (
    IMMUTABLE_MAX_AGE,
    mark_immutable,
    mark_revalidate,
    not_modified,
    permanent_etag,
    strong_etag,
)

factory = RequestFactory()


def test_strong_etag_is_quoted_and_names_its_parts() -> None:
    etag = strong_etag("run", "abc", "final")
    assert etag.startswith('"') and etag.endswith('"')
    assert "run.abc.final" in etag
    assert etag != strong_etag("run", "abc", "live")


def test_not_modified_answers_304_only_when_the_etag_matches_and_the_resource_exists() -> None:
    etag = strong_etag("trace", 1)
    calls: list[bool] = []

    def exists() -> bool:
        calls.append(True)
        return True

    assert not_modified(factory.get("/"), etag, exists=exists) is None
    assert not_modified(factory.get("/", HTTP_IF_NONE_MATCH='"other"'), etag, exists=exists) is None
    assert calls == []  # no lookup without a matching validator
    response = not_modified(
        factory.get("/", HTTP_IF_NONE_MATCH=f'"x", W/{etag}'), etag, exists=exists
    )
    assert response is not None and response.status_code == 304
    assert response.headers["ETag"] == etag
    assert f"max-age={IMMUTABLE_MAX_AGE}" in response.headers["Cache-Control"]
    assert "immutable" in response.headers["Cache-Control"]
    assert not_modified(factory.get("/", HTTP_IF_NONE_MATCH="*"), etag, exists=exists) is not None
    assert len(calls) == 2


def test_not_modified_lets_a_deleted_resource_be_answered_in_full() -> None:
    etag = strong_etag("trace", 2)
    request = factory.get("/", HTTP_IF_NONE_MATCH=etag)
    assert not_modified(request, etag, exists=lambda: False) is None
    post = factory.post("/", HTTP_IF_NONE_MATCH=etag)
    assert not_modified(post, etag, exists=lambda: True) is None


def test_a_permanent_etag_is_signed_so_its_match_alone_answers_304() -> None:
    etag = permanent_etag("run", "abc", "final")
    assert etag == permanent_etag("run", "abc", "final")
    assert etag != permanent_etag("run", "abd", "final")
    assert etag.startswith('"2.run.abc.final.') and len(etag) == len('"2.run.abc.final."') + 32
    with override_settings(SECRET_KEY="another-key-" * 5):
        assert permanent_etag("run", "abc", "final") != etag
    response = not_modified(factory.get("/", HTTP_IF_NONE_MATCH=etag), etag, exists=None)
    assert response is not None and response.status_code == 304
    # Without the signature (a client guessing the identity) it is an ordinary miss.
    guessed = strong_etag("run", "abc", "final")
    request = factory.get("/", HTTP_IF_NONE_MATCH=guessed)
    assert not_modified(request, etag, exists=None) is None


def test_mark_immutable_sets_the_validator_and_a_long_lifetime() -> None:
    response = HttpResponse("x")
    mark_immutable(response, strong_etag("dataset", "k"))
    assert response.headers["ETag"] == strong_etag("dataset", "k")
    assert "private" in response.headers["Cache-Control"]
    assert "public" not in response.headers["Cache-Control"]


def test_revalidated_responses_get_a_body_etag_and_a_304_from_conditional_get() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        response = HttpResponse(b'{"data": []}', content_type="application/json")
        mark_revalidate(response)
        return response

    middleware = ConditionalGetMiddleware(view)
    first = middleware(factory.get("/"))
    assert isinstance(first, HttpResponse)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "no-cache"
    etag = first.headers["ETag"]
    again = middleware(factory.get("/", HTTP_IF_NONE_MATCH=etag))
    assert isinstance(again, HttpResponseBase) and again.status_code == 304
