"""The fault tests' harness: real worker and gunicorn processes on a real PostgreSQL.

A `Harness` starts `manage.py run_worker` and gunicorn subprocesses, each with
its own data directory (as separate machines would have), all pointed at one
PostgreSQL database, and stops every process group it started when the test
ends. Its trainer is runs/tests/fault_trainer.py, found in /proc by its path in
the command line and its working directory under the test's directories, so the
tests (and the harness's own teardown) can say that no trainer outlived its
run. Nothing waits a fixed time: `wait_for` polls a condition up to a generous
deadline and, on failure, shows the output of every process it started.

The `fault_harness` fixture (runs/tests/conftest.py) gives a test a harness on
the test database that pytest-django created, which the subprocesses reach
through its name in DATABASE_URL; `PostgresCluster` is a throwaway cluster of
the test's own (scripts/pg.sh), for a test that stops and restarts PostgreSQL.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from django.conf import settings

FAULT_TRAINER = Path(__file__).with_name("fault_trainer.py")
PYTHON = sys.executable
T = TypeVar("T")

# Generous: the machine running the suite may be loaded; these bound a hang, not speed.
START_SECONDS = 60.0
STOP_SECONDS = 20.0


class NotYet(Exception):
    """What `wait_for` was waiting for has not happened (yet)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def database_url(settings_dict: dict[str, Any]) -> str:
    """The postgres:// URL of a Django PostgreSQL connection's settings (its NAME included)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


def base_env(*, data_dir: Path, database_url: str) -> dict[str, str]:
    """The environment of a subprocess of the registry: nothing of ours but the basics."""
    drop = ("DATABASE_", "DJANGO_", "TUNIX_", "GUNICORN_", "WEB_CONCURRENCY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        DJANGO_SETTINGS_MODULE="tunix_registry.settings_test",
        DJANGO_SECRET_KEY="fault-tests-key-not-secret",
        TUNIX_REGISTRY_DATA_DIR=str(data_dir),
        TUNIX_REGISTRY_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    if database_url:  # else the embedded SQLite database in the data directory
        env["DATABASE_URL"] = database_url
    return env


@dataclass
class Started:
    """A process the harness started (in its own session), with its output file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int = 6000) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-tail:]


@dataclass
class Web:
    """A gunicorn serving the registry, and a way to call it."""

    started: Started
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request on a fresh connection: (status, JSON body or text)."""
        conn = self.connection()
        try:
            return request(conn, method, path, body)
        finally:
            conn.close()


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """One request on `conn` (kept alive): (status, JSON body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    if (response.getheader("Content-Type") or "").startswith("application/json"):
        return response.status, json.loads(raw)
    return response.status, raw.decode("utf-8", errors="replace")


@dataclass
class Harness:
    """Starts workers and web servers for one test, and stops them all after it."""

    root: Path
    database_url: str
    started: list[Started] = field(default_factory=list)

    def data_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], data_dir: Path) -> Started:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                cwd=settings.BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Started(name=name, process=process, log=log, data_dir=data_dir)
        self.started.append(started)
        return started

    def worker_env(
        self,
        data_dir: Path,
        *,
        lease_seconds: int = 4,
        database_url: str | None = None,
        **extra: str,
    ) -> dict[str, str]:
        env = base_env(data_dir=data_dir, database_url=database_url or self.database_url)
        env.update(
            TUNIX_RUN_LEASE_SECONDS=str(lease_seconds),
            TUNIX_HEARTBEAT_SECONDS="0.5",
            TUNIX_CANCEL_GRACE_SECONDS="1",
            TUNIX_RUN_TIMEOUT_SECONDS="600",
            TUNIX_TRAINER_COMMAND=shlex.join([PYTHON, str(FAULT_TRAINER)]),
            # Any importable module: "the Tunix runtime is installed" on this worker.
            TUNIX_RUNTIME_MODULE="json",
            TUNIX_QUEUES="default,faults-idle",
        )
        env.update(extra)
        return env

    def worker(
        self,
        worker_id: str,
        *,
        queues: str = "default",
        lease_seconds: int = 4,
        database_url: str | None = None,
        data_dir: Path | None = None,
        **extra: str,
    ) -> Started:
        """`manage.py run_worker` as `worker_id`, in a data directory of its own by default."""
        data_dir = data_dir or self.data_dir(f"data-{worker_id}")
        env = self.worker_env(
            data_dir, lease_seconds=lease_seconds, database_url=database_url, **extra
        )
        argv = [PYTHON, "manage.py", "run_worker", "--queues", queues, "--worker-id", worker_id]
        return self._spawn(worker_id, argv, env, data_dir)

    def web(
        self, name: str = "web", *, workers: int = 1, data_dir: Path | None = None, **extra: str
    ) -> Web:
        """gunicorn with the production configuration, in a data directory of its own by default."""
        data_dir = data_dir or self.data_dir(f"data-{name}")
        env = base_env(data_dir=data_dir, database_url=self.database_url)
        env.update(
            TUNIX_QUEUES="default,faults-idle",
            TUNIX_REGISTRY_LOG_LEVEL="WARNING",
            # The web tier executes no local run: the async launches go to workers.
            TUNIX_RUNTIME_MODULE="json",
            # The fault tests are about crashes and restarts, not access: anyone may
            # launch and cancel (a test about access passes its own value in `extra`).
            TUNIX_ANONYMOUS_ACCESS="write",
        )
        env.update(extra)
        port = free_port()
        argv = [
            PYTHON, "-m", "gunicorn", "tunix_registry.wsgi:application",
            "--config", "python:tunix_registry.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            # Not the shared ~/.gunicorn/gunicorn.ctl of other servers on this machine.
            "--no-control-socket",
        ]  # fmt: skip
        web = Web(started=self._spawn(name, argv, env, data_dir), port=port)

        def healthy() -> bool:
            if not web.started.alive():
                raise AssertionError(f"{name} exited:\n{web.started.output()}")
            try:
                status, _ = web.call("GET", "/api/health")
            except OSError as exc:
                raise NotYet from exc
            return status == 200

        self.wait_for(healthy, timeout=START_SECONDS, what=f"{name} to answer /api/health")
        return web

    def wait_for(
        self,
        check: Callable[[], T],
        *,
        timeout: float,
        what: str,
        interval: float = 0.1,
    ) -> T:
        """Poll `check` until it returns a true value (returned) or raises nothing but NotYet.

        Fails after `timeout` seconds with the output of every process started.
        """
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            try:
                value = check()
            except NotYet as exc:
                last = exc
            else:
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n"
                    + self.diagnostics()
                )
            time.sleep(interval)

    def diagnostics(self) -> str:
        parts = []
        for started in self.started:
            state = "running" if started.alive() else f"exited {started.process.returncode}"
            parts.append(f"--- {started.name} (pid {started.pid}, {state}) ---\n{started.output()}")
        return "\n".join(parts)

    def kill9(self, started: Started) -> None:
        """SIGKILL the process alone (not its group), as a crash or the OOM killer would."""
        os.kill(started.pid, signal.SIGKILL)
        started.process.wait(timeout=STOP_SECONDS)

    def stop(self, started: Started, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal the process and wait for it; SIGKILL its group if it lingers. Its exit code."""
        if started.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(started.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.process.wait(timeout=STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(started.pid, signal.SIGKILL)
        return started.process.wait(timeout=STOP_SECONDS)

    def trainers(self) -> list[tuple[int, str, str]]:
        """Live fault-trainer processes working under this test's directories."""
        return trainer_processes(self.root)

    def wait_no_trainers(self, *, timeout: float = 30.0, under: Path | None = None) -> None:
        """Wait until no fault trainer (or its child) works under `under` (default: anywhere)."""
        root = under or self.root

        def none_left() -> bool:
            return not trainer_processes(root)

        self.wait_for(none_left, timeout=timeout, what=f"no trainer process under {root}")

    def close(self) -> list[tuple[int, str, str]]:
        """Stop everything started; kill and return the trainers that outlived it."""
        for started in reversed(self.started):
            self.stop(started)
        deadline = time.monotonic() + 15
        left = self.trainers()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.trainers()
        for pid, _, _ in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return left


def trainer_processes(root: Path) -> list[tuple[int, str, str]]:
    """(pid, command line, cwd) of live fault-trainer processes whose cwd is under `root`."""
    found = []
    root = root.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if str(FAULT_TRAINER) not in cmdline:
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rfind(")") + 2] in "ZX":
                continue
            cwd = (entry / "cwd").readlink()
        except OSError:
            continue
        if cwd.is_relative_to(root):
            found.append((int(entry.name), cmdline.strip(), str(cwd)))
    return found


# --- A PostgreSQL cluster of one test's own ---------------------------------------------


@dataclass
class PostgresCluster:
    """A throwaway cluster (scripts/pg.sh) that a test may stop and start again."""

    directory: Path
    url: str = ""

    def start(self) -> str:
        script = Path(settings.BASE_DIR) / "scripts" / "pg.sh"
        result = subprocess.run(
            [str(script), "start", str(self.directory)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"scripts/pg.sh start failed:\n{result.stderr}")
        self.url = result.stdout.strip().splitlines()[-1]
        return self.url

    def _pg_ctl(self, *args: str) -> None:
        bindirs = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
        )
        argv = [str(bindirs[-1] / "pg_ctl"), "-D", str(self.directory / "data"), *args]
        if os.getuid() == 0:  # the server refuses to run as root (as in scripts/pg.sh)
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, capture_output=True, timeout=120, check=True)

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are dropped)."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Start the stopped server again, on its port, with its data."""
        port = (self.directory / "port").read_text().strip()
        options = (
            f"-p {port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._pg_ctl(
            "-l", str(self.directory / "server.log"), "-w", "-t", "60", "-o", options, "start"
        )

    def destroy(self) -> None:
        script = Path(settings.BASE_DIR) / "scripts" / "pg.sh"
        subprocess.run([str(script), "stop", str(self.directory)], timeout=120, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster(directory: Path) -> Iterator[PostgresCluster]:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    cluster = PostgresCluster(directory=directory)
    try:
        cluster.start()
    except (RuntimeError, OSError) as exc:
        import pytest

        pytest.skip(f"no PostgreSQL cluster of its own: {exc}")
    try:
        yield cluster
    finally:
        cluster.destroy()


def manage(env: dict[str, str], *args: str) -> str:
    """Run a management command with `env`; its standard output."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout
