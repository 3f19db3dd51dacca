from django.apps import AppConfig


class ReaperConfig(AppConfig):
    name = "reaper"
    verbose_name = "Reconciliation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        from reaper.metrics import ReconciliationCollector

        if not any(isinstance(c, ReconciliationCollector) for c in list(REGISTRY._collector_to_names)):
            REGISTRY.register(ReconciliationCollector())
