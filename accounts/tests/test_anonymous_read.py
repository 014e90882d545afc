"""TUNIX_ANONYMOUS_ACCESS=read: nobody may read everything and write nothing.

In the test client (settings) and once through a real gunicorn started with the
environment variable, as an operator would run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from accounts.tests.test_api_access import (
    AUTH_REQUIRED,
    BAD_TOKEN,
    POST_READS,
    READS,
    WRITES,
    Endpoint,
    Read,
    assert_unauthenticated,
    each,
    post,
    state,
)
from traces.tests.factories import make_payload
from tunix_registry.tests.servers import serve_gunicorn, server_env

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _anonymous_read(settings: Any) -> None:
    settings.TUNIX_ANONYMOUS_ACCESS = "read"


@pytest.mark.parametrize("read", READS, ids=[r.name for r in READS])
def test_anonymous_reads_are_answered(anon_client: Client, read: Read) -> None:
    assert anon_client.get(read.prepare(), **read.headers).status_code == 200


@each(POST_READS)
def test_anonymous_may_use_the_reads_sent_as_post(anon_client: Client, endpoint: Endpoint) -> None:
    url, body = endpoint.prepare()
    before = state()
    assert post(anon_client, url, body).status_code == endpoint.ok
    assert state() == before


@each(WRITES)
def test_anonymous_writes_are_401(anon_client: Client, endpoint: Endpoint) -> None:
    url, body = endpoint.prepare()
    before = state()
    assert_unauthenticated(post(anon_client, url, body), AUTH_REQUIRED)
    assert state() == before


def test_metrics_are_public_too(anon_client: Client) -> None:
    assert anon_client.get("/metrics").status_code == 200


def test_a_bad_token_is_still_401_on_a_read(anon_client: Client) -> None:
    response = anon_client.get("/api/traces", HTTP_AUTHORIZATION="Bearer tnx_" + "A" * 43)
    assert_unauthenticated(response, BAD_TOKEN)


# --- The environment variable, through a real server --------------------------------------


@pytest.fixture(scope="module")
def read_only_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = server_env(tmp_path_factory.mktemp("anonymous-read"), TUNIX_ANONYMOUS_ACCESS="read")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=Path(settings.BASE_DIR), env=env, check=True,
    )  # fmt: skip
    with serve_gunicorn(env) as served:
        yield served.base_url


def http(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_gunicorn_with_anonymous_read_answers_reads_and_refuses_writes(
    read_only_server: str,
) -> None:
    status, _, body = http(read_only_server + "/api/traces")
    assert status == 200
    assert json.loads(body)["data"] == []
    assert http(read_only_server + "/metrics")[0] == 200

    status, headers, body = http(
        read_only_server + "/api/traces", json.dumps(make_payload()).encode()
    )
    assert (status, json.loads(body)) == (401, AUTH_REQUIRED)
    assert headers["WWW-Authenticate"].startswith("Bearer")
    # Nothing was stored.
    assert json.loads(http(read_only_server + "/api/traces")[2])["data"] == []
