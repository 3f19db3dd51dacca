from django.apps import AppConfig


class BillingConfig(AppConfig):
    verbose_name = "Billing and ledger"
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"
