"""POST /api/traces: 201, 413 (header and body actually received), 422, 400."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from django.test import Client

from traces.models import Trace
from traces.tests.factories import make_payload

URL = "/api/traces"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def post(client: Client, body: bytes | str | Any, **extra: Any) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.generic("POST", URL, data, content_type="application/json", **extra)


def post_chunked(client: Client, body: bytes) -> Any:
    """What Django sees behind gunicorn for `Transfer-Encoding: chunked`: no Content-Length."""
    extra: dict[str, Any] = {"wsgi.input": io.BytesIO(body)}
    # With no data the test client sets no Content-Type of its own: the body is JSON.
    return client.generic(
        "POST",
        URL,
        b"",
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **extra,
    )


@pytest.mark.django_db
def test_create_returns_201_with_id_time_and_version_and_stores_normalised_payload(
    client: Client,
) -> None:
    raw = make_payload(meta={"source": "test"})
    raw["unknown"] = "dropped"
    response = post(client, raw)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "created_at", "trace_version"}
    assert ISO_Z.match(body["created_at"])
    assert body["trace_version"] == "1.0"
    trace = Trace.objects.get(pk=body["id"])
    assert trace.payload == make_payload(meta={"source": "test"})
    assert trace.created_at.isoformat().replace("+00:00", "Z") == body["created_at"]


@pytest.mark.django_db
def test_meta_is_stored_as_null_when_omitted(client: Client) -> None:
    raw = make_payload()
    del raw["meta"]
    trace_id = post(client, raw).json()["id"]
    assert Trace.objects.get(pk=trace_id).payload["meta"] is None


@pytest.mark.django_db
def test_content_length_over_the_limit_is_413_before_reading(client: Client, settings: Any) -> None:
    settings.TRACE_MAX_BYTES = 2048
    response = post(client, make_payload(), CONTENT_LENGTH="2049")
    assert response.status_code == 413
    assert response.json() == {"detail": "Payload size exceeds maximum of 2048 bytes"}
    assert not Trace.objects.exists()


@pytest.mark.django_db
def test_a_two_megabyte_prompt_exceeds_the_default_maximum(client: Client) -> None:
    response = post(client, make_payload(prompt="x" * 2_000_000))
    assert response.status_code == 413
    assert "exceeds maximum of 1048576 bytes" in response.json()["detail"]


@pytest.mark.django_db
def test_chunked_body_without_content_length_is_measured(client: Client, settings: Any) -> None:
    settings.TRACE_MAX_BYTES = 2048
    big = json.dumps(make_payload(prompt="x" * 5000)).encode()
    response = post_chunked(client, big)
    assert response.status_code == 413
    assert response.json() == {"detail": "Payload size exceeds maximum of 2048 bytes"}
    assert not Trace.objects.exists()

    small = json.dumps(make_payload()).encode()
    response = post_chunked(client, small)
    assert response.status_code == 201
    assert Trace.objects.count() == 1


@pytest.mark.django_db
def test_body_exactly_at_the_limit_is_accepted(client: Client, settings: Any) -> None:
    settings.TRACE_MAX_BYTES = 2048
    body = json.dumps(make_payload())
    body += " " * (2048 - len(body))
    assert post(client, body).status_code == 201
    assert post_chunked(client, body.encode()).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["abc", "-5", "1.5"])
def test_malformed_content_length_is_400_not_500(client: Client, header: str) -> None:
    response = post(client, make_payload(), CONTENT_LENGTH=header)
    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid Content-Length header"}


@pytest.mark.django_db
def test_malformed_json_is_422(client: Client) -> None:
    response = post(client, b'{"trace_version": "1.0", "prompt": ')
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["loc"] == ["body"]


@pytest.mark.django_db
def test_empty_body_is_422_field_required(client: Client) -> None:
    response = post(client, b"")
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "Field required"


@pytest.mark.django_db
def test_missing_and_invalid_fields_are_named(client: Client) -> None:
    raw = make_payload()
    del raw["final_answer"]
    raw["steps"][1]["content"] = ""
    response = post(client, raw)
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["detail"]]
    assert ["body", "final_answer"] in locs
    assert ["body", "steps", 1, "content"] in locs
    assert not Trace.objects.exists()


@pytest.mark.django_db
def test_duplicate_step_index_is_422_mentioning_unique(client: Client) -> None:
    raw = make_payload()
    raw["steps"][1]["i"] = 0
    response = post(client, raw)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "steps"]
    assert "unique" in error["msg"]


@pytest.mark.django_db
def test_array_body_is_422(client: Client) -> None:
    response = post(client, [make_payload()])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.django_db
def test_nul_character_is_422_not_a_database_error(client: Client) -> None:
    response = post(client, make_payload(prompt="a\x00b"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]
