"""Settings for Tunix Registry, read from environment variables.

Every variable is documented in docs/configuration.md. Safe defaults: DEBUG is
off, SQLite in the data directory when DATABASE_URL is absent, and no usable
secret key unless one is supplied (or DEBUG is on).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from tunix_registry.env import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

# Where the embedded database, materialised datasets, run directories and
# checkpoints live. Every path under it is built from validated keys and UUIDs.
DATA_DIR = Path(env_str("TUNIX_REGISTRY_DATA_DIR", str(BASE_DIR / "var"))).expanduser().resolve()

# DJANGO_SECRET_KEY, else the installation's key that `make run` generated in
# the data directory, so every `manage.py` command works in a fresh shell.
_secret = env_str("DJANGO_SECRET_KEY", "")
_secret_file = DATA_DIR / "secret_key"
if not _secret and _secret_file.is_file():
    try:
        _secret = _secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read {_secret_file}: {exc.strerror}") from None
if not _secret:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off, or the data directory "
            f"must hold a generated key in {_secret_file} (`make run` creates it)"
        )
    _secret = "insecure-development-only-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = _secret

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "ninja",
    "django_tasks",
    "django_tasks_db",
    # Content-Security-Policy and login limits (docs/decisions.md#security-headers,
    # docs/decisions.md#login-limits).
    "csp",
    "axes",
    "tunix_registry",
    "accounts",
    "traces",
    "datasets",
    "runs",
    "evaluations",
]

# ApiMiddleware comes first: it bounds and reads request bodies for /api/
# before anything else can, and turns any error there into JSON. The messages,
# X-Frame-Options and htmx ones are Django's own, skipped for /api/ (see
# tunix_registry/middleware.py).
MIDDLEWARE = [
    "tunix_registry.middleware.ApiMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # django-csp's, with the policy built once (it is the same for every response).
    "tunix_registry.middleware.StaticPolicyCSPMiddleware",
    # ETags of bodies marked for revalidation, and their 304s (tunix_registry/http_cache.py).
    "django.middleware.http.ConditionalGetMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Pages need a signed-in user; /api/ and /metrics answer 401 themselves.
    "accounts.middleware.LoginRequiredOutsideApiMiddleware",
    "tunix_registry.middleware.MessageOutsideApiMiddleware",
    "tunix_registry.middleware.XFrameOptionsOutsideApiMiddleware",
    "tunix_registry.middleware.HtmxOutsideApiMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its lock-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "tunix_registry.urls"
WSGI_APPLICATION = "tunix_registry.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

# --- Database -------------------------------------------------------------
_database_url = env_str("DATABASE_URL", "")
if _database_url:
    try:
        _db = dj_database_url.parse(
            _database_url,
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0, maximum=3600),
            conn_health_checks=True,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
    if _db.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            "DATABASE_URL must be a postgres:// or postgresql:// URL "
            "(leave it unset for the embedded SQLite database)"
        )
    _db.setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DATABASE_CONNECT_TIMEOUT", 5, minimum=1, maximum=300
    )
    # Server-side parameter binding lets psycopg prepare a statement once it has
    # run this many times on a connection: PostgreSQL then skips parsing and
    # planning the hot reads, which halves its CPU for them. 0 turns prepared
    # statements off (needed behind a transaction-mode PgBouncer).
    _prepare_threshold = env_int("DATABASE_PREPARE_THRESHOLD", 2, minimum=0, maximum=1000)
    if _prepare_threshold:
        _db["OPTIONS"].update(server_side_binding=True, prepare_threshold=_prepare_threshold)
    DATABASES = {"default": _db}
else:
    # The embedded database lives in the data directory; create it on first use.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "db.sqlite3"),
            # Concurrent use by several gunicorn workers: WAL lets readers run
            # beside a writer, IMMEDIATE takes the write lock up front (no
            # deadlocking lock upgrades) and the timeout waits for it.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA foreign_keys=ON;"
                    "PRAGMA busy_timeout=20000;"
                ),
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Static files (whitenoise) ------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Accounts and access (docs/decisions.md#accounts) -------------------------
# django-axes' backend first: it refuses a locked-out login before any password
# is checked (docs/decisions.md#login-limits).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "accounts.backends.RoleBackend"]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "runs:home"
LOGOUT_REDIRECT_URL = "accounts:login"
# What a request without credentials may do on the API: nothing (`none`), read
# (`read`), or everything a launcher may (`write`, as the original allowed).
TUNIX_ANONYMOUS_ACCESS = env_choice("TUNIX_ANONYMOUS_ACCESS", "none", ("none", "read", "write"))
# How often a token's last-used time is written (at most once per this many seconds).
TUNIX_TOKEN_TOUCH_SECONDS = env_int("TUNIX_TOKEN_TOUCH_SECONDS", 60, minimum=0, maximum=86400)
# How long a server process keeps a token it looked up (its user, their
# permissions) before asking the database again; 0 asks on every request
# (docs/decisions.md#api-tokens).
TUNIX_TOKEN_CACHE_SECONDS = env_int("TUNIX_TOKEN_CACHE_SECONDS", 2, minimum=0, maximum=300)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # accounts.services.token_user: one entry per token in use, in each process.
    "tokens": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "tokens",
        "OPTIONS": {"MAX_ENTRIES": 10000},
    },
}

# --- Security -------------------------------------------------------------
# HTTPS is off by default so that a checkout answers on plain HTTP; the
# production set (docs/operations.md#https-settings) passes `check --deploy`.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# A load balancer's health check may probe over plain HTTP: it is not redirected.
SECURE_REDIRECT_EXEMPT = [r"^api/health$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0, maximum=2 * 365 * 86400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Trust `X-Forwarded-Proto: https` as "this request came over HTTPS". Safe only
# behind a proxy that sets the header itself on every request (the shipped
# nginx configuration does); anyone reaching the server directly could send it.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False)
    else None
)
USE_X_FORWARDED_HOST = env_bool("DJANGO_USE_X_FORWARDED_HOST", False)
# How many proxies in front of the server append to X-Forwarded-For; the login
# limits count the address that the outermost one saw (docs/decisions.md#login-limits).
# 0 (the default without DJANGO_SECURE_PROXY_SSL_HEADER) trusts no such header.
TUNIX_TRUSTED_PROXY_COUNT = env_int(
    "TUNIX_TRUSTED_PROXY_COUNT", 1 if SECURE_PROXY_SSL_HEADER else 0, minimum=0, maximum=10
)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE
# Pages and htmx take the CSRF token from the page (templates/base.html, the
# admin's forms), never from the cookie, so no script needs to read it.
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# security.W002 looks for Django's XFrameOptionsMiddleware by name; the pages get
# the header from its subclass XFrameOptionsOutsideApiMiddleware (and the CSP's
# frame-ancestors 'none' says the same), which tunix_registry/tests/test_security_headers.py
# checks on the pages instead.
SILENCED_SYSTEM_CHECKS = ["security.W002"]

# Content-Security-Policy on every response (django-csp): only our own scripts,
# styles, images and fetches; no inline script or style, no eval, no framing
# (docs/decisions.md#security-headers).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
}

# Login attempts (django-axes, docs/decisions.md#login-limits): after
# TUNIX_LOGIN_FAILURE_LIMIT failures for one username, or from one address,
# logins for it are refused for TUNIX_LOGIN_COOLOFF_MINUTES.
AXES_FAILURE_LIMIT = env_int("TUNIX_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(
    minutes=env_int("TUNIX_LOGIN_COOLOFF_MINUTES", 15, minimum=1, maximum=7 * 24 * 60)
)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_CLIENT_IP_CALLABLE = "tunix_registry.client_ip.client_ip"
AXES_LOCKOUT_TEMPLATE = "accounts/lockout.html"
AXES_HTTP_RESPONSE_CODE = 429
# Lock-outs are still logged (warnings); not the start-up banner of every command.
AXES_VERBOSE = False

# --- Traces ----------------------------------------------------------------
TRACE_MAX_BYTES = env_int("TRACE_MAX_BYTES", 1_048_576, minimum=1024, maximum=10_485_760)
TRACE_BATCH_MAX_BYTES = env_int(
    "TRACE_BATCH_MAX_BYTES", 16 * 1_048_576, minimum=1024, maximum=256 * 1_048_576
)
# The largest request body anything reads. Under /api/ a larger one is a JSON
# 413 before it is read (tunix_registry.middleware.ApiMiddleware), chunked ones
# included; it stays above both trace limits so that their own 413s apply first.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(TRACE_MAX_BYTES, TRACE_BATCH_MAX_BYTES) + 1024

# --- Runs ------------------------------------------------------------------
# Wall-clock limit of a local run; on expiry the whole process group is killed.
TUNIX_RUN_TIMEOUT_SECONDS = env_int(
    "TUNIX_RUN_TIMEOUT_SECONDS", 3600, minimum=1, maximum=7 * 24 * 3600
)
# The command a local run executes, as an argument list; `--config <manifest>`
# is appended. Defaults to the project's own trainer in this interpreter.
_trainer = env_str("TUNIX_TRAINER_COMMAND", "")
if _trainer:
    import shlex

    TUNIX_TRAINER_COMMAND = shlex.split(_trainer)
else:
    TUNIX_TRAINER_COMMAND = [sys.executable, "-m", "runs.trainer"]
# The command an evaluation executes (as TUNIX_TRAINER_COMMAND, `--config <eval.yaml>`
# appended) and its wall-clock limit.
_engine = env_str("TUNIX_EVALUATION_COMMAND", "")
if _engine:
    import shlex

    TUNIX_EVALUATION_COMMAND = shlex.split(_engine)
else:
    TUNIX_EVALUATION_COMMAND = [sys.executable, "-m", "evaluations.engine"]
TUNIX_EVALUATION_TIMEOUT_SECONDS = env_int(
    "TUNIX_EVALUATION_TIMEOUT_SECONDS", 3600, minimum=1, maximum=7 * 24 * 3600
)
# The importable module whose presence means the Tunix runtime is installed.
TUNIX_RUNTIME_MODULE = env_str("TUNIX_RUNTIME_MODULE", "tunix")
# How long the write that records a finished run may wait for a database lock
# (PostgreSQL lock_timeout) before giving up; the client still gets the outcome.
TUNIX_RUN_DB_LOCK_TIMEOUT_MS = env_int(
    "TUNIX_RUN_DB_LOCK_TIMEOUT_MS", 5000, minimum=50, maximum=600_000
)
# Absolute directories, besides DATA_DIR/outputs, where a run may write checkpoints.
TUNIX_OUTPUT_ROOTS = [
    Path(p).expanduser().resolve() for p in env_list("TUNIX_OUTPUT_ROOTS", [], sep=":")
]

# Directories a local run may load a checkpoint from (`model_id` given as a
# path must lie under one of them): by default the data directory's models and
# the registry's own run outputs (to train on from a finished run's `model/`).
TUNIX_MODEL_ROOTS = [
    Path(p).expanduser().resolve()
    for p in env_list(
        "TUNIX_MODEL_ROOTS", [str(DATA_DIR / "models"), str(DATA_DIR / "outputs")], sep=":"
    )
]

# The memory (bytes) of the devices the workers train on, for the dry-run's
# preflight estimate; unset or 0: this machine's available memory.
TUNIX_DEVICE_MEMORY_BYTES: int | None = (
    env_int("TUNIX_DEVICE_MEMORY_BYTES", 0, minimum=0, maximum=1 << 50) or None
)

# --- Workers ---------------------------------------------------------------
# The queues runs may be sent to (a launch's `queue` must be one of them); workers
# name the ones they take (`manage.py run_worker --queues gpu`).
TUNIX_QUEUES = env_list("TUNIX_QUEUES", ["default"])
if not TUNIX_QUEUES or any(len(name) > 32 for name in TUNIX_QUEUES):
    # 32: the task table's queue_name column.
    raise ImproperlyConfigured("TUNIX_QUEUES must name queues of at most 32 characters")
TUNIX_DEFAULT_QUEUE = env_str("TUNIX_DEFAULT_QUEUE", TUNIX_QUEUES[0])
if TUNIX_DEFAULT_QUEUE not in TUNIX_QUEUES:
    raise ImproperlyConfigured("TUNIX_DEFAULT_QUEUE must be one of TUNIX_QUEUES")
# Background work goes through Django's tasks API; the database backend keeps the
# queue in the registry's own database, so every worker on every machine shares it.
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": TUNIX_QUEUES,
    }
}
# A running run whose heartbeat is older than this is failed by the reaper (its
# worker is gone); supervisors beat every TUNIX_HEARTBEAT_SECONDS.
TUNIX_RUN_LEASE_SECONDS = env_int("TUNIX_RUN_LEASE_SECONDS", 60, minimum=3, maximum=24 * 3600)
TUNIX_HEARTBEAT_SECONDS = env_float("TUNIX_HEARTBEAT_SECONDS", 2.0, minimum=0.1, maximum=600.0)
# Between SIGTERM and SIGKILL when a running run is cancelled.
TUNIX_CANCEL_GRACE_SECONDS = env_float(
    "TUNIX_CANCEL_GRACE_SECONDS", 30.0, minimum=0.0, maximum=3600.0
)
# The log output kept in the database per run: the head and the tail, a marker between.
TUNIX_RUN_LOG_MAX_BYTES = env_int(
    "TUNIX_RUN_LOG_MAX_BYTES", 50 * 1_048_576, minimum=4096, maximum=1 << 34
)
# How long one Server-Sent Events response of a run's log stays open; clients reconnect.
TUNIX_LOG_STREAM_SECONDS = env_float("TUNIX_LOG_STREAM_SECONDS", 30.0, minimum=1.0, maximum=3600.0)

# --- Logging ---------------------------------------------------------------
LOG_LEVEL = env_choice(
    "TUNIX_REGISTRY_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # django-axes logs every sign-in at INFO; its lock-outs are warnings.
        "axes": {"level": "WARNING"},
    },
}
