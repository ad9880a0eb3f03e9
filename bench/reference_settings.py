"""Minimal Django settings for bench/reference.py: no database, no apps of ours.

REFERENCE_LAYER picks the channel layer: `memory` (default, the tutorial's
InMemoryChannelLayer), `pubsub` (RedisPubSubChannelLayer) or `redis`
(RedisChannelLayer); the Redis ones read REDIS_URL and CHANNEL_LAYER_PREFIX.
"""

import os

SECRET_KEY = "bench-reference-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "bench.reference.application"

_layer = os.environ.get("REFERENCE_LAYER", "memory")
_redis = {
    "hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")],
    "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "biogram-bench-reference"),
}
if _layer == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
elif _layer == "pubsub":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": _redis}
    }
elif _layer == "redis":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": _redis}
    }
else:
    raise ValueError(f"REFERENCE_LAYER must be memory, pubsub or redis, not {_layer!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
