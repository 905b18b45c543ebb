"""Furrow settings. Everything comes from environment variables (README.md, Configuration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from flows.language.spec import DEFAULT_QUEUE
from orchestrator.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_str,
    secret_key,
    secrets_keys,
)
from steps.worker_rules import check_queue, cluster_name

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FURROW_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key(VAR_DIR)
# Fernet keys for `steps.Secret` values: the first encrypts, all decrypt (rotation).
FURROW_SECRETS_KEYS = secrets_keys(VAR_DIR)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "orchestrator.apps.FurrowAdminConfig",  # django.contrib.admin with our site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served from our static files, no CDN
    "django_q",
    "django_htmx",
    "template_partials",
    "channels",
    "flows",
    "runs",
    "steps",
]

MIDDLEWARE = [
    "orchestrator.middleware.RefuseNulInPath",
    "django.middleware.security.SecurityMiddleware",
    "orchestrator.middleware.LimitRequestBody",  # before anything that may read the body
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "orchestrator.urls"
ASGI_APPLICATION = "orchestrator.asgi.application"
WSGI_APPLICATION = "orchestrator.wsgi.application"

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
        },
    },
]

# orchestrator/asgi.py marks the web process before settings load.
DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL"),
        VAR_DIR / "furrow.sqlite3",
        web=env_bool("FURROW_WEB_PROCESS"),
        pool_size=env_int("FURROW_WEB_DB_POOL", 16),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "admin:login"

# A request body (workflow definition, run input, log lines) is refused above this size (413),
# before anything parses it (orchestrator.middleware.LimitRequestBody).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("FURROW_MAX_BODY_BYTES", 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Who may do what with which workflow: flows/access.py.
    "DEFAULT_PERMISSION_CLASSES": ["flows.api_access.WorkflowPermission"],
    "DEFAULT_FILTER_BACKENDS": ["flows.api_access.VisibleWorkflowsFilter"],
    "DEFAULT_PARSER_CLASSES": [
        "orchestrator.parsers.SafeJSONParser",
        "orchestrator.parsers.YAMLParser",
        "orchestrator.parsers.TextYAMLParser",
        "orchestrator.parsers.XYAMLParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "orchestrator.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "orchestrator.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Rates: FURROW["THROTTLE_USER"] and ["THROTTLE_ANON"], read per request (orchestrator/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "orchestrator.throttling.AnonThrottle",
        "orchestrator.throttling.UserThrottle",
    ],
    # Proxies in front of Furrow that append to X-Forwarded-For; 0 trusts no such header, so a
    # client cannot pick the address it is throttled as.
    "NUM_PROXIES": env_int("FURROW_NUM_PROXIES", 0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Furrow API",
    "DESCRIPTION": "Workflows, versions, runs, approvals, logs and health. README.md, API.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "orchestrator.schema.run_status_choices",
        "WorkerStateEnum": "steps.worker_rules.WorkerState",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "orchestrator.schema.add_unauthenticated_responses",
        "orchestrator.schema.add_limit_responses",
    ],
}

REDIS_URL = env_str("REDIS_URL")

# The cache holds the API's throttle counts. With Redis every web process shares them; the
# embedded default is one process, whose memory is enough.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "furrow",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Django-Q2 carries "run step X, attempt N" and nothing else: retries, backoff, timeouts and leases
# are the engine's (DESIGN.md, principle 1). Its own timeout only guards against a stuck worker,
# so it is longer than any step may run, and `retry` must exceed it.
_Q_TIMEOUT = env_int("FURROW_WORKER_TASK_TIMEOUT", 6 * 3600)
Q_CLUSTER = {
    "name": env_str("FURROW_CLUSTER_NAME", "furrow"),
    "workers": env_int("FURROW_WORKERS", 4),
    "timeout": _Q_TIMEOUT,
    "retry": _Q_TIMEOUT + 60,
    "max_attempts": 1,
    "save_limit": -1,  # results live in our own tables; saving successes costs a write per task
    "ack_failures": True,
    "catch_up": False,
    "poll": env_float("FURROW_BROKER_POLL", 0.05),
    "label": "Django Q2",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# The worker queue this process's cluster serves: `manage.py worker --queue X` sets it for the
# clusters it starts. Every cluster keeps the site's `name` (Django-Q2 signs payloads with it);
# the queue picks the broker list it reads (steps/worker_rules.py, cluster_name).


def _worker_queue(value: str) -> str:
    try:
        return check_queue(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"FURROW_WORKER_QUEUE: {exc}") from None


WORKER_QUEUE = _worker_queue(env_str("FURROW_WORKER_QUEUE", DEFAULT_QUEUE))
Q_CLUSTER["cluster_name"] = cluster_name(WORKER_QUEUE, Q_CLUSTER["name"])

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

FURROW = {
    # Step timeout when neither the step nor the workflow's defaults set one.
    "DEFAULT_STEP_TIMEOUT": env_float("FURROW_DEFAULT_STEP_TIMEOUT", 3600.0),
    # A claimed step whose worker stops answering is declared lost this long after its timeout.
    "LEASE_GRACE": env_float("FURROW_LEASE_GRACE", 30.0),
    # A running attempt's worker renews its lease every HEARTBEAT seconds; a lease not renewed for
    # LEASE_SECONDS (a killed worker) is reaped and the attempt recorded as lost.
    "HEARTBEAT": env_float("FURROW_HEARTBEAT", 1.0),
    "LEASE_SECONDS": env_float("FURROW_LEASE_SECONDS", 15.0),
    # How often the tick loop promotes due retries and sweeps stale work.
    "TICK_INTERVAL": env_float("FURROW_TICK_INTERVAL", 0.2),
    # A ready step with no worker after this long is dispatched again (a lost queue message).
    "REDISPATCH_AFTER": env_float("FURROW_REDISPATCH_AFTER", 30.0),
    # A worker that finishes a step with exactly one successor ready runs it straight away,
    # for at most this long, before handing work back to the broker.
    "INLINE_BUDGET": env_float("FURROW_INLINE_BUDGET", 5.0),
    # Worker registry (steps/workers.py): the queue this process serves, the registered cluster
    # it belongs to (set by `manage.py worker` and `serve` for their clusters), how often a
    # cluster heartbeats, and after how long without one it shows as stale, then gone.
    "WORKER_QUEUE": WORKER_QUEUE,
    "WORKER_NAME": env_str("FURROW_WORKER_NAME"),
    "WORKER_HEARTBEAT": env_float("FURROW_WORKER_HEARTBEAT", 5.0),
    "WORKER_STALE_AFTER": env_float("FURROW_WORKER_STALE_AFTER", 30.0),
    "WORKER_GONE_AFTER": env_float("FURROW_WORKER_GONE_AFTER", 300.0),
    "MAX_DEFINITION_BYTES": DATA_UPLOAD_MAX_MEMORY_SIZE,
    "LOG_BATCH_LINES": env_int("FURROW_LOG_BATCH_LINES", 200),
    # A burst is written in transactions of at most this many lines (never fewer than a batch).
    "LOG_TRANSACTION_LINES": env_int("FURROW_LOG_TRANSACTION_LINES", 2000),
    "LOG_FLUSH_SECONDS": env_float("FURROW_LOG_FLUSH_SECONDS", 0.1),
    # Lines one POST /api/v1/runs/{id}/logs may bring.
    "MAX_INGEST_LINES": env_int("FURROW_MAX_INGEST_LINES", 10_000),
    # How often a stream (SSE, WebSocket) looks for new rows while it has nothing to send.
    "STREAM_POLL": env_float("FURROW_STREAM_POLL", 0.05),
    # On PostgreSQL a committed row wakes its streams (runs/wakeups.py); an idle stream then looks
    # on its own only this often.
    "STREAM_IDLE_POLL": env_float("FURROW_STREAM_IDLE_POLL", 1.0),
    # PostgreSQL: how long a stream waits for an id that is missing below newer rows (a late
    # commit) before taking it for a rollback; a provable rollback is passed at once (runs/frontier.py).
    "STREAM_GAP_GRACE": env_float("FURROW_STREAM_GAP_GRACE", 2.0),
    # Where services reach this Furrow for callbacks (http_async steps).
    "PUBLIC_URL": env_str("FURROW_PUBLIC_URL", "http://127.0.0.1:8000"),
    # When set, GET /metrics needs `Authorization: Bearer <token>`; empty: open, like /health.
    "METRICS_TOKEN": env_str("FURROW_METRICS_TOKEN"),
    # API requests per user (token or session) and per address without a user (callbacks,
    # webhooks per slug too): "N/s", "N/min", "N/hour", "N/day", or "off". Far above what scripts
    # and the admin do; they stop a client caught in a loop (orchestrator/throttling.py).
    "THROTTLE_USER": env_rate("FURROW_THROTTLE_USER", "3000/min"),
    "THROTTLE_ANON": env_rate("FURROW_THROTTLE_ANON", "1200/min"),
}


# Connectors, circuit breakers, rate limits and health checks (README.md, "Connectors, ...").
def _json_setting(name: str, kind: type = dict) -> Any:
    """A JSON object (or, with `kind=list`, array) from the variable `name`, or from the JSON or
    YAML file it names."""
    import json

    import yaml
    from django.core.exceptions import ImproperlyConfigured

    raw = env_str(name).strip()
    if not raw:
        return kind()
    try:
        if raw.startswith(("{", "[")):
            value = json.loads(raw)
        else:
            text = Path(raw).read_text(encoding="utf-8")
            value = yaml.safe_load(text) if raw.endswith((".yaml", ".yml")) else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    if not isinstance(value, kind):
        what = "a JSON array" if kind is list else "a JSON object"
        raise ImproperlyConfigured(f"{name} must hold {what}")
    return value


FURROW |= {
    # Named HTTP services (steps.connectors), merged over the presets; admin rows win over both.
    "CONNECTORS": _json_setting("FURROW_CONNECTORS"),
    "PRESET_URLS": {
        "ai_router": env_str("FURROW_AI_ROUTER_URL", "http://127.0.0.1:8080"),
        "web": env_str("FURROW_WEB_URL", "http://127.0.0.1:8081"),
        "memarch": env_str("FURROW_MEMARCH_URL", "http://127.0.0.1:8082"),
        "scm": env_str("FURROW_SCM_URL", "http://127.0.0.1:8083"),
    },
    # Other processes see an admin edit of a connector after at most this long.
    "CONNECTOR_CACHE_SECONDS": env_float("FURROW_CONNECTOR_CACHE_SECONDS", 5.0),
    # Requests per second by step type or target: {"http": 20, "connector:web": 2}.
    "RATE_LIMITS": _json_setting("FURROW_RATE_LIMITS"),
    "HEALTH_INTERVAL": env_float("FURROW_HEALTH_INTERVAL", 30.0),
    "HEALTH_TIMEOUT": env_float("FURROW_HEALTH_TIMEOUT", 3.0),
}

# Outbound event hooks (runs.hooks; README.md, "Outbound event hooks").
FURROW |= {
    # [{name, url, event_types, workflows, secret, ...}], synced into HookEndpoint rows when the
    # tick loop starts; an admin row of the same name wins.
    "HOOKS": _json_setting("FURROW_HOOKS", list),
    # Seconds the hook thread of the tick loop sleeps when it found nothing to do.
    "HOOK_POLL": env_float("FURROW_HOOK_POLL", 0.5),
    # Deliveries sent at once per pass (at most 4 of them to one endpoint).
    "HOOK_CONCURRENCY": env_int("FURROW_HOOK_CONCURRENCY", 16),
    # Retries wait 1 s, 2 s, 4 s ... up to this many seconds.
    "HOOK_MAX_BACKOFF": env_float("FURROW_HOOK_MAX_BACKOFF", 300.0),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django-q": {"level": env_str("FURROW_Q_LOG_LEVEL", "WARNING")},
    },
}
