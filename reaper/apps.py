from django.apps import AppConfig


class ReaperConfig(AppConfig):
    name = "reaper"
    verbose_name = "Reconciliation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dpp.observability import register_db_collector
        from reaper.metrics import ReconciliationCollector

        register_db_collector(ReconciliationCollector())
