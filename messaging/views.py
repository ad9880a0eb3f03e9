"""The built-in web chat page; its live part is static/biogram-page.js on static/biogram-client.js."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

SERVICE_WORKER = settings.BASE_DIR / "static" / "biogram-sw.js"


@login_required
@ensure_csrf_cookie
def index(request):
    """The messages page of the logged-in user: chat list, chat box, composer."""
    boot = {
        "userId": str(request.user.pk),
        "username": request.user.username,
        "messageMaxLength": settings.MESSAGE_MAX_LENGTH,
    }
    return render(request, "messaging/index.html", {"boot": boot})


@require_GET
def service_worker(request):
    """static/biogram-sw.js at the root, so that its scope is the whole site (a script under
    /static/ could only control /static/): it shows pushed notifications and opens their chat."""
    response = HttpResponse(
        SERVICE_WORKER.read_bytes(), content_type="text/javascript; charset=utf-8"
    )
    response["Service-Worker-Allowed"] = "/"
    response["Cache-Control"] = "no-cache"
    return response
