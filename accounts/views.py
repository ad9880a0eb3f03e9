"""The account pages of the built-in web chat: log in, register and log out, on the Django session."""

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView, LogoutView
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from accounts import logins

REGISTRATION_CLOSED = "Registration is closed on this server."


class RegisterForm(UserCreationForm):
    """Django's sign-up form (case-insensitive unique username, password validators) for our user model."""

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)


class LoginPage(LoginView):
    """Django's login view; an already logged-in user goes straight to the chat."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(registration_open=settings.REGISTRATION_OPEN, **kwargs)


class LogoutPage(LogoutView):
    """Django's logout view (POST only, with CSRF, then back to the login page), which also ends
    the page's login: its tokens are refused and its sockets, in every tab, are closed."""

    def post(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            logins.end_session_logins(request.user, request.session.session_key)
        return super().post(request, *args, **kwargs)


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@require_http_methods(["GET", "POST"])
def register(request):
    """Create an account (when REGISTRATION_OPEN) and log it in."""
    if not settings.REGISTRATION_OPEN:
        return render(
            request, "accounts/register.html", {"closed": REGISTRATION_CLOSED}, status=403
        )
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = RegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/register.html", {"form": form})
