#!/usr/bin/env python
"""Django's command-line utility for DPP."""

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # noqa: B018 - imports config.settings, which reads and checks the environment
    except ImproperlyConfigured as exc:
        # A bad variable is one line naming it, like every ops command's error (operations.md §6), not a traceback.
        if "--json" in sys.argv[2:]:
            sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        sys.stderr.write(f"ImproperlyConfigured: {exc}\n")
        sys.exit(1)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
