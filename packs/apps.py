"""Django app config for ``packs``; the only Django import of the package."""

from django.apps import AppConfig


class PacksConfig(AppConfig):
    name = "packs"
    verbose_name = "Packs"
