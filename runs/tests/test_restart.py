"""Runs survive a server restart: a real gunicorn on a file SQLite database, stopped and started."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tunix_registry.tests.servers import serve_gunicorn, server_env


def restart_env(data_dir: Path) -> dict[str, str]:
    return server_env(
        data_dir,
        settings_module="tunix_registry.settings",
        DJANGO_SECRET_KEY="restart-test-key-not-secret",
        TUNIX_REGISTRY_LOG_LEVEL="WARNING",
        WEB_CONCURRENCY="1",
        # The test is about restarts, not access: anyone may launch on this server.
        TUNIX_ANONYMOUS_ACCESS="write",
    )


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    # Plain http to the server this test started.
    request = urllib.request.Request(  # noqa: S310
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


@contextmanager
def server(data_dir: Path) -> Iterator[str]:
    # gunicorn's quick shutdown (SIGQUIT): the runs must not depend on a graceful one.
    with serve_gunicorn(restart_env(data_dir), config=None, stop_signal=signal.SIGQUIT) as served:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(served.base_url, "GET", "/api/health")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not answer") from None
                time.sleep(0.1)
        yield served.base_url


def manage(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=restart_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_runs_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "server-data"
    data_dir.mkdir()
    manage(data_dir, "migrate", "--noinput", "-v", "0")
    # A production server refuses to start without collected static files.
    manage(data_dir, "collectstatic", "--noinput", "-v", "0")

    with server(data_dir) as base:
        made = [
            call(base, "POST", "/api/tunix/run", {"dataset_key": f"gone-v{i}", "model_id": "m"})
            for i in range(2)
        ]
        assert [m["status"] for m in made] == ["failed", "failed"]
        before = call(base, "GET", "/api/tunix/runs")

    assert "0 run(s) reaped" in manage(data_dir, "reap_runs")

    with server(data_dir) as base:
        after = call(base, "GET", "/api/tunix/runs")
        assert after == before
        assert [d["run_id"] for d in after["data"]] == [m["run_id"] for m in reversed(made)]
        for original in made:
            assert call(base, "GET", f"/api/tunix/runs/{original['run_id']}") == original
