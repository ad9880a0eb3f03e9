"""Operations endpoints: liveness, readiness (database and channel layer) and Prometheus metrics."""

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from biogram import preflight


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        connection.close_if_unusable_or_obsolete()
        return False


def channel_layer_ready() -> bool:
    if not settings.REDIS_SHARED:
        return get_channel_layer() is not None
    return preflight.redis_problem() is None


@require_GET
def readyz(request):
    checks = {"database": database_ready(), "channelLayer": channel_layer_ready()}
    ready = all(checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


@require_GET
def metrics(request):
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
