"""API paths answer with or without their trailing slash: never a redirect that changes the method.

Django's APPEND_SLASH answers `POST /api/chats` with a 301 to `/api/chats/`, which
`fetch` follows as a GET that "succeeds" with the chat list. Under /api/, a path
that resolves once a slash is appended is served as that path instead, whatever
the method; any other path is left to Django (a 404 under /api/ is a JSON 404).
"""

from django.urls import Resolver404, resolve


class ApiSlashOptional:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        if path.startswith("/api/") and not path.endswith("/"):
            try:
                resolve(f"{path}/")
            except Resolver404:
                pass
            else:
                request.path_info = f"{path}/"
                request.path = f"{request.path}/"
        return self.get_response(request)
