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
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from traces.tests.factories import make_payload
from tunix_registry.tests.servers import serve_gunicorn, server_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    env = server_env(
        tmp_path_factory.mktemp("gunicorn-api-data"),
        TUNIX_RUNTIME_MODULE="tunix_registry_no_such_runtime_module",
        TRACE_MAX_BYTES="4096",
        TRACE_BATCH_MAX_BYTES="65536",
        # These tests are about reading chunked bodies, not about access: anyone may write.
        TUNIX_ANONYMOUS_ACCESS="write",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=Path(settings.BASE_DIR), env=env, check=True,
    )  # fmt: skip
    with serve_gunicorn(env) as served:
        yield served.port


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
