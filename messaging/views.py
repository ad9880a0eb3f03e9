"""The built-in web chat page; its live part is static/biogram-page.js on static/biogram-client.js."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


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
