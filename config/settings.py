"""DPP settings: one module, driven by the environment only (SPEC §7).

The defaults give the embedded local mode (SQLite, kombu's filesystem broker, result files under `var/`,
rate limits off). Production differs only by environment: `DATABASE_URL`, `REDIS_URL`, `CELERY_BROKER_URL`,
`DPP_STORAGE=s3`, `AWS_*`, secrets. `DPP_ENV=production` makes the secrets mandatory.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_choice, env_int, env_list, env_str
from dpp.sentry import sentry_init

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("DPP_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DPP_ENV = env_choice("DPP_ENV", "local", ("local", "production"))
PRODUCTION = DPP_ENV == "production"


def _secret(name: str, local_default: str) -> str:
    value = env_str(name)
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) is required when DPP_ENV=production")
    return local_default


SECRET_KEY = _secret("DJANGO_SECRET_KEY", "dpp-local-insecure-secret-key-change-me-in-production-0123456789")
# HMAC key for API key hashes; separate from SECRET_KEY so that rotating one does not lock out every agent.
DPP_API_KEY_PEPPER = _secret("DPP_API_KEY_PEPPER", "dpp-local-insecure-api-key-pepper")

DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "" if PRODUCTION else "*")
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is required when DPP_ENV=production")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DPP_BEHIND_PROXY", default=False) else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PRODUCTION

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "rangefilter",  # the admin's date-range filter (dpp.admin_tools.FinanceDateFilter)
    "dpp",
    "billing",
    "packs",
    "runs",
    "reaper",
]

MIDDLEWARE = [
    "dpp.http.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",  # high: every answer below gets the header
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "dpp.http.middleware.BodyLimitMiddleware",  # after the three above, so that a 413 carries their headers
    "dpp.http.middleware.SessionMiddleware",  # Django's, skipped on API paths (as the next three)
    "django.middleware.common.CommonMiddleware",
    "dpp.http.middleware.CsrfViewMiddleware",
    "dpp.http.middleware.AuthenticationMiddleware",
    "dpp.http.middleware.MessageMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- database -------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'dpp.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DPP_DB_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "config.adapters.postgresql"  # Django's, with a health check without a round trip
    # psycopg prepares a statement on its Nth execution on a connection. It applies only to the hot paths'
    # server-binding cursor (config.adapters.django_hot.hot_cursor); the ORM binds on the client and never
    # prepares. 0: never (PgBouncer in transaction mode before 1.21, or without max_prepared_statements).
    _prepare_after = env_int("DPP_DB_PREPARE_THRESHOLD", 5, minimum=0)
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = _prepare_after or None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # API, worker and beat share the file: WAL lets readers run beside the writer, IMMEDIATE takes the write
    # lock at BEGIN (no lock upgrade deadlock), busy_timeout waits instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- storage of results (SPEC §3.2 step 5) ---------------------------------------------------------------
DPP_STORAGE = env_choice("DPP_STORAGE", "local", ("local", "s3"))
DPP_LOCAL_STORAGE_DIR = Path(env_str("DPP_LOCAL_STORAGE_DIR", str(VAR_DIR / "results"))).resolve()
DPP_RESULT_RETENTION_DAYS = env_int("DPP_RESULT_RETENTION_DAYS", 30, minimum=1)
AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME", env_str("AWS_DEFAULT_REGION", "us-east-1"))
if DPP_STORAGE == "s3":
    _bucket = env_str("AWS_STORAGE_BUCKET_NAME")
    if not _bucket:
        raise ImproperlyConfigured("AWS_STORAGE_BUCKET_NAME is required when DPP_STORAGE=s3")
    _sse = env_str("AWS_S3_SSE", "AES256")
    _object_parameters = {"ServerSideEncryption": _sse, "ContentType": "application/json"}
    if env_str("AWS_S3_SSE_KMS_KEY_ID"):
        _object_parameters["SSEKMSKeyId"] = env_str("AWS_S3_SSE_KMS_KEY_ID")
    from botocore.config import Config as _BotoConfig

    # Bounded waits: botocore's defaults (60 s to connect, 60 s to read, 5 attempts) would hold an API request (a
    # gunicorn thread) or a reaper pass for minutes on an S3 that does not answer; with these, at most about
    # attempts × (connect + read) = 26 s. With a client config of its own, django-storages no longer applies its
    # addressing_style and signature_version options: they are set here.
    _s3_client_config = _BotoConfig(
        s3={"addressing_style": env_str("AWS_S3_ADDRESSING_STYLE", "auto")},
        signature_version="s3v4",
        connect_timeout=env_int("AWS_S3_CONNECT_TIMEOUT", 3, minimum=1),
        read_timeout=env_int("AWS_S3_READ_TIMEOUT", 10, minimum=1),
        # total_max_attempts counts the first try (botocore's max_attempts would count the retries only)
        retries={"total_max_attempts": env_int("AWS_S3_MAX_ATTEMPTS", 2, minimum=1), "mode": "standard"},
    )
    _results_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "client_config": _s3_client_config,
            "bucket_name": _bucket,
            "location": env_str("AWS_LOCATION", ""),
            "region_name": AWS_S3_REGION_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "signature_version": "s3v4",
            "addressing_style": env_str("AWS_S3_ADDRESSING_STYLE", "auto"),
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 900, minimum=1),
            "file_overwrite": True,
            "object_parameters": _object_parameters,
        },
    }
else:
    _results_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DPP_LOCAL_STORAGE_DIR), "file_permissions_mode": 0o640, "allow_overwrite": True},
    }
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR)},
    },
    "results": _results_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- redis (rate limits) --------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")

# --- celery ---------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
DPP_BROKER_DIR = Path(env_str("DPP_BROKER_DIR", str(VAR_DIR / "broker"))).resolve()
DPP_TASK_QUEUE = env_str("DPP_TASK_QUEUE", "dpp-runs")
# Webhook deliveries have their own queue (and worker): a slow receiver never delays a run (SPEC §10).
DPP_WEBHOOK_QUEUE = env_str("DPP_WEBHOOK_QUEUE", f"{DPP_TASK_QUEUE}-webhooks")
DPP_SQS_QUEUE_PREFIX = env_str("DPP_SQS_QUEUE_PREFIX", "")
DPP_SQS_REGION = env_str("DPP_SQS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
DPP_SQS_IS_SECURE = env_bool("DPP_SQS_IS_SECURE", default=True)
DPP_BROKER_POLLING_INTERVAL = env_int("DPP_BROKER_POLLING_INTERVAL_MS", 50, minimum=10) / 1000

# --- DPP timing (SPEC §7) -------------------------------------------------------------------------------
DPP_LEASE_S = env_int("DPP_LEASE_S", 60, minimum=3)
DPP_REAPER_INTERVAL_S = env_int("DPP_REAPER_INTERVAL_S", 30, minimum=1)
DPP_FINALIZE_STALE_S = env_int("DPP_FINALIZE_STALE_S", 120, minimum=1)
DPP_REDRIVE_AFTER_S = env_int("DPP_REDRIVE_AFTER_S", 60, minimum=1)
DPP_QUEUE_TTL_S = env_int("DPP_QUEUE_TTL_S", 3600, minimum=1)
DPP_REAPER_BATCH = env_int("DPP_REAPER_BATCH", 500, minimum=1)
# Over how many of the 16 shard accounts of revenue and funding new movements spread (SPEC §12); 1: one hot row.
DPP_PLATFORM_SHARDS = env_int("DPP_PLATFORM_SHARDS", 16, minimum=1)
DPP_LEDGER_AUDIT_INTERVAL_S = env_int("DPP_LEDGER_AUDIT_INTERVAL_S", 3600, minimum=0)  # 0: never scheduled
# A celery worker serves its Prometheus metrics on this port (0: not served; config/celery.py).
DPP_WORKER_METRICS_PORT = env_int("DPP_WORKER_METRICS_PORT", 0, minimum=0)
# How long an MCP tool call without the tasks extension waits for its run (SPEC §11), at most its timebox.
DPP_MCP_WAIT_S = env_int("DPP_MCP_WAIT_S", 25, minimum=0)

# --- url pack -------------------------------------------------------------------------------------------
DPP_URL_ALLOW_HTTP = env_bool("DPP_URL_ALLOW_HTTP", default=False)
DPP_URL_CA_FILE = env_str("DPP_URL_CA_FILE") or None
try:
    DPP_URL_EXTRA_ALLOWED_NETWORKS = tuple(
        ipaddress.ip_network(net, strict=False) for net in env_list("DPP_URL_EXTRA_ALLOWED_NETWORKS")
    )
except ValueError as exc:
    raise ImproperlyConfigured(f"DPP_URL_EXTRA_ALLOWED_NETWORKS: {exc}") from exc
if PRODUCTION and any(net.overlaps(ipaddress.ip_network("127.0.0.0/8")) for net in DPP_URL_EXTRA_ALLOWED_NETWORKS):
    raise ImproperlyConfigured("DPP_URL_EXTRA_ALLOWED_NETWORKS must never allow loopback in production")

# --- faults for drills (never on by default) ------------------------------------------------------------
DPP_ENABLE_FAULTS = env_bool("DPP_ENABLE_FAULTS", default=False)
DPP_FAULT_POINT = env_choice("DPP_FAULT_POINT", "", ("", "after_lease", "after_claim", "after_upload", "before_commit"))

# --- HTTP -----------------------------------------------------------------------------------------------
DPP_MAX_BODY_BYTES = 256 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = DPP_MAX_BODY_BYTES
CORS_ALLOWED_ORIGINS = env_list("DPP_CORS_ORIGINS")
CORS_URLS_REGEX = r"^/(v1|health|readyz)(/.*)?$"
# What the API serves: corsheaders' default also advertises DELETE, PATCH and PUT, which no endpoint has.
CORS_ALLOW_METHODS = ("GET", "HEAD", "POST", "OPTIONS")
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "if-match",  # conditional GETs of a run or a result (SPEC §4 Caching)
    "if-none-match",
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-trace-id",
)
CORS_EXPOSE_HEADERS = (
    "Location",
    "Idempotent-Replayed",
    "X-DPP-Cost-Reserved",
    "X-DPP-Cost-Minimum-Fee",
    "X-DPP-Cost-Actual",
    "X-Request-ID",
    "X-Trace-Id",
    "ETag",  # the result envelope's sha256, as is X-DPP-Result-SHA256
    "X-DPP-Result-SHA256",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
    "tracestate",  # echoed back beside X-Trace-Id
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["billing.auth.PlanApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["dpp.http.auth.IsTenant"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["dpp.http.parsers.JSONParser"],
    # An Accept (or ?format=) a view cannot satisfy gets its default renderer, not a 406 (RFC 9110 §12.5.1).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "dpp.http.negotiation.FallbackContentNegotiation",
    "DEFAULT_THROTTLE_CLASSES": [],
    "EXCEPTION_HANDLER": "dpp.http.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
    # The client's address for the anonymous rate limit: REMOTE_ADDR, or the Nth address from the right of
    # X-Forwarded-For behind N proxies that append to it.
    "NUM_PROXIES": env_int("DPP_NUM_PROXIES", 0, minimum=0),
}
# Requests per minute per client address for /v1 answers that no tenant is counted for (no key or a bad one,
# unknown paths, the OpenAPI document).
DPP_ANONYMOUS_RATE_LIMIT = env_int("DPP_ANONYMOUS_RATE_LIMIT", 60, minimum=1)

SPECTACULAR_SETTINGS = {
    "TITLE": "DPP — Decision Pack Platform API",
    "DESCRIPTION": "A paid job API for AI agents. Money is USD as 4-decimal strings; errors are RFC 9457.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Our view bases' docstrings are for developers, not for each operation's description.
    "GET_LIB_DOC_EXCLUDES": "dpp.http.openapi.lib_doc_excludes",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "dpp.http.openapi.document_common_headers",
        "runs.openapi.document_pack_requests",
    ],
    # 3.1: its schemas are JSON Schema 2020-12, the dialect of the packs' input schemas, embedded as they are.
    "OAS_VERSION": "3.1.0",
    "SERVERS": [{"url": "/", "description": "this server (the paths start with /v1)"}],
}

# --- logging: one JSON object per line, with trace_id, tenant_id and run_id where known ---------------
LOG_LEVEL = env_choice("DPP_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "dpp.observability.ContextFilter"}},
    "formatters": {"json": {"()": "dpp.observability.JsonFormatter"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]},
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}

# Error reporting (dpp/sentry.py): off unless SENTRY_DSN is set; never with personal data.
SENTRY_DSN = env_str("SENTRY_DSN")
SENTRY_ENABLED = sentry_init(dsn=SENTRY_DSN, environment=DPP_ENV)
