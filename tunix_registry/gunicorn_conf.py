"""gunicorn settings for production; override any of them with GUNICORN_CMD_ARGS.

The benchmarks in docs/benchmarks.md serve the project with exactly this file.
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threaded workers: a local run executes inside its request
# (docs/decisions.md#synchronous-local-runs) and occupies one thread, not a
# whole worker, while the other threads keep serving pages and API reads.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A worker must be allowed to wait for a local run's own timeout.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "0"))
graceful_timeout = 30
# Clients that poll (API clients, the pages' htmx status updates) keep their
# connection open instead of paying a TCP handshake per request.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "30"))
# One listening socket per worker: the kernel spreads new connections over the
# workers evenly, so long-lived keep-alive connections do not pile up on
# whichever worker happened to accept first.
reuse_port = True
# The longest request line gunicorn allows (nginx in front allows 8 KB too): a query
# at its declared maximum length (a list of compared run ids, say) may take three or
# more bytes per character once percent-encoded, and must reach the API to be
# answered with its 422 rather than a 414 from the server.
limit_request_line = 8190
# Access lines are off unless asked for (GUNICORN_ACCESSLOG=- for standard
# output, or a file): formatting them costs about a quarter of the hot reads'
# throughput on a 2-core machine, and a reverse proxy in front usually logs them.
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
