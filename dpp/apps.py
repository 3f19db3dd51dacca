from django.apps import AppConfig


class DppConfig(AppConfig):
    verbose_name = "Tenants and API keys"
    name = "dpp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin

        from dpp.admin_login import ThrottledAdminAuthenticationForm
        from dpp.http import openapi  # noqa: F401 - registers the bearer scheme with drf-spectacular

        admin.site.login_form = ThrottledAdminAuthenticationForm
