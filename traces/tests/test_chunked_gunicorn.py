"""A real chunked request (no Content-Length) through gunicorn is size-limited too.

Django alone never sees such a body (its request stream is limited to
Content-Length, i.e. 0), so this runs the project under gunicorn, as deployed,
and sends `Transfer-Encoding: chunked` with http.client. Neither request below
reaches the database.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from traces.tests.factories import make_payload


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("gunicorn-data")
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_DEBUG"}}
    env.update(
        DJANGO_SETTINGS_MODULE="tunix_registry.settings_test",
        TUNIX_REGISTRY_DATA_DIR=str(data_dir),
        TRACE_MAX_BYTES="2048",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "tunix_registry.wsgi:application",
         "--config", "python:tunix_registry.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"],
        cwd=Path(settings.BASE_DIR), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"gunicorn did not start:\n{out}")
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
