"""A base for ops commands: `--json` prints one JSON object on stdout; errors exit non-zero."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from dpp.errors import ApplicationError


class DppCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json = bool(options["json"])
        try:
            self.run(**options)
        except ValidationError as exc:
            self.fail("; ".join(exc.messages))
        except ApplicationError as exc:
            self.fail(exc.detail)

    def run(self, **options: Any) -> None:
        raise NotImplementedError

    def emit(self, payload: dict[str, Any], text: str) -> None:
        """The answer: JSON for machines, or a human sentence."""
        self.stdout.write(json.dumps(payload, cls=DjangoJSONEncoder) if self.as_json else text)

    def fail(self, message: str, code: int = 1) -> NoReturn:
        if self.as_json:
            self.stdout.write(json.dumps({"error": message}))
        raise CommandError(message, returncode=code)
