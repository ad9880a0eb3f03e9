"""REST errors as `{"detail", "code"}`, with the socket protocol's codes.

Token errors keep SimpleJWT's own codes (`token_not_valid`, `no_active_account`,
`user_inactive`…): refresh interceptors (axios and the like) key on them.
"""

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from messaging.errors import MessagingError, Unavailable

CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _summary(detail) -> str:
    """The first message of a (possibly nested) validation error, prefixed by its field."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            text = _summary(value)
            return text if field == "non_field_errors" else f"{field}: {text}"
    if isinstance(detail, list) and detail:
        return _summary(detail[0])
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, DatabaseError):
        exc = Unavailable("The database is unavailable; nothing was stored.")
    if isinstance(exc, MessagingError):
        body = {"detail": exc.message, "code": exc.code, **exc.extra}
        response = Response(body, status=exc.status)
        if "retryAfterMs" in exc.extra:
            response["Retry-After"] = str(max(1, round(exc.extra["retryAfterMs"] / 1000)))
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = (response.status_code == 401 and _simplejwt_code(exc, context)) or CODES_BY_STATUS.get(
        response.status_code, "error"
    )
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": _summary(exc.detail), "code": code, "errors": exc.detail}
    else:
        detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
        response.data = {"detail": str(detail), "code": code}
        if response.status_code == status.HTTP_429_TOO_MANY_REQUESTS and getattr(exc, "wait", None):
            response.data["retryAfterMs"] = int(exc.wait * 1000)
    return response


def _simplejwt_code(exc, context) -> str | None:
    """SimpleJWT's code of a token error (InvalidToken, AuthenticationFailed of its views)."""
    view = context.get("view") if context else None
    modules = (type(exc).__module__, type(view).__module__)
    if not any(module.startswith("rest_framework_simplejwt") for module in modules):
        return None
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict) and isinstance(detail.get("code"), str):
        return detail["code"]
    codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
    return codes if isinstance(codes, str) else None


def not_found(request, exception=None):
    """Django's 404 view: a path under /api/ that names nothing answers like every REST error."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return page_not_found(request, exception)
