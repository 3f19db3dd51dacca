from django.apps import AppConfig


class ReaperConfig(AppConfig):
    name = "reaper"
    default_auto_field = "django.db.models.BigAutoField"
