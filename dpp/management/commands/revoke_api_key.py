from typing import Any

from dpp.management.base import Arg, DppCommand
from dpp.services import api_key_revoke


class Command(DppCommand):
    """Revoke an API key by its 16-character prefix (as shown in the admin)."""

    arguments = (Arg("key_prefix"),)

    def run(self, **options: Any) -> None:
        api_key = api_key_revoke(key_prefix=options["key_prefix"])
        self.emit(
            {"tenant_id": api_key.tenant_id, "key_prefix": api_key.prefix, "revoked_at": api_key.revoked_at},
            f"revoked {api_key.prefix}… of tenant {api_key.tenant_id}",
        )
