"""Settings of Biogram Messaging, all read from the environment (see README)."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from biogram.files import create_once

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BIOGRAM_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    """SECRET_KEY, or one generated once and kept in var/ so tokens survive restarts."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = VAR_DIR / "secret_key"
    key = create_once(path, lambda: secrets.token_urlsafe(50).encode()).decode().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it and a new key is made")
    return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "messaging",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "biogram.middleware.ApiSlashOptional",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "biogram.urls"
ASGI_APPLICATION = "biogram.asgi.application"
WSGI_APPLICATION = None

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

# Database: SQLite in a file unless DATABASE_URL names another.
_sqlite_path = VAR_DIR / "db.sqlite3"
DATABASE_URL_GIVEN = os.environ.get("DATABASE_URL", "")
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{_sqlite_path}",
        # Request threads come and go under ASGI: a persistent connection per thread would
        # pile up (Django's docs say so), so requests connect per request unless told
        # otherwise. The socket path's worker threads keep theirs open (messaging/realtime/batching.py).
        conn_max_age=None if env_bool("DB_PERSISTENT", False) else 0,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # An unreachable database host fails a connection in seconds, not minutes.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DB_CONNECT_TIMEOUT", 5
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE: a writer takes the lock at BEGIN, so two writers never deadlock.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        # A checkpoint every 10,000 pages of log instead of SQLite's 1,000: the pages a batch
        # of messages touches (index leaves, chat rows) are rewritten many times between two
        # checkpoints and copied to the database once per checkpoint; a quarter of the
        # writer's time went to checkpoints (docs/benchmarks.md, 2026-12-04f).
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000;"
        ),
    }
    # Tests run against a file, so that a live server process can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: in memory (one process) unless REDIS_URL (one Redis) or REDIS_CLUSTER_NODES
# (a Redis Cluster: "host:port,host:port,…", any of its nodes) is set.
REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_CLUSTER_NODES = os.environ.get("REDIS_CLUSTER_NODES", "")
# Redis Cluster only: the shard channels the chats' events are spread over (a fixed number;
# every process must use the same). messaging/realtime/redis_cluster.py.
REDIS_CLUSTER_PARTITIONS = env_int("REDIS_CLUSTER_PARTITIONS", 12)
# Several processes share chats through Redis (one or a cluster).
REDIS_SHARED = bool(REDIS_URL or REDIS_CLUSTER_NODES)
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "biogram")
# With Redis: how often each process beats in the presence keys; a process silent for three
# beats is taken for dead, and its users are announced offline (messaging/realtime/presence.py).
PRESENCE_HEARTBEAT_SECONDS = env_float("PRESENCE_HEARTBEAT_SECONDS", 5.0)
# Our own layer (messaging/realtime/layer.py): in-process fan-out, and with Redis one publish
# per chat event for the other processes (docs/benchmarks.md says why).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "messaging.realtime.layer.ChatChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL] if REDIS_URL and not REDIS_CLUSTER_NODES else [],
            "cluster_nodes": REDIS_CLUSTER_NODES,
            "partitions": REDIS_CLUSTER_PARTITIONS,
            "prefix": CHANNEL_LAYER_PREFIX,
        },
    }
}

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # The client package's module, served as /static/biogram-client.js (no build step).
    BASE_DIR / "clients" / "js" / "src",
]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve straight from the app folders: no collectstatic step before `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Messaging limits.
REGISTRATION_OPEN = env_bool("REGISTRATION_OPEN", True)
MESSAGE_MAX_LENGTH = env_int("MESSAGE_MAX_LENGTH", 4000)
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 64 * 1024)
RATE_LIMIT_ENABLED = env_bool("RATE_LIMIT_ENABLED", True)
RATE_LIMIT_BURST = env_int("RATE_LIMIT_BURST", 30)
RATE_LIMIT_PER_SECOND = env_float("RATE_LIMIT_PER_SECOND", 5.0)
RATE_LIMIT_STRIKES = env_int("RATE_LIMIT_STRIKES", 50)
TYPING_TIMEOUT_MS = env_int("TYPING_TIMEOUT_MS", 3000)
TYPING_COALESCE_MS = env_int("TYPING_COALESCE_MS", 1000)
SYNC_MAX_PER_CHAT = env_int("SYNC_MAX_PER_CHAT", 500)
# How long after sending a message its author may edit it, in seconds; 0: no limit.
MESSAGE_EDIT_WINDOW_SECONDS = env_int("MESSAGE_EDIT_WINDOW_SECONDS", 0)
# A member's delivered position is announced at most this often per chat.
DELIVERED_ANNOUNCE_INTERVAL_MS = env_int("DELIVERED_ANNOUNCE_INTERVAL_MS", 1000)
WS_PING_INTERVAL = env_float("WS_PING_INTERVAL", 20.0)
WS_PING_TIMEOUT = env_float("WS_PING_TIMEOUT", 20.0)
# Frames waiting for a socket whose client does not read; past this it is closed (4009).
WS_OUTBOX_LIMIT = env_int("WS_OUTBOX_LIMIT", 1000)
# Messages and changes one socket may have on their way to the database at once; past it the
# server stops reading that socket until one is stored (backpressure on the sender alone).
WS_PIPELINE = env_int("WS_PIPELINE", 64)
# The server process's garbage collector (messaging/realtime/gc_tuning.py): the startup heap
# frozen out of collections, and young collections every GC_THRESHOLDS[0] net allocations.
GC_FREEZE = env_bool("GC_FREEZE", True)
GC_THRESHOLDS = tuple(int(n) for n in env_list("GC_THRESHOLDS", "20000,10,10"))
if len(GC_THRESHOLDS) > 3 or any(n < 0 for n in GC_THRESHOLDS):
    raise ImproperlyConfigured(
        "GC_THRESHOLDS: up to three non-negative integers, as gc.set_threshold"
    )
# Open sockets per user (all processes together, with Redis); the newest past it gets 4029.
WS_MAX_SOCKETS_PER_USER = env_int("WS_MAX_SOCKETS_PER_USER", 20)

# Notifications of new messages (issue 17; messaging/notifier.py). A member is notified of a chat
# NOTIFY_DELAY_MS after the first message they have not received, unless a device of theirs
# marked it delivered or read by then. `manage.py serve` runs the notifier as a child process
# (`manage.py notifier`); each notification goes out once whatever the number of processes.
NOTIFIER_ENABLED = env_bool("NOTIFIER_ENABLED", True)
NOTIFY_DELAY_MS = env_int("NOTIFY_DELAY_MS", 10_000)
NOTIFY_POLL_MS = env_int("NOTIFY_POLL_MS", 1000)
# HTTP requests in flight at once per process (pushes and webhook calls).
NOTIFY_SEND_WORKERS = env_int("NOTIFY_SEND_WORKERS", 8)
# The webhook for mobile apps: one signed POST per notification (README, "Notifications").
NOTIFY_WEBHOOK_URL = os.environ.get("NOTIFY_WEBHOOK_URL", "")
NOTIFY_WEBHOOK_SECRET = os.environ.get("NOTIFY_WEBHOOK_SECRET", "")
# Web Push: the VAPID key (PEM, or the raw private key in base64url); without it one is
# generated once into VAR_DIR/vapid_private_key.pem. Several machines must share one key.
VAPID_PRIVATE_KEY = os.environ.get("VAPID_PRIVATE_KEY", "")
VAPID_SUBJECT = os.environ.get("VAPID_SUBJECT", "mailto:admin@localhost")
# How long a push service keeps a notification for a device that is offline, in seconds.
WEBPUSH_TTL = env_int("WEBPUSH_TTL", 24 * 3600)
# Push endpoints must be https on a public address; 1 lets any http(s) endpoint in (tests).
WEBPUSH_ALLOW_INSECURE = env_bool("WEBPUSH_ALLOW_INSECURE", False)
# Push subscriptions kept per user; a new one past it replaces their oldest.
WEBPUSH_MAX_SUBSCRIPTIONS = env_int("WEBPUSH_MAX_SUBSCRIPTIONS", 20)

# REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # JWT first: its WWW-Authenticate header makes missing credentials a 401.
        "accounts.tokens.LoginJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON for clients; DRF's browsable API for a logged-in person in a browser.
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "messaging.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": (
        [
            "rest_framework.throttling.AnonRateThrottle",
            "rest_framework.throttling.UserRateThrottle",
        ]
        if RATE_LIMIT_ENABLED
        else []
    ),
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("THROTTLE_ANON", "120/min"),
        "user": os.environ.get("THROTTLE_USER", "1200/min"),
    },
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_LIFETIME", 15 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_REFRESH_LIFETIME", 7 * 24 * 3600)),
    "ROTATE_REFRESH_TOKENS": env_bool("JWT_ROTATE_REFRESH", True),
    "BLACKLIST_AFTER_ROTATION": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": False,
    # Tokens carry their login (`sid`), so that logging out ends them (accounts/logins.py).
    "TOKEN_OBTAIN_SERIALIZER": "accounts.tokens.LoginTokenObtainSerializer",
    "TOKEN_REFRESH_SERIALIZER": "accounts.tokens.LoginTokenRefreshSerializer",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Biogram Messaging API",
    "DESCRIPTION": "REST half of the Biogram real-time protocol (docs/protocol.md).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc from this server's static files (drf-spectacular-sidecar), no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Every operation documents the error answers it can give (messaging/api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "messaging.api.schema.document_error_responses",
    ],
}

# Cross-origin access for a frontend served from another host (REST and socket).
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
WS_ALLOWED_ORIGINS = env_list("WS_ALLOWED_ORIGINS", ",".join(CORS_ALLOWED_ORIGINS))
CSRF_TRUSTED_ORIGINS = CORS_ALLOWED_ORIGINS

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_tokens": {"()": "biogram.logging.RedactTokens"},
        "socket_context": {"()": "biogram.logging.SocketContext"},
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s%(socket)s"},
        "json": {"()": "biogram.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["socket_context", "redact_tokens"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # The ASGI server logs each handshake with its query string; the
        # console handler's filter strips the token from every line.
        "uvicorn": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "uvicorn.error": {"level": LOG_LEVEL, "propagate": True},
        "uvicorn.access": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "daphne": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.server": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
