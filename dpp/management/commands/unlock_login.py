from typing import Any

from dpp.admin_login import login_unlock
from dpp.management.base import Arg, DppCommand


class Command(DppCommand):
    """Lift the admin login lock of a user name (and, with --address, of a client address) at once."""

    arguments = (
        Arg("username", help="the user name as typed on the login page"),
        Arg("--address", help="also clear the failures counted against this client address"),
    )

    def run(self, **options: Any) -> None:
        username, address = options["username"], options["address"]
        cleared = login_unlock(username=username, address=address)
        whom = f"{username!r}" + (f" and address {address}" if address else "")
        self.emit(
            {"username": username, "address": address, "failures_cleared": cleared},
            f"unlocked {whom}: {cleared} failed login(s) no longer count",
        )
