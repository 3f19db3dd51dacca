"""URL map: the /v1 API, health, metrics, problem pages, OpenAPI and docs, the admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from dpp.admin_tools import view_on_site
from dpp.http import health as dpp_views
from dpp.http import problems
from dpp.http.openapi import OpenApiDocumentView
from runs.mcp.views import McpApi

urlpatterns = [
    path("health", dpp_views.health, name="health"),
    path("readyz", dpp_views.readyz, name="readyz"),
    path("metrics", dpp_views.metrics, name="metrics"),
    path("problems/<slug:slug>", problems.problem_page, name="problem-page"),
    path("v1/openapi.json", OpenApiDocumentView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="openapi"), name="redoc"),
    path("v1/", include("billing.urls")),
    path("v1/", include("runs.urls")),
    path("mcp", McpApi.as_view(), name="mcp"),  # SPEC §11: the packs as MCP tools
    path("v1/", include("billing.webhook_urls")),
    # Before the admin's own route of the same shortcut, so that an id with a NUL is a 404 there too.
    path("admin/r/<path:content_type_id>/<path:object_id>/", admin.site.admin_view(view_on_site)),
    path("admin/", admin.site.urls),
]

handler400 = "dpp.http.problems.handler400"
handler403 = "dpp.http.problems.handler403"
handler404 = "dpp.http.problems.handler404"
handler500 = "dpp.http.problems.handler500"
