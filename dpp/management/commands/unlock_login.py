from typing import Any

from django.core.management.base import CommandParser

from dpp.admin_login import login_unlock
from dpp.management.base import DppCommand


class Command(DppCommand):
    help = "Lift the admin login lock of a user name (and, with --address, of a client address) at once."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("username", help="the user name as typed on the login page")
        parser.add_argument("--address", help="also clear the failures counted against this client address")

    def run(self, **options: Any) -> None:
        username, address = options["username"], options["address"]
        cleared = login_unlock(username=username, address=address)
        whom = f"{username!r}" + (f" and address {address}" if address else "")
        self.emit(
            {"username": username, "address": address, "failures_cleared": cleared},
            f"unlocked {whom}: {cleared} failed login(s) no longer count",
        )
