"""Real chunked requests (Transfer-Encoding: chunked, no Content-Length) through gunicorn.

Django alone reads such a body as empty; ApiMiddleware reads it for every
endpoint under /api/. This serves the project under gunicorn as deployed, on
its own migrated SQLite database, and sends each POST endpoint a chunked body
with http.client: every one must see the body, and an oversized one is a JSON
413.
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
from typing import Any

import pytest
from django.conf import settings

from traces.tests.factories import make_payload


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("gunicorn-api-data")
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_DEBUG"}}
    env.update(
        DJANGO_SETTINGS_MODULE="tunix_registry.settings_test",
        TUNIX_REGISTRY_DATA_DIR=str(data_dir),
        TUNIX_RUNTIME_MODULE="tunix_registry_no_such_runtime_module",
        TRACE_MAX_BYTES="4096",
        TRACE_BATCH_MAX_BYTES="65536",
    )
    base = Path(settings.BASE_DIR)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=base, env=env, check=True,
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "tunix_registry.wsgi:application",
         "--config", "python:tunix_registry.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"],
        cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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


def post_chunked(port: int, path: str, body: bytes, chunk: int = 100) -> tuple[int, str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    parts = (body[i : i + chunk] for i in range(0, len(body), chunk))
    conn.request(
        "POST",
        path,
        body=parts,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    raw = response.read()
    content_type = response.getheader("Content-Type") or ""
    conn.close()
    data = json.loads(raw) if content_type.startswith("application/json") else raw
    return response.status, content_type, data


def test_every_post_endpoint_reads_a_chunked_body(server: int) -> None:
    def post(path: str, body: Any) -> tuple[int, Any]:
        status, _, data = post_chunked(server, path, json.dumps(body).encode())
        return status, data

    status, created = post("/api/traces", make_payload(meta={"src": "chunked"}))
    assert status == 201, created
    status, batch = post("/api/traces/batch", [make_payload(meta={"src": "chunked"})] * 2)
    assert (status, batch["created_count"]) == (201, 2)
    status, score = post(f"/api/traces/{created['id']}/score", {"criteria": "baseline"})
    assert (status, score["trace_id"]) == (201, created["id"])
    build = {"dataset_name": "chunked", "dataset_version": "v1", "filters": {"src": "chunked"}}
    status, dataset = post("/api/datasets/build", build)
    assert (status, dataset["trace_count"]) == (201, 3)
    status, run = post("/api/tunix/run", {"dataset_key": "chunked-v1", "model_id": "tiny-qwen3"})
    assert (status, run["status"], run["mode"]) == (200, "completed", "dry-run")
    request = {"dataset_key": "chunked-v1", "model_id": "m", "output_dir": "out"}
    status, manifest = post("/api/tunix/sft/manifest", request)
    assert (status, manifest["dataset_key"]) == (201, "chunked-v1")
    status, content_type, lines = post_chunked(
        server, "/api/tunix/sft/export", json.dumps({"dataset_key": "chunked-v1"}).encode()
    )
    assert (status, content_type) == (200, "application/x-ndjson")
    assert len(lines.splitlines()) == 3


@pytest.mark.parametrize(
    "path",
    [
        "/api/traces/batch",
        "/api/datasets/build",
        "/api/tunix/run",
        "/api/tunix/sft/export",
        "/api/tunix/sft/manifest",
    ],
)
def test_a_chunked_body_above_the_limit_is_a_json_413(server: int, path: str) -> None:
    # The server's limit is TRACE_BATCH_MAX_BYTES + 1024 (settings).
    limit = 65536 + 1024
    status, content_type, data = post_chunked(server, path, b" " * (limit + 1), chunk=8192)
    assert (status, content_type) == (413, "application/json; charset=utf-8")
    assert data == {"detail": f"Payload size exceeds maximum of {limit} bytes"}
