"""Root URLs: the web pages, the REST API, its schema, the admin and the operations endpoints."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from accounts import views as account_pages
from biogram import apidocs, ops
from messaging import views as pages

urlpatterns = [
    path("", pages.index, name="index"),
    path("biogram-sw.js", pages.service_worker, name="service-worker"),
    path("login/", account_pages.LoginPage.as_view(), name="login"),
    path("register/", account_pages.register, name="register-page"),
    path("logout/", account_pages.LogoutPage.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("accounts.urls")),
    path("api/", include("messaging.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", apidocs.SwaggerDocs.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", apidocs.RedocDocs.as_view(url_name="schema"), name="api-redoc"),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
]

handler404 = "messaging.api.errors.not_found"
