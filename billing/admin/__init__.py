"""The Django admin for finance staff and ops (SPEC §1): tenants and their money, keys, the ledger (read-only).

Registration happens on import of the modules below; runs and reaper register their own admins.
"""

from django.contrib import admin

from billing.admin import ledger, tenants

admin.site.site_header = "DPP administration"
admin.site.site_title = "DPP administration"
admin.site.index_title = "Finance and operations"
admin.site.site_url = None  # no "View site": this host serves an API, whose / is a 404 problem

__all__ = ["ledger", "tenants"]
# The index shows what is stuck or flagged (reaper's alarms panel) above the apps.
admin.site.index_template = "dpp/admin/index.html"
# No navigation sidebar: its 275 px are what a finance list needs to show every money column at 1400 px.
admin.site.enable_nav_sidebar = False
