"""URLs of accounts: registration, JWT, the current user, the user directory, the page's token."""

from django.urls import path
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts import api

urlpatterns = [
    path("auth/register/", api.RegisterView.as_view(), name="register"),
    path("auth/token/", TokenObtainPairView.as_view(), name="token"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("auth/logout/", api.LogoutView.as_view(), name="api-logout"),
    path("auth/logout-all/", api.LogoutAllView.as_view(), name="api-logout-all"),
    path("me/", api.MeView.as_view(), name="me"),
    path("users/", api.UserListView.as_view(), name="users"),
    path("session/token/", api.SessionTokenView.as_view(), name="session-token"),
]
