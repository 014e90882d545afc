"""A real gunicorn serving the project, for tests that need an HTTP server as deployed.

    with serve_gunicorn(env) as server:
        urllib.request.urlopen(server.base_url + "/api/health")

`env` is the server's whole environment (build it with `server_env`). The
server runs this interpreter's gunicorn from the project root with
tunix_registry/gunicorn_conf.py (gthread workers, as in production) unless
`config=None`, without a control socket (other servers on the machine share
the default one), and is ready when it accepts TCP connections. On exit it is
stopped with `stop_signal` and waited for; if it dies or does not start in
`start_timeout` seconds the test fails with the server's output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

PRODUCTION_CONFIG = "python:tunix_registry.gunicorn_conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(
    data_dir: Path, *, settings_module: str = "tunix_registry.settings_test", **extra: str
) -> dict[str, str]:
    """This process's environment for a server on its own data directory.

    Database and Django variables of this shell are dropped (the server uses the
    embedded SQLite database of `data_dir` unless `extra` names DATABASE_URL).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        TUNIX_REGISTRY_DATA_DIR=str(data_dir),
        TUNIX_REGISTRY_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class Served:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _output(log: Path) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-6000:]
    return ""


@contextlib.contextmanager
def serve_gunicorn(
    env: dict[str, str],
    *,
    workers: int = 1,
    config: str | None = PRODUCTION_CONFIG,
    stop_signal: signal.Signals = signal.SIGTERM,
    start_timeout: float = 30.0,
) -> Iterator[Served]:
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "tunix_registry.wsgi:application"]
    if config:
        argv += ["--config", config]
    argv += [
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning",
        "--no-control-socket",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tunix-gunicorn-") as scratch:
        log = Path(scratch) / "gunicorn.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, cwd=Path(settings.BASE_DIR), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"gunicorn did not start:\n{_output(log)}")
                    time.sleep(0.1)
            yield Served(port=port, process=process)
        finally:
            if process.poll() is None:
                process.send_signal(stop_signal)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
