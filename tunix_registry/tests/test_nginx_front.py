"""nginx in front of gunicorn, as deployed with deploy/nginx/tunix-registry.conf.

The site file is rendered for loopback (its documented placeholders replaced:
ports, a self-signed certificate, gunicorn's address, a static root) and
included, as Debian's nginx.conf includes sites, by a main configuration whose
pid file, temp paths and logs are in a scratch directory. That nginx master runs
as the current user (`-p`, `-c`, `-g 'daemon off;'`), never as the system service,
in front of gunicorn with the production config (2 workers x 4 threads) on its
own migrated SQLite database.

nginx comes from scripts/ensure-nginx.sh (NGINX_PATH); without it the module is
skipped, unless CI=true, where that is a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tunix_registry.tests.servers import free_port, serve_gunicorn, server_env

SITE = Path(settings.BASE_DIR) / "deploy" / "nginx" / "tunix-registry.conf"
HASH = "0123456789ab"  # a manifest name's 12 hex digits

# The database migrated, a running run with one log line, and a launcher's API token
# (one Django start for all three).
PREPARE_DATABASE = """
from django.core.management import call_command
call_command("migrate", verbosity=0)
from accounts.services import token_issue, user_create
from runs.models import RunLogChunk, RunMode, RunStatus
from runs.tests.factories import TunixRunFactory
run = TunixRunFactory.create(status=RunStatus.RUNNING, mode=RunMode.LOCAL)
RunLogChunk.objects.create(run=run, seq=1, stream="stdout", chunk="step 1\\n")
print(run.run_id)
print(token_issue(user_create("uploader", password=None, role="launcher"), "nginx-test").secret)
"""


def nginx_executable() -> str | None:
    for candidate in (os.environ.get("NGINX_PATH"), "nginx", "/usr/sbin/nginx"):
        if candidate and (found := shutil.which(candidate)) and shutil.which("openssl"):
            return found
    return None


def nginx_version(executable: str) -> tuple[int, ...]:
    out = subprocess.run([executable, "-v"], capture_output=True, text=True, check=True)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out.stderr + out.stdout)
    assert match, out.stderr
    return tuple(int(part) for part in match.groups())


def replace(text: str, old: str, new: str, count: int = 1) -> str:
    """`old` replaced by `new`; the site file must hold it exactly `count` times."""
    assert text.count(old) == count, f"{SITE.name} no longer holds {old!r} {count} time(s)"
    return text.replace(old, new)


def render_site(
    *, https_port: int, http_port: int, upstream_port: int, cert: Path, key: Path, static: Path
) -> str:
    text = SITE.read_text()
    text = replace(text, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    text = replace(text, "    listen [::]:80;\n", "")
    text = replace(text, "    listen [::]:443 ssl http2;\n", "")
    text = replace(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = replace(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = replace(text, "server_name registry.example.com;", "server_name localhost;", 2)
    text = replace(text, "/etc/ssl/certs/tunix-registry.pem;", f"{cert};")
    text = replace(text, "/etc/ssl/private/tunix-registry.key;", f"{key};")
    return replace(text, "alias /srv/tunix/staticfiles/;", f"alias {static}/;")


def render_main(scratch: Path, site: Path, mime_types: Path) -> str:
    """Debian's nginx.conf, with every file it writes in `scratch`."""
    # Workers of a root master run as `user`; the scratch directory is root's own.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {scratch}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {scratch}/nginx.pid;\n"
        f"error_log {scratch}/error.log warn;\n"
        "events {\n    worker_connections 768;\n}\n"
        "http {\n"
        "    sendfile on;\n    tcp_nopush on;\n    types_hash_max_size 2048;\n"
        f"    include {mime_types};\n    default_type application/octet-stream;\n"
        "    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;\n    ssl_prefer_server_ciphers on;\n"
        f"    access_log {scratch}/access.log;\n    gzip on;\n{temp}"
        f"    include {site};\n"
        "}\n"
    )


def self_signed(scratch: Path) -> tuple[Path, Path]:
    cert, key = scratch / "cert.pem", scratch / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = log.read_text(errors="replace") if log.exists() else ""
                pytest.fail(f"{what} did not start:\n{output}")
            time.sleep(0.05)


@contextlib.contextmanager
def serve_nginx(executable: str, main: Path, scratch: Path, *ports: int) -> Iterator[None]:
    argv = [executable, "-p", f"{scratch}/", "-c", str(main), "-g", "daemon off;"]
    if nginx_version(executable) >= (1, 19, 5):
        # Errors before the configuration is read go to the scratch directory too.
        argv[1:1] = ["-e", str(scratch / "error.log")]
    with (scratch / "nginx.out").open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        for port in ports:
            wait_for_port(port, process, "nginx", scratch / "error.log")
        yield
    finally:
        if process.poll() is None:
            process.terminate()  # fast shutdown: open connections are closed
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def warm_up(port: int, access_log: Path, *, workers: int) -> None:
    """Until every worker has served a request: a worker loads the application and
    its URLs only then, and those seconds are not what the tests measure."""
    deadline = time.monotonic() + 60
    while True:
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
        try:
            for conn in conns:
                conn.request("GET", "/api/health?warm-up")
            for conn in conns:
                assert conn.getresponse().status == 200
        finally:
            for conn in conns:
                conn.close()
        lines = access_log.read_text().splitlines() if access_log.exists() else []
        if len({line.split()[0] for line in lines if "warm-up" in line}) >= workers:
            return
        assert time.monotonic() < deadline, f"not every worker answered:\n{lines}"


@dataclass(frozen=True)
class Front:
    https_port: int
    http_port: int
    gunicorn_port: int
    cert: Path
    static: Path
    access_log: Path  # gunicorn's: every request that reached it
    run_id: str
    token: str  # a launcher's: its uploads are read by Django, not refused unread


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    executable = nginx_executable()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "nginx or openssl is not installed; the nginx tests may not be skipped in CI"
            )
        pytest.skip("nginx or openssl is not installed (scripts/ensure-nginx.sh installs both)")
    scratch = tmp_path_factory.mktemp("nginx")
    access_log = scratch / "gunicorn-access.log"
    env = server_env(
        tmp_path_factory.mktemp("nginx-gunicorn-data"),
        TUNIX_ANONYMOUS_ACCESS="read",
        TUNIX_LOG_STREAM_SECONDS="30",
        GUNICORN_ACCESSLOG=str(access_log),
        # The access lines name the worker's pid (warm_up needs it).
        GUNICORN_CMD_ARGS="--access-logformat '%(p)s \"%(r)s\" %(s)s'",
        # Django trusts the proxy's X-Forwarded-Proto and sends plain HTTP to HTTPS.
        DJANGO_SECURE_PROXY_SSL_HEADER="true",
        DJANGO_SECURE_SSL_REDIRECT="true",
    )
    manage = [sys.executable, "manage.py"]
    root = Path(settings.BASE_DIR)
    created = subprocess.run(
        [*manage, "shell", "-c", PREPARE_DATABASE], cwd=root, env=env, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    run_id, token = created.stdout.strip().splitlines()[-2:]
    cert, key = self_signed(scratch)
    static = scratch / "static"
    (static / "css").mkdir(parents=True)
    (static / "css" / f"app.{HASH}.css").write_text("body { color: black; }\n")
    (static / "css" / "app.css").write_text("body { color: black; }\n")
    https_port, http_port = free_port(), free_port()
    # The package's mime.types lies beside its nginx.conf (/etc/nginx on Debian).
    built = subprocess.run([executable, "-V"], capture_output=True, text=True).stderr
    conf_path = re.search(r"--conf-path=(\S+)", built)
    conf_dir = Path(conf_path.group(1) if conf_path else "/etc/nginx/nginx.conf").parent
    with serve_gunicorn(env, workers=2) as gunicorn:
        warm_up(gunicorn.port, access_log, workers=2)
        site = scratch / "tunix-registry.conf"
        site.write_text(
            render_site(
                https_port=https_port, http_port=http_port, upstream_port=gunicorn.port,
                cert=cert, key=key, static=static,
            )
        )  # fmt: skip
        main = scratch / "nginx.conf"
        main.write_text(render_main(scratch, site, conf_dir / "mime.types"))
        with serve_nginx(executable, main, scratch, https_port, http_port):
            yield Front(
                https_port=https_port, http_port=http_port, gunicorn_port=gunicorn.port,
                cert=cert, static=static, access_log=access_log, run_id=run_id,
                token=token,
            )  # fmt: skip


def tls(front: Front, *, tls12: bool = False) -> ssl.SSLContext:
    """A client context that trusts the front's certificate (and only it)."""
    context = ssl.create_default_context(cafile=str(front.cert))
    if tls12:
        # No session tickets arrive after a TLS 1.2 handshake, so a socket with
        # something to read is one the server answered or closed.
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def connect(front: Front, *, timeout: float = 10.0) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        "127.0.0.1", front.https_port, timeout=timeout, context=tls(front)
    )


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def get(front: Front, path: str, **headers: str) -> Answer:
    """One request on a new TLS connection through nginx, timed from connect to last byte."""
    start = time.monotonic()
    conn = connect(front)
    try:
        conn.request("GET", path, headers={"Accept": "application/json", **headers})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return Answer(response.status, response.headers, body, time.monotonic() - start)


def seen_by_gunicorn(front: Front, marker: str) -> bool:
    """Whether a request carrying `marker` reached gunicorn (its access log is flushed
    per line; a later request with a marker of its own shows the log is up to date)."""
    after = uuid.uuid4().hex
    assert get(front, f"/api/health?after={after}").status == 200
    deadline = time.monotonic() + 10
    while after not in front.access_log.read_text():
        assert time.monotonic() < deadline, "gunicorn's access log shows no requests"
        time.sleep(0.05)
    return marker in front.access_log.read_text()


# --- Slow clients ---------------------------------------------------------------------


def slow_clients(
    port: int, context: ssl.SSLContext | None, token: str, count: int = 32
) -> tuple[list[socket.socket], list[socket.socket]]:
    """`count` connections whose header never ends, and `count` uploads by a launcher
    whose body has just begun (Django, once it has one, waits for the rest)."""

    def open_one(first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(first)
        return sock

    headers, bodies = [], []
    try:
        for _ in range(count):
            headers.append(open_one(b"GET /api/tunix/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "))
            bodies.append(
                open_one(
                    b"POST /api/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Authorization: Bearer %s\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
                    % token.encode()
                )
            )
    except BaseException:
        close_all(headers + bodies)
        raise
    return headers, bodies


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


@contextlib.contextmanager
def trickling(socks: list[socket.socket]) -> Iterator[None]:
    """A byte of body on every socket about every second, until the block ends."""
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b" ")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def still_waiting(sock: socket.socket) -> bool:
    """Open, and nothing answered: the server neither replied nor hung up."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def test_health_and_run_list_answer_within_a_second_while_64_slow_clients_hold_nginx(
    front: Front,
) -> None:
    headers, bodies = slow_clients(front.https_port, tls(front, tls12=True), front.token)
    try:
        with trickling(bodies):
            answers = []
            for _ in range(5):
                for path in ("/api/health", "/api/tunix/runs"):
                    answer = get(front, path)
                    assert answer.status == 200, answer.body
                    answers.append(answer)
                time.sleep(0.5)
            # The requirement: each answers within 1 s while the attack goes on.
            assert max(answer.seconds for answer in answers) < 1.0, [a.seconds for a in answers]
            runs = answers[1].json()
            assert [run["run_id"] for run in runs["data"]] == [front.run_id]
        # nginx held all 64 the whole time: none was answered or dropped.
        assert sum(still_waiting(sock) for sock in headers + bodies) == 64
    finally:
        close_all(headers + bodies)


# --- Bodies -----------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_by_nginx_before_gunicorn_sees_it(front: Front) -> None:
    marker = uuid.uuid4().hex
    conn = connect(front)
    try:
        # Only the header is sent: nginx answers from the Content-Length alone.
        conn.putrequest("POST", f"/api/traces?too-large={marker}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("Content-Type") == "application/json"
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        assert json.loads(response.read()) == {
            "detail": f"Payload size exceeds maximum of {limit} bytes"
        }
    finally:
        conn.close()
    assert not seen_by_gunicorn(front, marker)


def test_a_chunked_body_over_the_limit_is_refused_by_nginx_before_gunicorn_sees_it(
    front: Front,
) -> None:
    marker = uuid.uuid4().hex
    chunk = b" " * 1_048_576
    conn = connect(front, timeout=30)
    try:
        conn.putrequest("POST", f"/api/traces?chunked-too-large={marker}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            for _ in range(settings.DATA_UPLOAD_MAX_MEMORY_SIZE // len(chunk) + 1):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert not seen_by_gunicorn(front, marker)


def test_a_body_under_the_limit_reaches_django(front: Front) -> None:
    marker = uuid.uuid4().hex
    conn = connect(front)
    try:
        conn.request(
            "POST", f"/api/traces?small={marker}", body=b"{}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        response = conn.getresponse()
        # Anonymous access is read-only here: Django itself refused the write.
        assert response.status == 401
        assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
        response.read()
    finally:
        conn.close()
    assert seen_by_gunicorn(front, marker)


# --- Static files, redirects, headers ----------------------------------------------------


def test_static_files_come_from_nginx_with_long_caching_for_hashed_names(front: Front) -> None:
    marker = uuid.uuid4().hex
    hashed = get(front, f"/static/css/app.{HASH}.css?{marker}")
    assert hashed.status == 200
    assert hashed.body == b"body { color: black; }\n"
    assert hashed.headers["Content-Type"] == "text/css"
    assert hashed.headers["Cache-Control"] == "public, max-age=315360000, immutable"
    plain = get(front, f"/static/css/app.css?{marker}")
    assert (plain.status, plain.headers["Cache-Control"]) == (200, "public, max-age=60")
    assert get(front, f"/static/css/missing.css?{marker}").status == 404
    assert not seen_by_gunicorn(front, marker)


def test_plain_http_is_redirected_to_https_and_no_server_version_is_told(front: Front) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=10)
    try:
        conn.request("GET", "/api/tunix/runs?limit=5")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 301
    assert response.getheader("Location") == "https://127.0.0.1/api/tunix/runs?limit=5"
    assert response.getheader("Server") == "nginx"
    assert get(front, "/api/health").headers["Server"] == "nginx"


def test_django_sees_https_from_nginx_and_a_client_cannot_say_otherwise(front: Front) -> None:
    # With DJANGO_SECURE_SSL_REDIRECT, a request Django takes for plain HTTP is redirected:
    # through nginx it is HTTPS whatever X-Forwarded-Proto the client sent.
    assert get(front, "/api/tunix/runs").status == 200
    assert get(front, "/api/tunix/runs", **{"X-Forwarded-Proto": "http"}).status == 200
    direct = http.client.HTTPConnection("127.0.0.1", front.gunicorn_port, timeout=10)
    try:
        direct.request("GET", "/api/tunix/runs")
        response = direct.getresponse()
        response.read()
    finally:
        direct.close()
    assert response.status == 301
    assert response.getheader("Location", "").startswith("https://")


# --- The log stream -----------------------------------------------------------------------


def open_stream(front: Front) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
    conn = connect(front, timeout=10)
    conn.request(
        "GET", f"/api/tunix/runs/{front.run_id}/logs", headers={"Accept": "text/event-stream"}
    )
    return conn, conn.getresponse()


def next_event(response: http.client.HTTPResponse) -> dict[str, str]:
    """The next event of the stream, read as it arrives (a buffering proxy would hold it
    until the stream ends, 30 s later, past the connection's 10 s timeout)."""
    fields: dict[str, str] = {}
    while line := response.readline().decode():
        if line == "\n":
            return fields
        name, _, value = line.rstrip("\n").partition(": ")
        fields[name] = value
    raise AssertionError(f"the stream ended: {fields}")


def test_the_log_stream_passes_each_event_as_it_comes(front: Front) -> None:
    conn, response = open_stream(front)
    try:
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream"
        assert next_event(response) == {"retry": "1000"}
        log = next_event(response)
        assert (log["event"], log["id"]) == ("log", "1")
        assert json.loads(log["data"])["chunk"] == "step 1\n"
        # The run is still running: the stream stays open with a heartbeat.
        assert next_event(response)["event"] == "heartbeat"
        assert next_event(response)["event"] == "heartbeat"
    finally:
        conn.close()


def test_at_most_three_log_streams_at_once_and_every_worker_still_answers(front: Front) -> None:
    streams = []
    try:
        for _ in range(3):
            conn, response = open_stream(front)
            streams.append(conn)
            assert response.status == 200
            assert next_event(response) == {"retry": "1000"}
        conn, response = open_stream(front)
        streams.append(conn)
        assert response.status == 429
        assert json.loads(response.read()) == {"detail": "Too many requests: retry later"}
        # JSON polls of the same log are no streams, and are not counted. nginx passes
        # them on its idle or new connections to gunicorn, which reach either worker:
        # even a worker holding every stream keeps a thread for them.
        for _ in range(8):
            poll = get(front, f"/api/tunix/runs/{front.run_id}/logs")
            assert (poll.status, poll.json()["status"]) == (200, "running")
        assert get(front, "/api/health").status == 200
    finally:
        for conn in streams:
            conn.close()


# --- Without nginx ----------------------------------------------------------------------


def direct_health(port: int, timeout: float) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/health")
        return conn.getresponse().status
    except TimeoutError:
        return None
    finally:
        conn.close()


def test_the_same_slow_clients_straight_on_gunicorn_starve_it(front: Front) -> None:
    """Why nginx is in front: gunicorn's 8 threads are taken by the first 8 slow clients."""
    headers, bodies = slow_clients(front.gunicorn_port, None, front.token)
    try:
        with trickling(bodies):
            assert direct_health(front.gunicorn_port, timeout=2.0) is None
    finally:
        close_all(headers + bodies)
    # Once they are gone gunicorn serves again.
    deadline = time.monotonic() + 30
    while direct_health(front.gunicorn_port, timeout=5.0) != 200:
        assert time.monotonic() < deadline, "gunicorn did not recover"
