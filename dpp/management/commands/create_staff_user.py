import getpass
from pathlib import Path
from typing import Any

from dpp.management.base import Arg, DppCommand
from dpp.services import STAFF_GROUPS, staff_user_create


class Command(DppCommand):
    """A staff login for the admin (/admin/) in the finance or ops group; the password is prompted for, or read
    from --password-file (its first line)."""

    arguments = (
        Arg("username"),
        Arg("--group", required=True, choices=STAFF_GROUPS),
        Arg("--email", default=""),
        Arg("--password-file", type=Path, help="a file whose first line is the password"),
    )

    def run(self, **options: Any) -> None:
        try:
            password = _password(options["password_file"])
        except (OSError, UnicodeDecodeError) as exc:
            self.fail(f"cannot read --password-file: {exc}")
        if password is None:
            self.fail("the two passwords differ")
        user = staff_user_create(
            username=options["username"], group=options["group"], email=options["email"], password=password
        )
        self.emit(
            {"username": user.username, "group": options["group"], "email": user.email, "is_staff": True},
            f"created staff user {user.username!r} in group {options['group']}: log in at /admin/",
        )


def _password(path: Path | None) -> str | None:
    """The password of --password-file (its first line, without the line end), or typed twice; None if the two
    typed ones differ. Never an argument: it would be in the shell's history and in `ps`."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    first = getpass.getpass("Password: ")
    return first if getpass.getpass("Password (again): ") == first else None
