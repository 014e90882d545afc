"""What every endpoint under /api/ shares: JSON errors, body handling, NUL, strict types.

Through the test client (Django's whole request cycle, middleware included);
the same requests through gunicorn with real chunked bodies are in
test_api_chunked_gunicorn.py.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client

from datasets.models import Dataset
from datasets.tests.factories import dataset_with_traces
from runs.models import TunixRun
from traces.models import Score, Trace
from traces.tests.factories import TraceFactory, make_payload
from tunix_registry.rendering import CONTENT_TYPE

pytestmark = pytest.mark.django_db

JSON_BODY = "application/json"


def _post(client: Client, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type=JSON_BODY)


def _locs(response: Any) -> set[tuple[Any, ...]]:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return {tuple(item["loc"]) for item in detail}


def _counts() -> tuple[int, int, int, int]:
    return (
        Trace.objects.count(),
        Score.objects.count(),
        Dataset.objects.count(),
        TunixRun.objects.count(),
    )


# --- Django's own errors under /api/ are JSON ---------------------------------


def test_unknown_api_path_is_a_json_404(client: Client) -> None:
    response = client.get("/api/no/such/thing")
    assert response.status_code == 404
    assert response["Content-Type"] == CONTENT_TYPE
    assert response.json() == {"detail": "Not Found"}


def test_a_method_the_path_does_not_allow_is_a_json_405_with_allow(client: Client) -> None:
    response = client.delete("/api/tunix/runs")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert "GET" in response["Allow"]


def test_pages_outside_the_api_keep_their_html_404(client: Client) -> None:
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "application/json" not in response["Content-Type"]


# --- unhandled exceptions -----------------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
def test_an_exception_in_a_handler_is_a_logged_json_500_without_traceback(
    client: Client, settings: Any, monkeypatch: Any, caplog: Any, debug: bool
) -> None:
    settings.DEBUG = debug

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("traces.selectors.trace_summary_page", broken)
    client.raise_request_exception = False
    with caplog.at_level(logging.ERROR):
        response = client.get("/api/traces")
    assert response.status_code == 500
    assert response["Content-Type"] == CONTENT_TYPE
    assert response.json() == {"detail": "Internal server error"}
    assert b"Traceback" not in response.content and b"secret" not in response.content
    logged = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert logged and "secret internals" in str(logged[0].exc_info[1])


def test_a_database_error_is_a_json_503(client: Client, monkeypatch: Any, caplog: Any) -> None:
    def down(**kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr("runs.selectors.run_list", down)
    with caplog.at_level(logging.ERROR):
        response = client.get("/api/tunix/runs")
    assert response.status_code == 503
    assert response.json() == {"detail": "Database unavailable"}
    assert any(r.exc_info for r in caplog.records)


# --- body size ----------------------------------------------------------------


def test_a_body_above_the_upload_limit_is_a_json_413_with_nothing_read_or_logged(
    client: Client, settings: Any, caplog: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = json.dumps({"dataset_key": "x" * 5000, "model_id": "m"})
    with caplog.at_level(logging.WARNING):
        response = client.post("/api/tunix/run", data=body, content_type=JSON_BODY)
    assert response.status_code == 413
    assert response.json() == {"detail": "Payload size exceeds maximum of 4096 bytes"}
    assert not any(r.exc_info for r in caplog.records)  # no RequestDataTooBig traceback
    assert TunixRun.objects.count() == 0


def test_an_invalid_content_length_is_a_json_400(client: Client) -> None:
    response = client.generic(
        "POST", "/api/datasets/build", b"{}", content_type=JSON_BODY, CONTENT_LENGTH="abc"
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid Content-Length header"}


def _chunked(client: Client, path: str, body: bytes) -> Any:
    # What gunicorn hands Django for Transfer-Encoding: chunked: no Content-Length,
    # the de-chunked body readable from wsgi.input.
    environ: dict[str, Any] = {
        "CONTENT_LENGTH": "",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(body),
    }
    return client.generic("POST", path, body, content_type=JSON_BODY, **environ)


def _post_cases() -> list[tuple[str, dict[str, Any] | list[Any], int]]:
    return [
        ("/api/traces", make_payload(), 201),
        ("/api/traces/batch", [make_payload(), make_payload()], 201),
        ("/api/traces/{trace}/score", {"criteria": "baseline"}, 201),
        ("/api/datasets/build", {"dataset_name": "chunked", "dataset_version": "v1"}, 201),
        ("/api/tunix/run", {"dataset_key": "demo-v1", "model_id": "tiny-qwen3"}, 200),
        ("/api/tunix/sft/export", {"dataset_key": "demo-v1"}, 200),
        (
            "/api/tunix/sft/manifest",
            {"dataset_key": "demo-v1", "model_id": "m", "output_dir": "out"},
            201,
        ),
    ]


@pytest.mark.parametrize(("path", "body", "status"), _post_cases())
def test_every_post_endpoint_reads_a_chunked_body(
    client: Client, path: str, body: Any, status: int
) -> None:
    dataset = dataset_with_traces(count=2)
    path = path.format(trace=Trace.objects.first().id)  # type: ignore[union-attr]
    response = _chunked(client, path, json.dumps(body).encode())
    assert response.status_code == status, response.content
    if path == "/api/tunix/run":
        assert response.json()["status"] == "completed"
        assert response.json()["dataset_key"] == dataset.key


@pytest.mark.parametrize(("path", "body", "status"), _post_cases())
def test_every_post_endpoint_refuses_an_oversized_chunked_body_with_json_413(
    client: Client, settings: Any, path: str, body: Any, status: int
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    before = _counts()
    response = _chunked(client, path.format(trace=uuid.uuid4()), b" " * 2000 + b"{}")
    assert response.status_code == 413
    assert response.json() == {"detail": "Payload size exceeds maximum of 1024 bytes"}
    assert _counts() == before


def test_a_chunked_trace_above_the_trace_limit_is_413_from_its_own_limit(
    client: Client, settings: Any
) -> None:
    settings.TRACE_MAX_BYTES = 2048
    body = json.dumps(make_payload(prompt="x" * 5000)).encode()
    response = _chunked(client, "/api/traces", body)
    assert response.status_code == 413
    assert response.json() == {"detail": "Payload size exceeds maximum of 2048 bytes"}
    assert Trace.objects.count() == 0


# --- 422 loc ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/api/tunix/run", {"dataset_key", "model_id"}),
        ("/api/tunix/sft/manifest", {"dataset_key", "model_id", "output_dir"}),
        ("/api/datasets/build", {"dataset_name", "dataset_version"}),
        ("/api/traces", {"trace_version", "prompt", "final_answer", "steps"}),
    ],
)
def test_a_missing_body_field_is_located_at_body_field(
    client: Client, path: str, fields: set[str]
) -> None:
    response = _post(client, path, {})
    assert response.status_code == 422
    assert _locs(response) == {("body", field) for field in fields}


@pytest.mark.parametrize("path", ["/api/tunix/run", "/api/datasets/build", "/api/traces"])
def test_no_body_at_all_is_located_at_body(client: Client, path: str) -> None:
    response = client.generic("POST", path, b"", content_type=JSON_BODY)
    assert response.status_code == 422
    assert _locs(response) == {("body",)}


# --- NUL ----------------------------------------------------------------------

NUL = "a\x00b"
_RUN = {"dataset_key": "demo-v1", "model_id": "tiny-qwen3"}
_MANIFEST = {**_RUN, "output_dir": "out"}
_BUILD = {"dataset_name": "nul", "dataset_version": "v1"}


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/tunix/run", {**_RUN, "model_id": "tiny-qwen3\x00"}, ("body", "model_id")),
        (
            "/api/tunix/run",
            {**_RUN, "model_id": "tiny-qwen3\x00", "dry_run": False},
            ("body", "model_id"),
        ),
        ("/api/tunix/run", {**_RUN, "dataset_key": NUL}, ("body", "dataset_key")),
        ("/api/tunix/run", {**_RUN, "output_dir": NUL}, ("body", "output_dir")),
        ("/api/tunix/sft/manifest", {**_MANIFEST, "model_id": NUL}, ("body", "model_id")),
        ("/api/tunix/sft/export", {"trace_ids": [NUL]}, ("body", "trace_ids", 0)),
        ("/api/datasets/build", {**_BUILD, "session_id": NUL}, ("body", "session_id")),
        ("/api/datasets/build", {**_BUILD, "dataset_name": NUL}, ("body", "dataset_name")),
        ("/api/datasets/build", {**_BUILD, "training_run_id": NUL}, ("body", "training_run_id")),
        ("/api/datasets/build", {**_BUILD, "filters": {NUL: 1}}, ("body", "filters")),
        ("/api/datasets/build", {**_BUILD, "filters": {"k": NUL}}, ("body", "filters")),
        ("/api/datasets/build", {**_BUILD, "filters": {"k": [{"x": NUL}]}}, ("body", "filters")),
        ("/api/traces", make_payload(prompt=NUL), ("body", "prompt")),
        ("/api/traces", make_payload(meta={"k": [NUL]}), ("body", "meta")),
        ("/api/traces/batch", [make_payload(final_answer=NUL)], ("body", 0, "final_answer")),
    ],
)
def test_nul_in_any_body_string_is_a_422_naming_it_and_nothing_happens(
    client: Client, settings: Any, path: str, body: Any, loc: tuple[Any, ...]
) -> None:
    # Were a local run to start, it would run this interpreter's trainer module.
    settings.TUNIX_RUNTIME_MODULE = "json"
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, "-c", "raise SystemExit(3)"]
    dataset_with_traces(count=1)
    before = _counts()
    response = _post(client, path, body)
    assert response.status_code == 422
    assert loc in _locs(response)
    assert "NUL" in json.dumps(response.json())
    assert _counts() == before


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/tunix/runs", "status"),
        ("/api/tunix/runs", "dataset_key"),
        ("/api/tunix/runs", "mode"),
        ("/api/tunix/runs", "cursor"),
    ],
)
def test_nul_in_a_query_parameter_is_a_422_naming_it(client: Client, path: str, param: str) -> None:
    response = client.get(path, {param: NUL})
    assert response.status_code == 422
    assert _locs(response) == {("query", param)}


@pytest.mark.parametrize("path", ["/api/datasets/a%00b", "/api/datasets/a%00b/export.jsonl"])
def test_nul_in_a_dataset_key_path_is_a_422_naming_it(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    assert "dataset_key" in response.json()["detail"]


def test_nul_in_a_filter_of_the_build_page_is_a_form_error(client: Client) -> None:
    TraceFactory.create()
    form = {
        "dataset_name": "page",
        "dataset_version": "v1",
        "selection_strategy": "latest",
        "seed": "",
        "limit": "100",
    }
    for key, value in [("k\x00", "1"), ("k", "a\x00b"), ("k", '"a\\u0000b"')]:
        response = client.post(
            "/datasets/build/", {**form, "filter_key": key, "filter_value": value}
        )
        assert response.status_code == 422
        assert "must not contain NUL" in response.content.decode()
    assert Dataset.objects.count() == 0


# --- strict types ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/tunix/run", {**_RUN, "dry_run": 0}, "dry_run"),
        ("/api/tunix/run", {**_RUN, "dry_run": "false"}, "dry_run"),
        ("/api/tunix/run", {**_RUN, "num_epochs": True}, "num_epochs"),
        ("/api/tunix/run", {**_RUN, "batch_size": "8"}, "batch_size"),
        ("/api/tunix/run", {**_RUN, "learning_rate": True}, "learning_rate"),
        ("/api/tunix/sft/manifest", {**_MANIFEST, "max_seq_length": False}, "max_seq_length"),
        ("/api/tunix/sft/export", {"dataset_key": "demo-v1", "limit": True}, "limit"),
        ("/api/datasets/build", {**_BUILD, "seed": False}, "seed"),
        ("/api/datasets/build", {**_BUILD, "limit": "5"}, "limit"),
    ],
)
def test_a_boolean_is_not_an_integer_and_an_integer_is_not_a_boolean(
    client: Client, path: str, body: dict[str, Any], field: str
) -> None:
    dataset_with_traces(count=1)
    before = _counts()
    response = _post(client, path, body)
    assert response.status_code == 422
    assert _locs(response) == {("body", field)}
    assert _counts() == before


def test_a_trace_step_index_is_not_a_boolean(client: Client) -> None:
    payload = make_payload()
    payload["steps"][0]["i"] = False
    response = _post(client, "/api/traces", payload)
    assert response.status_code == 422
    assert ("body", "steps", 0, "i") in _locs(response)


def test_integral_numbers_are_integers_as_json_schema_says(client: Client) -> None:
    dataset_with_traces(count=1)
    response = _post(client, "/api/tunix/run", {**_RUN, "num_epochs": 2.0})
    assert response.status_code == 200
    assert response.json()["status"] == "completed"


# --- one renderer, honest schema --------------------------------------------------


def test_every_json_answer_has_the_one_content_type(client: Client) -> None:
    dataset_with_traces(count=1)
    trace = Trace.objects.first()
    assert trace is not None
    responses = [
        client.get("/api/health"),
        client.get("/api/traces"),
        client.get(f"/api/traces/{trace.id}"),
        client.get("/api/datasets"),
        client.get("/api/datasets/demo-v1"),
        client.get("/api/tunix/runs"),
        client.get("/api/tunix/status"),
        _post(client, "/api/tunix/run", _RUN),
        client.get(f"/api/tunix/runs/{uuid.uuid4()}"),
        client.get("/api/traces?limit=0"),
    ]
    assert {r["Content-Type"] for r in responses} == {CONTENT_TYPE}


def test_the_openapi_document_lists_every_error_an_operation_can_give(client: Client) -> None:
    spec = client.get("/api/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in codes, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= codes, (method, path)
    text = json.dumps(spec)
    assert '"ge":' not in text and '"le":' not in text  # bounds spelled minimum/maximum
    limit = next(
        p for p in spec["paths"]["/api/traces"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
