"""gunicorn settings for production; override any of them with GUNICORN_CMD_ARGS."""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Local runs execute inside the request (seed decision 6: synchronous for now),
# so a worker must be allowed to wait for the run's own timeout.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "0"))
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
