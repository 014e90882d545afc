"""A real chunked request (no Content-Length) through gunicorn is size-limited too.

Django alone never sees such a body (its request stream is limited to
Content-Length, i.e. 0), so this runs the project under gunicorn, as deployed,
and sends `Transfer-Encoding: chunked` with http.client. Neither request below
reaches the database.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from traces.tests.factories import make_payload
from tunix_registry.tests.servers import serve_gunicorn, server_env


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    # These tests are about reading a chunked body, not about access: anyone may write.
    env = server_env(
        tmp_path_factory.mktemp("gunicorn-data"),
        TRACE_MAX_BYTES="2048",
        TUNIX_ANONYMOUS_ACCESS="write",
    )
    with serve_gunicorn(env) as served:
        yield served.port


def post_chunked(port: int, body: bytes, chunk: int = 500) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    parts = (body[i : i + chunk] for i in range(0, len(body), chunk))
    conn.request(
        "POST",
        "/api/traces",
        body=parts,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    result = response.status, json.loads(response.read())
    conn.close()
    return result


def test_chunked_body_over_the_limit_is_413(gunicorn_port: int) -> None:
    body = json.dumps(make_payload(prompt="x" * 10_000)).encode()
    status, data = post_chunked(gunicorn_port, body)
    assert status == 413
    assert data == {"detail": "Payload size exceeds maximum of 2048 bytes"}


def test_chunked_body_under_the_limit_is_read_and_validated(gunicorn_port: int) -> None:
    status, data = post_chunked(gunicorn_port, b'{"trace_version": "1.0", "prompt": "p"}', 7)
    assert status == 422
    missing = {tuple(e["loc"]) for e in data["detail"]}  # type: ignore[attr-defined]
    assert ("body", "final_answer") in missing and ("body", "steps") in missing
