"""The API docs pages (Swagger UI, Redoc), served from this host only.

drf-spectacular-sidecar serves their scripts and styles from our static files;
a Content-Security-Policy keeps the pages to this host, which also stops the
one request Redoc makes on its own (its "API docs by Redocly" logo, from a CDN,
which no setting turns off): the docs work offline and tell no third party.
"""

from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

SAME_HOST_ONLY = (
    "default-src 'self'; img-src 'self' data: blob:; font-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
)


class SameHostOnly:
    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        response["Content-Security-Policy"] = SAME_HOST_ONLY
        return response


class SwaggerDocs(SameHostOnly, SpectacularSwaggerView):
    pass


class RedocDocs(SameHostOnly, SpectacularRedocView):
    pass
